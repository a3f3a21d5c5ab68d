"""Training loops: resumable pretraining, strict weight loading, fine-tune evaluation, safe checkpoints."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from vidssl.engine.checkpoint import Checkpointer, latest_checkpoint, load_state_dict, save_state_dict
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
    assert load_state_dict(latest_checkpoint(tmp_path / "r_state"))["epoch"] == 1
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
    (ck.last).write_bytes(b"not a checkpoint")
    assert Checkpointer(tmp_path, key="abc").load() is None


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, caplog) -> None:
    ck = Checkpointer(tmp_path, key="run")
    paths = [ck.save(e, history=[], w=torch.full((4,), float(e))) for e in (1, 2, 3)]
    kept = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert kept == sorted(p.name for p in paths[1:])  # the last two only
    data = bytearray(paths[2].read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still a readable zip maybe, but not the saved bytes
    paths[2].write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="vidssl.engine.checkpoint"):
        state = Checkpointer(tmp_path, key="run").load()
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.full((4,), 2.0))
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert paths[2].name in msg and paths[1].name in msg and "checksum" in msg
    paths[1].write_bytes(paths[1].read_bytes()[:100])  # truncated too: nothing left to resume
    assert Checkpointer(tmp_path, key="run").load() is None


def test_a_run_with_other_params_keeps_the_other_runs_state(tiny_lists: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(pretrain={"epochs": 1})
    pretrain(cfg, tiny_lists, tmp_path / "state", tmp_path / "out")
    first = latest_checkpoint(tmp_path / "state")
    before = first.read_bytes()
    pretrain(tiny_cfg(pretrain={"epochs": 1, "lr": 0.02}), tiny_lists, tmp_path / "state", tmp_path / "out")
    assert first.read_bytes() == before  # the first run's state is untouched ...
    keys = sorted(d.name for d in (tmp_path / "state").iterdir())
    assert len(keys) == 2 and all(k.startswith("iic-") for k in keys)  # ... beside the second's
    assert keys[0].split("-")[2] == keys[1].split("-")[2]  # same data digest, other params digest
    assert keys[0].split("-")[1] != keys[1].split("-")[1]


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
        return [r.getMessage() for r in caplog.records if "no checkpoint for run" in r.getMessage()]

    write_pack(pack, frames)  # the same bytes, a new file
    assert run_both() == []
    write_pack(pack, frames[::-1])  # same frames and size, other order: what a changed decode looks like
    restarted = run_both()
    assert len(restarted) == 2 and "pre_state" in restarted[0] and "ft_state" in restarted[1]


# ---------------------------------------------------------------- non-finite losses, precision


class _Recorder:
    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append(metrics)


@pytest.mark.slow
def test_a_diverging_pretraining_stops_and_writes_no_metric(tiny_lists: Path, tmp_path: Path, monkeypatch) -> None:
    from vidssl.engine.precision import NonFiniteLoss
    from vidssl.pipeline.stages import run_pretrain

    monkeypatch.chdir(tmp_path)  # the stage's MLflow store goes under tmp_path/mlruns
    # 24 rows over the 6 videos: 12 steps an epoch, enough for raw (unnormalised) IIC features to overflow.
    lines = (tiny_lists / "pretrain.csv").read_text().splitlines()
    rows = [",".join([f"{r.split(',')[0]}_{i}", *r.split(",")[1:]]) for i in range(4) for r in lines[1:]]
    (tiny_lists / "pretrain.csv").write_text("\n".join([lines[0], *rows]) + "\n")
    cfg = tiny_cfg(pretrain={"lr": 1e6, "epochs": 2, "batch_size": 2, "iic": {"nce_k": 4, "normalize": False}})
    metrics = tmp_path / "metrics" / "pretrain.json"
    with pytest.raises(NonFiniteLoss, match=r"pretrain: non-finite (loss|weights) .*epoch \d+, step \d+.*pretrain.lr"):
        run_pretrain(cfg, tiny_lists, tmp_path / "out", tmp_path / "state", metrics, tmp_path / "plots")
    assert not metrics.exists() and not (tmp_path / "out" / "backbone.pt").exists()
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vidssl").experiment_id])
    stage = [r for r in runs if r.data.tags.get("vidssl.stage") == "pretrain"]
    assert len(stage) == 1 and stage[0].data.metrics == {} and stage[0].info.status == "FAILED"


def test_a_diverging_finetune_stops(tiny_lists: Path, tmp_path: Path) -> None:
    from vidssl.engine.precision import NonFiniteLoss

    tracker = _Recorder()
    with pytest.raises(NonFiniteLoss, match=r"finetune: non-finite .*finetune.lr \(now 1e\+06\)"):
        finetune(tiny_cfg(finetune={"lr": 1e6, "epochs": 4, "batch_size": 2}), tiny_lists, None, tmp_path / "s", tmp_path / "o",
                 tracker)
    assert tracker.logged == [] and not (tmp_path / "o" / "classifier.pt").exists()


def test_a_nan_term_names_epoch_step_and_term_and_keeps_the_last_good_checkpoint(
    tiny_lists: Path, tmp_path: Path, monkeypatch
) -> None:
    from vidssl.engine.precision import NonFiniteLoss
    from vidssl.methods.iic import IIC

    real = IIC.training_step
    calls = {"n": 0}

    def poisoned(self, batch, epoch):  # noqa: ANN001, ANN202
        calls["n"] += 1
        loss, terms = real(self, batch, epoch)
        if calls["n"] == 5:  # epoch 2 (3 steps an epoch), its second step
            first = next(k for k in terms if k.startswith("loss_"))
            terms = {**terms, first: float("nan")}
        return loss, terms

    monkeypatch.setattr(IIC, "training_step", poisoned)
    cfg = tiny_cfg(pretrain={"batch_size": 2, "epochs": 3}, train={"checkpoint_minutes": 0})
    tracker = _Recorder()
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 2: loss_\w+=nan"):
        pretrain(cfg, tiny_lists, tmp_path / "state", tmp_path / "out", tracker)
    assert len(tracker.logged) == 1  # epoch 1 only
    kept = latest_checkpoint(tmp_path / "state")
    assert load_state_dict(kept)["epoch"] == 1 and load_state_dict(kept)["step"] == 0


def test_unknown_precision_is_a_config_error() -> None:
    from vidssl.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.precision"):
        tiny_cfg(train={"precision": "fp8"})


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_the_backbone_low_and_the_loss_in_fp32(
    tiny_lists: Path, tmp_path: Path, precision: str
) -> None:
    from vidssl.engine.precision import Precision
    from vidssl.methods.registry import build_method

    cfg = tiny_cfg(pretrain={"epochs": 1}, train={"precision": precision})
    method = build_method("iic", build_model_backbone(cfg), cfg, n_samples=6)
    prec = Precision(precision, torch.device("cpu"))
    prec.apply(method)
    seen: list[torch.dtype] = []
    conv = next(m for m in method.backbone.modules() if isinstance(m, torch.nn.Conv3d))
    conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    feat = method.backbone(torch.rand(2, 3, 8, 32, 32))
    assert seen == [prec.dtype] and feat.dtype == torch.float32  # low inside, fp32 out to heads and logits
    summary = pretrain(cfg, tiny_lists, tmp_path / "state", tmp_path / "out")
    assert summary["precision"] == precision and all(torch.isfinite(torch.tensor(h["loss"]))
                                                     for h in summary["history"])
    state = load_state_dict(latest_checkpoint(tmp_path / "state"))
    if precision == "fp16":  # the gradient scaler's state is checkpointed
        assert state["precision"]["scale"] > 0 and "_growth_tracker" in state["precision"]
    else:
        assert state["precision"] == {}
    assert load_state_dict(tmp_path / "out" / "backbone.pt")["backbone"]["stages.stem.0.weight"].dtype == torch.float32


# ---------------------------------------------------------------- mid-epoch checkpoints, SIGKILL


_KILL_RUN = """
import os, signal, sys, yaml
from pathlib import Path
from vidssl.config import parse_params
from vidssl.engine.train import pretrain
from vidssl.methods.iic import IIC

