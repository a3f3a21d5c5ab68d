"""Training loops: resumable pretraining, strict weight loading, fine-tune evaluation, safe checkpoints."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from vidssl.engine.checkpoint import Checkpointer, load_state_dict, save_state_dict
from vidssl.config import Params, parse_params
from vidssl.engine.train import Classifier, build_model_backbone, finetune, load_backbone, pretrain


def tiny_cfg(**over: dict) -> Params:
    raw = {
        "seed": 7,
        "model": {"backbone": "tiny", "width": 4},
        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
        "pretrain": {"epochs": 2, "batch_size": 4, "workers": 0, "lr": 0.01, "iic": {"nce_k": 4}},
        "finetune": {"epochs": 1, "batch_size": 4, "workers": 0, "test_clips": 2},
    }
    for section, values in over.items():
        raw.setdefault(section, {}).update(values)
    return parse_params(raw)


class _StopAt:
    """A tracker that interrupts training (as Ctrl-C would) when epoch ``epoch`` (0-based) reports."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if step == self.epoch:
            raise KeyboardInterrupt


# IIC draws bank noise from its own generator (saved with the method); with no loader workers the clips are
# drawn in-process from torch's global RNG (saved with the checkpoint). Loader workers seed from the epoch, so
# that path repeated on resume already. (No workers here: in a process that has run a Prefect flow, as the
# test session has by now, a forked loader worker exits with code 1.)
@pytest.mark.parametrize("method, workers", [("iic", 0), ("simclr", 0)])
def test_resumed_pretraining_equals_an_uninterrupted_run(
    tiny_lists: Path, tmp_path: Path, method: str, workers: int
) -> None:
    cfg = tiny_cfg(pretrain={"method": method, "epochs": 3, "workers": workers})
    straight = pretrain(cfg, tiny_lists, tmp_path / "s_state", tmp_path / "s_out")
    # Interrupted during epoch 2 (before its checkpoint), then the same command again: it picks up there.
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, tiny_lists, tmp_path / "r_state", tmp_path / "r_out", tracker=_StopAt(1))
    assert load_state_dict(tmp_path / "r_state" / "last.pt")["epoch"] == 1
    assert not (tmp_path / "r_out" / "backbone.pt").exists()
    resumed = pretrain(cfg, tiny_lists, tmp_path / "r_state", tmp_path / "r_out")
    assert resumed["epochs"] == 3
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in straight["history"]])
    a = load_state_dict(tmp_path / "s_out" / "backbone.pt")["backbone"]
    b = load_state_dict(tmp_path / "r_out" / "backbone.pt")["backbone"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in straight["history"])


def test_checkpoints_resume_only_for_the_same_settings(tmp_path: Path) -> None:
    ck = Checkpointer(tmp_path, key="abc")
    ck.save(3, history=[], w=torch.ones(2))
    assert Checkpointer(tmp_path, key="abc").load()["epoch"] == 3
    assert Checkpointer(tmp_path, key="other").load() is None
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    assert Checkpointer(tmp_path, key="abc").load() is None


def test_same_state_saves_the_same_bytes(tmp_path: Path) -> None:
    """DVC hashes backbone.pt and fine-tuning keys on it: the same weights must give the same file."""
    state = {"backbone": {"w": torch.arange(6.0).view(2, 3)}, "name": "tiny"}
    save_state_dict(tmp_path / "a" / "backbone.pt", state)
    save_state_dict(tmp_path / "b" / "backbone.pt", state)
    assert (tmp_path / "a/backbone.pt").read_bytes() == (tmp_path / "b/backbone.pt").read_bytes()
    assert torch.equal(load_state_dict(tmp_path / "b/backbone.pt")["backbone"]["w"], state["backbone"]["w"])


def test_checkpoints_refuse_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"backbone": Evil()}))
    with pytest.raises(Exception):
        load_state_dict(path)


def test_finetune_loads_pretrained_weights_strictly(tiny_lists: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg()
    pretrain(cfg, tiny_lists, tmp_path / "state", tmp_path / "pre")
    weights = tmp_path / "pre" / "backbone.pt"
    model = Classifier(build_model_backbone(cfg), 2)
    load_backbone(model.backbone, weights)
    saved = load_state_dict(weights)["backbone"]
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in saved.items())
    # A backbone of another shape must fail loudly (IIC's strict=False silently kept random weights).
    other = Classifier(build_model_backbone(tiny_cfg(model={"width": 8})), 2)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_backbone(other.backbone, weights)
    result = finetune(cfg, tiny_lists, weights, tmp_path / "ft_state", tmp_path / "ft")
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert len(result["pred"]) == len(result["true"]) == 4
    assert (tmp_path / "ft" / "classifier.pt").is_file()


def test_too_few_videos_for_a_batch_is_a_clear_error(tiny_lists: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pretrain.batch_size"):
        pretrain(tiny_cfg(pretrain={"batch_size": 64}), tiny_lists, tmp_path / "s", tmp_path / "o")


def test_other_frames_behind_the_same_list_start_training_again(
    tiny_lists: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Re-extracted frames (same list files, same frame counts) must not resume a finished run on the old ones;
    the same bytes written again (a DVC checkout, a copy) must."""
    import zipfile

    from vidssl.data.clips import read_list
    from vidssl.data.store import write_pack

    cfg = tiny_cfg(pretrain={"epochs": 1})
    pretrain(cfg, tiny_lists, tmp_path / "pre_state", tmp_path / "pre")
    finetune(cfg, tiny_lists, None, tmp_path / "ft_state", tmp_path / "ft")
    pack = Path(read_list(tiny_lists / "train.csv")[0].frames_path)
    with zipfile.ZipFile(pack) as zf:
        frames = [zf.read(n) for n in sorted(zf.namelist())]

    def run_both() -> list[str]:
        caplog.clear()
        with caplog.at_level("INFO", logger="vidssl.engine.checkpoint"):
            pretrain(cfg, tiny_lists, tmp_path / "pre_state", tmp_path / "pre")
            finetune(cfg, tiny_lists, None, tmp_path / "ft_state", tmp_path / "ft")
        return [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]

    write_pack(pack, frames)  # the same bytes, a new file
    assert run_both() == []
    write_pack(pack, frames[::-1])  # same frames and size, other order: what a changed decode looks like
    restarted = run_both()
    assert len(restarted) == 2 and "pre_state" in restarted[0] and "ft_state" in restarted[1]
