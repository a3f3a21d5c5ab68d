"""Fine-tune protocols: schedules, model selection, test views, averaging, normalisation, non-finite output."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vidssl.config import parse_params
from vidssl.data.clips import ClipSpec, read_list
from vidssl.engine.protocols import (
    PROTOCOLS, DenseClipDataset, DeviceAugment, Normalise, build_scheduler, check_logits, dense_starts, get_protocol, video_scores,
)
from vidssl.engine.train import evaluate_videos, finetune


def _cfg(protocol: str, **finetune_over: object):
    return parse_params({
        "seed": 7, "model": {"backbone": "tiny", "width": 4},
        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
        "finetune": {"protocol": protocol, "epochs": 3, "batch_size": 4, "workers": 0, "test_clips": 2,
                     **finetune_over},
    })


def test_milestones_scale_with_the_epochs() -> None:
    assert PROTOCOLS["be"].milestone_epochs(45) == [10, 20, 25, 30, 35, 40]
    assert PROTOCOLS["dualvar"].milestone_epochs(100) == [30, 60, 80]
    assert PROTOCOLS["dualvar"].milestone_epochs(150) == [45, 90, 120]
    assert PROTOCOLS["be"].milestone_epochs(4) == [1, 2, 3, 4]  # rounded, kept rising, never 0
    assert PROTOCOLS["mlfo"].milestone_epochs(500) == [400, 450]  # CoCLR's fine-tuning run
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    sched = build_scheduler(PROTOCOLS["be"], opt, 45)
    lrs = []
    for _ in range(45):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[9] == 1.0 and lrs[10] == pytest.approx(0.3) and lrs[44] == pytest.approx(0.3**6)


def test_softmax_and_logit_averaging_can_disagree() -> None:
    # One confident clip for class 0 and two moderate ones for class 1: the mean logit says 0 (2 vs 1.33),
    # the mean softmax says 1 (0.41 vs 0.59).
    logits = torch.tensor([[6.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    assert video_scores(logits, "logits").argmax() == 0
    soft = video_scores(logits, "softmax")
    assert soft.argmax() == 1 and soft.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(video_scores(logits, "logits").numpy(), [2.0, 4 / 3])


def test_dense_windows_cover_the_video_every_step(tiny_lists: Path) -> None:
    assert dense_starts(100, 64, 10) == [0, 10, 20, 30]
    assert dense_starts(64, 64, 10) == [0]
    assert dense_starts(20, 64, 10) == [0]  # a short video: one (looped) window
    rec = read_list(tiny_lists / "test.csv")[:1]  # 24 frames
    spec = ClipSpec(frames=8, stride=1, resize=40, crop=32)
    clips, _, _ = DenseClipDataset(rec, spec, step=5)[0]
    assert clips.shape == (4, 3, 8, 32, 32)  # starts 0, 5, 10, 15 (16 + 8 > 24 stops there)
    assert DenseClipDataset(rec, spec, step=5, max_windows=2)[0][0].shape[0] == 2


def test_imagenet_normalisation_values() -> None:
    x = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1).expand(1, 3, 2, 2, 2)
    assert torch.allclose(Normalise()(x), torch.zeros(1, 3, 2, 2, 2), atol=1e-6)
    y = Normalise()(torch.ones(1, 3, 1, 1, 1)).flatten()
    np.testing.assert_allclose(y.numpy(), [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225],
                               rtol=1e-6)


def test_unknown_protocol_names_the_key() -> None:
    with pytest.raises(ValueError, match="finetune.protocol"):
        get_protocol("nope")


class _NaNModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 2), float("nan")) * self.w


def test_non_finite_classifier_output_stops_the_evaluation(tiny_lists: Path) -> None:
    from vidssl.data.clips import MultiClipDataset

    check_logits(torch.zeros(2, 3), "x")
    ds = MultiClipDataset(read_list(tiny_lists / "test.csv"), ClipSpec(frames=8, stride=1, resize=40, crop=32), 2)
    with pytest.raises(ValueError, match="fine-tune test: the classifier output holds NaN or Inf"):
        evaluate_videos(_NaNModel(), ds, batch_size=2, workers=0)


def _with_val(tiny_lists: Path) -> Path:
    """tiny_lists with its first train video also listed as the one validation video."""
    lines = (tiny_lists / "train.csv").read_text().splitlines()
    (tiny_lists / "val.csv").write_text("\n".join(lines[:2]) + "\n")
    return tiny_lists


def test_iic_protocol_needs_a_validation_list(tiny_lists: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lists.val_videos"):
        finetune(_cfg("iic"), tiny_lists, None, tmp_path / "s", tmp_path / "o")


def test_iic_protocol_tests_the_best_validation_epoch(tiny_lists: Path, tmp_path: Path) -> None:
    lists = _with_val(tiny_lists)
    r = finetune(_cfg("iic", lr=0.05), lists, None, tmp_path / "s", tmp_path / "o")
    losses = [h["val_loss"] for h in r["history"]]
    assert r["selected_epoch"] == int(np.argmin(losses)) + 1 and r["protocol"] == "iic"
    best = torch.load(next((tmp_path / "s").glob("*/best.pt")), weights_only=True)  # in its run key's folder
    saved = torch.load(tmp_path / "o" / "classifier.pt", weights_only=True)["model"]
    assert all(torch.equal(best["model"][k], saved[k]) for k in saved)  # the tested weights are the best epoch's
    # Resumed after the run: the same selection, not a new one.
    again = finetune(_cfg("iic", lr=0.05), lists, None, tmp_path / "s", tmp_path / "o2")
    assert again["selected_epoch"] == r["selected_epoch"] and again["test_accuracy"] == r["test_accuracy"]


@pytest.mark.parametrize("protocol", ["dualvar", "be"])
def test_seed_protocols_train_and_test(protocol: str, tiny_lists: Path, tmp_path: Path) -> None:
    r = finetune(_cfg(protocol, epochs=1), tiny_lists, None, tmp_path / "s", tmp_path / "o")
    assert r["protocol"] == protocol and 0.0 <= r["test_accuracy"] <= 1.0 and len(r["pred"]) == 4
    assert "val_loss" not in r["history"][0]


def test_device_augmentation_follows_the_protocol_and_resumes_its_draws() -> None:
    """plain: an exact crop of the uint8 clip, never flipped or recoloured; dualvar: most clips recoloured;
    the generator's state rides in the module's state dict."""
    clips = torch.randint(0, 256, (64, 3, 4, 12, 16), dtype=torch.uint8)
    plain = DeviceAugment(8, get_protocol("plain"), seed=7)
    out = plain(clips)
    assert out.shape == (64, 3, 4, 8, 8) and out.dtype == torch.float32
    for x, y in zip(clips, out):  # each output is one 8x8 window of its clip, values exact
        windows = x.float().div(255).unfold(2, 8, 1).unfold(3, 8, 1)  # 3×T×5×9×8×8
        hits = (windows == y[:, :, None, None]).flatten(-2).all(-1).all(0).all(0)
        assert hits.sum() >= 1
    dual = DeviceAugment(8, get_protocol("dualvar"), seed=7)
    dual_state = dual.state_dict()
    first = dual(clips)
    flat = torch.stack([x.float().div(255) for x in clips])
    exact = [(any((flat[i].unfold(2, 8, 1).unfold(3, 8, 1) == first[i][:, :, None, None]).flatten(-2).all(-1)
                  .all(0).all(0).flatten())) for i in range(64)]
    assert sum(exact) < 32  # jitter (p 0.8) changes most clips' values
    again = DeviceAugment(8, get_protocol("dualvar"), seed=0)
    again.load_state_dict(dual_state)
    assert torch.equal(again(clips), first)  # a resumed run draws the same
    assert not torch.equal(dual(clips), first)  # and the draws move on


def test_mlfo_fine_tuning_crops_a_random_area_and_resizes_it() -> None:
    """CoCLR's random sized crop: windows of 20-100 % of the area, resized to the crop side (so values are
    interpolated, unlike plain's exact windows), drawn once per clip: every frame of a clip gets one window."""
    ramp = torch.arange(32, dtype=torch.float32).view(1, 1, 1, 1, 32).expand(8, 3, 4, 32, 32)
    out = DeviceAugment(16, get_protocol("mlfo"), seed=3)(ramp / 255.0)
    assert out.shape == (8, 3, 4, 16, 16)
    widths = (out[..., -1] - out[..., 0]).abs().amax(dim=(1, 2, 3)) * 255.0  # each window's span of the ramp
    assert (widths > 2).all() and (widths < 32).all() and widths.std() > 0.5  # windows of other widths
    assert torch.equal(out[:, :, :1].expand_as(out), out)  # the same window on every frame
