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


@pytest.mark.parametrize("protocol", ["dualvar", "be", "mlfo"])
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


class _Recorder(torch.nn.Module):
    """A backbone stand-in that keeps what it was fed."""

    out_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1, 3)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.lin(x.mean(dim=(1, 2, 3, 4))[:, None])


def test_iic_fine_tunes_and_tests_on_the_unscaled_frame_residual() -> None:
    """IIC's ft_classify.py (--modality res) feeds x - roll(x, 1) over time, not rescaled to [0, 1]; the other
    protocols feed the clip itself."""
    from vidssl.engine.train import Classifier

    x = torch.zeros(1, 3, 4, 2, 2)
    for t, v in enumerate((0.1, 0.4, 0.2, 0.9)):
        x[:, :, t] = v
    proto = get_protocol("iic")
    net = Classifier(_Recorder(), 2, dropout=proto.dropout, normalise=proto.normalise, residual=proto.residual)
    net.train()(x)
    net.eval()(x)
    want = torch.tensor([0.1 - 0.9, 0.4 - 0.1, 0.2 - 0.4, 0.9 - 0.2])  # the first frame minus the last (wraps)
    for seen in net.backbone.seen:  # training and testing alike
        torch.testing.assert_close(seen[0, 0, :, 0, 0], want)
    for name in ("plain", "dualvar", "mlfo"):
        p = get_protocol(name)
        other = Classifier(_Recorder(), 2, residual=p.residual)
        other(x)
        assert torch.equal(other.backbone.seen[0], x), name


def test_be_fine_tuning_rotates_and_jitters_each_clip_once() -> None:
    """BE's ft_augmentation_config: rotation up to 10 degrees, random crop and ColorJitter(.5, .5, .25, .5) on every
    clip; one draw per clip, so a clip of identical frames stays identical frame to frame."""
    proto = get_protocol("be")
    assert (proto.rotate, proto.jitter, proto.jitter_p) == (10.0, (0.5, 0.5, 0.25, 0.5), 1.0)
    still = torch.randint(0, 256, (16, 3, 1, 12, 16), dtype=torch.uint8).expand(16, 3, 4, 12, 16).contiguous()
    out = DeviceAugment(8, proto, seed=5)(still)
    assert out.shape == (16, 3, 4, 8, 8)
    assert torch.equal(out[:, :, :1].expand_as(out), out)  # the same rotation, crop and colour on every frame
    for x, y in zip(still, out):  # no output is a plain crop of its clip: every clip was recoloured or rotated
        windows = x.float().div(255).unfold(2, 8, 1).unfold(3, 8, 1)
        assert not (windows == y[:, :, None, None]).flatten(-2).all(-1).all(0).all(0).any()


def test_ten_crops_are_the_centre_and_four_corners_then_their_mirror_images() -> None:
    from vidssl.engine.protocols import ten_crops

    x = torch.arange(16.0).view(1, 1, 1, 4, 4)
    crops = ten_crops(x, 2)[:, 0, 0]
    want = [[[5, 6], [9, 10]], [[0, 1], [4, 5]], [[2, 3], [6, 7]], [[8, 9], [12, 13]], [[10, 11], [14, 15]]]
    assert crops.shape == (10, 2, 2)
    assert crops[:5].tolist() == want and crops[5:].tolist() == [[r[::-1] for r in c] for c in want]


def test_mlfo_tests_as_coclr_every_half_overlapping_window_in_ten_crops(tiny_lists: Path) -> None:
    """CoCLR's test sampler starts windows frames * stride // 2 - 1 apart over the whole video, each in ten crops;
    the video's softmax outputs are averaged over all of them."""
    proto = get_protocol("mlfo")
    assert (proto.test, proto.dense_step, proto.dense_max, proto.crops, proto.average) == ("dense", 0, 0, 10, "softmax")
    rec = read_list(tiny_lists / "test.csv")[:1]  # 24 frames
    spec = ClipSpec(frames=8, stride=1, resize=40, crop=32)
    clips, _, _ = DenseClipDataset(rec, spec, step=proto.dense_step, crops=proto.crops)[0]
    assert clips.shape == (60, 3, 8, 32, 32)  # starts 0, 3, 6, 9, 12, 15 (8 // 2 - 1 = 3 apart), x 10 crops
    centre = DenseClipDataset(rec, spec, step=3)[0][0]
    assert torch.equal(clips[:6], centre)  # the first six: each window's centre crop
    assert torch.equal(clips[30:36], centre.flip(-1))  # and their mirror images
    with pytest.raises(ValueError, match="crops"):
        DenseClipDataset(rec, spec, step=3, crops=5)


class _Counting(torch.nn.Module):
    """Logits from each clip's mean intensity; remembers how many clips each call saw."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([4.0, -4.0]))
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return (x.mean(dim=(1, 2, 3, 4)) - 0.3)[:, None] * self.w


def test_the_test_result_does_not_depend_on_how_many_clips_pass_at_once(tiny_lists: Path) -> None:
    ds = DenseClipDataset(read_list(tiny_lists / "test.csv"), ClipSpec(frames=8, stride=1, resize=40, crop=32),
                          step=0, crops=10)
    whole, parts = _Counting(), _Counting()
    a = evaluate_videos(whole, ds, batch_size=1, workers=0, average="softmax", clips_per_pass=1000)
    b = evaluate_videos(parts, ds, batch_size=1, workers=0, average="softmax", clips_per_pass=7)
    assert whole.calls == [60] * 4 and max(parts.calls) == 7 and sum(parts.calls) == 240  # every clip, in parts
    assert a == b


def _held_out(tiny_lists: Path) -> Path:
    """tiny_lists with its first train video moved to val.csv (still in pretrain.csv, the whole split)."""
    lines = (tiny_lists / "train.csv").read_text().splitlines()
    (tiny_lists / "val.csv").write_text("\n".join(lines[:2]) + "\n")
    (tiny_lists / "train.csv").write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    return tiny_lists


@pytest.mark.parametrize("protocol, lists", [("dualvar", ["pretrain.csv", "test.csv"]),
                                             ("iic", ["train.csv", "val.csv", "test.csv"])])
def test_only_a_protocol_that_validates_holds_the_validation_videos_out(
        protocol: str, lists: list, tiny_lists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vidssl.engine.train as train

    read: list[str] = []
    real = train.read_list

    def recording(path: Path, *a: object, **k: object):
        read.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(train, "read_list", recording)
    r = finetune(_cfg(protocol, epochs=1), _held_out(tiny_lists), None, tmp_path / "s", tmp_path / "o")
    assert read == lists and len(r["pred"]) == 4