real, calls = IIC.training_step, {"n": 0}
def killed(self, batch, epoch):
    calls["n"] += 1
    if calls["n"] == int(sys.argv[4]):  # in the middle of a step, as a power cut or the OOM killer would
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, batch, epoch)
IIC.training_step = killed
pretrain(parse_params(yaml.safe_load(Path(sys.argv[1]).read_text())), Path(sys.argv[2]), Path(sys.argv[3]),
         Path(sys.argv[3]) / "out")
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(tiny_lists: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    import yaml

    # 3 steps an epoch; a checkpoint after every step (checkpoint_minutes tiny). Killed during the 5th step
    # (epoch 2, step 2): the newest checkpoint is epoch 2 after 1 step, and the resumed run redoes the rest.
    cfg = tiny_cfg(pretrain={"batch_size": 2, "epochs": 2}, train={"checkpoint_minutes": 1e-6})
    straight = pretrain(cfg, tiny_lists, tmp_path / "s_state", tmp_path / "s_out")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.model_dump()))
    proc = subprocess.run([sys.executable, "-c", _KILL_RUN, str(params), str(tiny_lists), str(tmp_path / "k"), "5"],
                          capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = load_state_dict(latest_checkpoint(tmp_path / "k"))
    assert (state["epoch"], state["step"]) == (1, 1)  # mid-epoch: one epoch done, one step into the next
    resumed = pretrain(cfg, tiny_lists, tmp_path / "k", tmp_path / "k" / "out")
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in straight["history"]],
                                                                    rel=1e-6)
    a = load_state_dict(tmp_path / "s_out" / "backbone.pt")["backbone"]
    b = load_state_dict(tmp_path / "k" / "out" / "backbone.pt")["backbone"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU


_DRAWS = """
import sys, torch
from torch.utils.data import Dataset
from vidssl.engine import ddp

class Draws(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, int(torch.randint(0, 2**30, ()))])

workers, start = int(sys.argv[1]), int(sys.argv[2])
loader = ddp.epoch_loader(Draws(), batch_size=4, workers=workers, seed=3, par=ddp.Parallel(), accumulate=2,
                          start=start)
print([[b.tolist() for b in step] for step in loader])
"""


def test_resumed_epochs_read_the_same_samples_with_any_number_of_workers() -> None:
    """A sample's draws depend on the epoch seed and its position only: the loader can restart anywhere."""
    import ast
    import subprocess
    import sys

    from torch.utils.data import Dataset

    from vidssl.engine import ddp

    class Draws(Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.tensor([i, int(torch.randint(0, 2**30, ()))])

    par = ddp.Parallel()
    whole = [b for b in ddp.epoch_loader(Draws(), batch_size=4, workers=0, seed=3, par=par, accumulate=2)]
    assert len(whole) == 4 and all(len(b) == 2 for b in whole)  # 2 steps of 4, each as 2 micro-batches
    # Worker processes are forked in a fresh interpreter: a fork of the test process inherits whatever
    # threads and handlers earlier tests left behind, which is not what a training process looks like.
    runs = {}
    for workers, start in ((0, 0), (2, 1)):
        out = subprocess.run([sys.executable, "-c", _DRAWS, str(workers), str(start)], capture_output=True,
                             text=True, timeout=300, check=True)
        runs[workers] = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert runs[0] == [[b.tolist() for b in step] for step in whole]  # a fresh process draws the same
    assert runs[2] == runs[0][1:] and len(runs[2]) == 3
    before = torch.get_rng_state()
    list(ddp.epoch_loader(Draws(), batch_size=4, workers=0, seed=3, par=par))
    assert torch.equal(before, torch.get_rng_state())  # in-process reads leave the training RNG alone
    other = [b for b in ddp.epoch_loader(Draws(), batch_size=4, workers=0, seed=4, par=par, accumulate=2)]
    assert not all(torch.equal(x, y) for x, y in zip(whole, other))


# ---------------------------------------------------------------- threads, progress, accumulation


@pytest.mark.parametrize("cpu_max, expected", [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None)])
def test_threads_follow_the_cgroup_quota_and_the_affinity(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    import os

    from vidssl.engine.resources import available_cpus, split_threads

    (tmp_path / "cpu.max").write_text(cpu_max)
    mask = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path) == (mask if expected is None else min(mask, expected))
    assert available_cpus(tmp_path / "absent") == mask
    assert split_threads(2, 2) == (1, 1)  # the trainer keeps a CPU of its own
    assert split_threads(8, 2) == (6, 2) and split_threads(1, 4) == (1, 0) and split_threads(4, 0) == (4, 0)


def test_plain_progress_lines_off_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    from vidssl.progress import Progress

    bar = Progress(10, "pretrain epoch 1 of 2", initial=2, tty=False, every=0.0)
    with caplog.at_level("INFO", logger="vidssl.progress"):
        for _ in range(3):
            bar.update(1, loss=1.5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[-1].startswith("pretrain epoch 1 of 2 5/10 (50%)") and "ETA" in lines[-1]
    assert "loss=1.5" in lines[-1]


def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch(tmp_path: Path) -> None:
    """Two micro-batches of 4 with the loss halved = one batch of 8, for a loss that is a mean over samples."""
    from vidssl.engine.precision import Precision
    from vidssl.engine.train import EpochTally, Loop

    torch.manual_seed(0)
    x, y = torch.randn(16, 5), torch.randn(16, 1)

    def run(accumulate: int, micro: int) -> torch.Tensor:
        torch.manual_seed(1)
        net = torch.nn.Linear(5, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        batches = [(x[i : i + micro], y[i : i + micro]) for i in range(0, 16, micro)]

        def step(b, epoch):  # noqa: ANN001, ANN202
            loss = torch.nn.functional.mse_loss(net(b[0]), b[1])
            return loss, {"loss": loss.item()}, len(b[0])

        Loop(where="t", epochs=2, ckpt=Checkpointer(tmp_path / f"{accumulate}-{micro}", "k"), modules={"net": net},
             net=net, opt=opt, precision=Precision("fp32", torch.device("cpu")),
             loader=lambda epoch, start: batches[start:], steps=lambda epoch: len(batches), step=step,
             end_epoch=lambda epoch, tally: {"loss": tally.sums["loss"] / tally.counts["loss"]},
             accumulate=accumulate).run()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    whole = run(1, 8)
    assert torch.allclose(whole, run(2, 4), atol=1e-6) and torch.allclose(whole, run(4, 2), atol=1e-6)
    assert not torch.allclose(whole, run(1, 4), atol=1e-3)  # a step per micro-batch is another training
    assert EpochTally().telemetry(1.0, 1)["data_wait"] == 0.0


def test_data_wait_tells_the_loaders_start_from_the_steady_wait(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock the loader and the step advance by known amounts: the first batch waits 3 s (workers
    starting), the next three 0.5 s each, every step takes 1 s."""
    from vidssl.engine import train
    from vidssl.engine.precision import Precision
    from vidssl.engine.train import Loop

    clock = [0.0]
    monkeypatch.setattr(train.time, "perf_counter", lambda: clock[0])
    net = torch.nn.Linear(2, 1)

    def loader(epoch: int, start: int):  # noqa: ANN202
        for i in range(start, 4):
            clock[0] += 3.0 if i == start else 0.5
            yield torch.ones(2, 2)

    def step(b, epoch):  # noqa: ANN001, ANN202
        clock[0] += 1.0
        loss = net(b).mean()
        return loss, {"loss": loss.item()}, len(b)

    history = Loop(where="t", epochs=2, ckpt=Checkpointer(tmp_path / "c", "k"), modules={"net": net}, net=net,
                   opt=torch.optim.SGD(net.parameters(), lr=0.1), precision=Precision("fp32", torch.device("cpu")),
                   loader=loader, steps=lambda epoch: 4, step=step,
                   end_epoch=lambda epoch, tally: {}).run()
    for epoch in history:  # every epoch starts its loader again, so each has its own start
        assert epoch["data_wait"] == pytest.approx(4.5 / 8.5)
        assert epoch["data_wait_steady"] == pytest.approx(1.5 / 5.5)
        assert epoch["loader_start_seconds"] == pytest.approx(3.0)


# ---------------------------------------------------------------- train.compile


@pytest.mark.slow
def test_compiled_backbone_trains_like_the_eager_one(tiny_lists: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(pretrain={"epochs": 1})
    eager = pretrain(cfg, tiny_lists, tmp_path / "e_state", tmp_path / "e_out")
    compiled = pretrain(tiny_cfg(pretrain={"epochs": 1}, train={"compile": True}), tiny_lists, tmp_path / "c_state",
                        tmp_path / "c_out")
    assert compiled["history"][0]["loss"] == pytest.approx(eager["history"][0]["loss"], rel=1e-3)
    a = load_state_dict(tmp_path / "e_out" / "backbone.pt")["backbone"]
    b = load_state_dict(tmp_path / "c_out" / "backbone.pt")["backbone"]
    assert a.keys() == b.keys()  # compiling in place keeps the state-dict keys
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_a_compile_failure_is_named_in_one_line(tiny_lists: Path, tmp_path: Path, monkeypatch) -> None:
    from torch._dynamo.exc import TorchRuntimeError

    def broken(self, **kw):  # noqa: ANN001, ANN003, ANN202
        def fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise TorchRuntimeError("no compiler here\nand a long trace after it")
        self._compiled_call_impl = fail  # what nn.Module.compile installs, failing as a compiler would

    monkeypatch.setattr(torch.nn.Module, "compile", broken)
    with pytest.raises(RuntimeError, match=r"^train.compile: torch.compile failed \(TorchRuntimeError: no compiler "
                                           r"here\); set train.compile: false$"):
        pretrain(tiny_cfg(pretrain={"epochs": 1}, train={"compile": True}), tiny_lists, tmp_path / "s", tmp_path / "o")
