"""Batched device augmentation: the per-clip path's values on the same parameters, its distributions on
fresh draws, and repeatable draws from an explicit generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidssl.data.augment import AugmentSpec, apply_clip_params, draw_clip_params
from vidssl.data.batch_augment import (
    NO_GRAY, BatchParams, apply_batch, augment_views, draw_batch, from_clip_params, resize_weights,
)
from vidssl.methods.mlfo import mlfo_augment_spec

SPECS = {
    "crop": AugmentSpec(crop=24),
    "crop_flip": AugmentSpec(crop=24, flip=True),
    "full": AugmentSpec(crop=24, scale=(0.3, 1.0), flip=True, jitter=(0.5, 0.5, 0.25, 0.5), jitter_p=0.8,
                        grayscale_p=0.3, blur_p=0.5, rotate=10.0),
    "be": AugmentSpec(crop=24, jitter=(0.5, 0.5, 0.25, 0.5), jitter_p=1.0, rotate=10.0),
    "dualvar": AugmentSpec(crop=24, jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, blur_p=0.5),
    "simclr": AugmentSpec(crop=24, scale=(0.2, 1.0), flip=True, jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8,
                          grayscale_p=0.2, blur_p=0.5),
    "mlfo": mlfo_augment_spec(24),
    "mlfo_clip": mlfo_augment_spec(24, per_frame_colour=False),
    "upscale": AugmentSpec(crop=36, scale=(0.1, 0.3), flip=True),  # windows smaller than the output
}


def clips(n: int, t: int = 6, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, t, h, w), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_batched_path_matches_the_per_clip_path_on_the_same_parameters(name: str) -> None:
    spec, x = SPECS[name], clips(6)
    rng = np.random.default_rng(3)
    per_clip = [draw_clip_params(spec, 32, 40, 6, rng) for _ in range(6)]
    want = torch.stack([apply_clip_params(c, spec, p, quantize=False) for c, p in zip(x, per_clip)])
    got = apply_batch(x, spec, from_clip_params(per_clip, spec, 6))
    assert got.shape == want.shape == (6, 3, 6, spec.crop, spec.crop) and got.dtype == torch.float32
    assert (got - want).abs().max() < 2e-5, name
    # float input in [0, 1] gives the same as uint8 input
    assert torch.allclose(apply_batch(x.float() / 255, spec, from_clip_params(per_clip, spec, 6)), got, atol=1e-6)


def test_per_frame_colour_matches_on_large_frames_too() -> None:
    # the per-clip path goes frame by frame above 48×48 px; the batched path never does
    spec = mlfo_augment_spec(56)
    x = clips(3, t=4, h=64, w=72)
    rng = np.random.default_rng(0)
    per_clip = [draw_clip_params(spec, 64, 72, 4, rng) for _ in range(3)]
    want = torch.stack([apply_clip_params(c, spec, p, quantize=False) for c, p in zip(x, per_clip)])
    assert (apply_batch(x, spec, from_clip_params(per_clip, spec, 4)) - want).abs().max() < 2e-5


@pytest.mark.parametrize("size, out, start, length", [(40, 24, 3, 30), (40, 24, 0, 40), (40, 36, 5, 12),
                                                      (32, 24, 8, 24), (171, 112, 20, 150)])
def test_resize_rows_are_interpolates_antialiased_bilinear(size: int, out: int, start: int, length: int) -> None:
    x = torch.rand(2, size, dtype=torch.float64)
    wts = resize_weights(size, out, torch.tensor([start]), torch.tensor([length]))[0]
    window = x[:, start : start + length]
    ref = F.interpolate(window.view(1, 2, 1, length), size=(1, out), mode="bilinear", align_corners=False,
                        antialias=True).view(2, out)
    assert torch.allclose(x @ wts.T, ref, atol=1e-6)
    assert torch.allclose(wts.sum(dim=1), torch.ones(out, dtype=torch.float64))


# ---------------------------------------------------------------- distributions


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def _summaries(p: BatchParams, h: int, w: int) -> dict[str, np.ndarray]:
    top, left, ch, cw = (v.double().numpy() for v in p.box.unbind(1))
    out = {
        "area": ch * cw / (h * w), "log_aspect": np.log(cw / ch),
        "top": top / np.maximum(h - ch, 1), "left": left / np.maximum(w - cw, 1),
        "flip": p.flip.double().numpy(), "jitter": p.jitter.double().numpy().ravel(),
        "gray": (p.gray != NO_GRAY).double().numpy().ravel(),
        "blur": np.isfinite(p.sigma.numpy()).astype(float),
    }
    if p.angle is not None:
        out["angle"] = p.angle.numpy()
    on = p.jitter.numpy()
    for op in range(4):
        out[f"factor{op}"] = p.factors[..., op].numpy()[on]
    if p.order.shape[2]:
        for op in range(4):
            out[f"first{op}"] = (p.order[..., 0] == op).double().numpy()[on]
    greyed = p.gray[p.gray != NO_GRAY].numpy()
    for c in (-1, 0, 1, 2):
        out[f"gray{c}"] = (greyed == c).astype(float)
    out["sigma"] = p.sigma.numpy()[np.isfinite(p.sigma.numpy())]
    return out


@pytest.mark.parametrize("name", ["full", "simclr", "mlfo", "be", "dualvar"])
def test_parameter_distributions_match_the_per_clip_path(name: str) -> None:
    spec, n, t, h, w = SPECS[name], 3000, 4, 48, 64
    rng = np.random.default_rng(11)
    ref = _summaries(from_clip_params([draw_clip_params(spec, h, w, t, rng) for _ in range(n)], spec, t), h, w)
    got = _summaries(draw_batch(spec, n, h, w, t, torch.Generator().manual_seed(11)), h, w)
    assert ref.keys() == got.keys()
    for key in ref:
        a, b = ref[key], got[key]
        if len(a) == 0 or len(b) == 0:
            assert len(a) == len(b) == 0, key
            continue
        if np.unique(np.concatenate([a, b])).size <= 2:  # a rate: within 5 standard errors
            se = np.sqrt(max(a.mean() * (1 - a.mean()), 1e-4) * (1 / len(a) + 1 / len(b)))
            assert abs(a.mean() - b.mean()) < 5 * se, (key, a.mean(), b.mean())
        else:  # a continuous (or many-valued) parameter: two-sample KS at about α = 0.001
            crit = 1.95 * np.sqrt((len(a) + len(b)) / (len(a) * len(b)))
            assert _ks(a, b) < crit, (key, _ks(a, b), crit)


def test_draws_repeat_for_a_generator_state_and_differ_between_clips() -> None:
    spec = SPECS["full"]
    a = draw_batch(spec, 8, 32, 40, 6, torch.Generator().manual_seed(5))
    b = draw_batch(spec, 8, 32, 40, 6, torch.Generator().manual_seed(5))
    assert all(torch.equal(getattr(a, f), getattr(b, f), ) if f != "sigma" else
               torch.equal(a.sigma.nan_to_num(-1), b.sigma.nan_to_num(-1)) for f in
               ("angle", "box", "flip", "jitter", "order", "factors", "gray", "sigma"))
    assert len({tuple(r) for r in a.box.tolist()}) > 1


def test_still_clips_stay_still_unless_colour_is_per_frame() -> None:
    still = clips(4, t=1).expand(-1, -1, 6, -1, -1).contiguous()
    g = torch.Generator().manual_seed(0)
    for name in ("full", "be", "mlfo_clip"):
        out = augment_views([still], SPECS[name], g)[0]
        assert torch.equal(out, out[:, :, :1].expand_as(out)), name
    out = augment_views([still], SPECS["mlfo"], g)[0]
    assert not torch.equal(out, out[:, :, :1].expand_as(out))


def test_plain_switches_colour_and_blur_off_for_masked_clips() -> None:
    spec = SPECS["dualvar"]
    p = draw_batch(spec, 6, 32, 40, 6, torch.Generator().manual_seed(1))
    mask = torch.tensor([True, False, True, False, True, False])
    x = clips(6)
    out = apply_batch(x, spec, p.plain(mask))
    crop_only = apply_batch(x, AugmentSpec(crop=24), p)
    assert torch.equal(out[mask], crop_only[mask])
    assert torch.equal(out[~mask], apply_batch(x, spec, p)[~mask])


def test_several_views_in_one_pass_equal_one_at_a_time() -> None:
    spec, a, b = SPECS["simclr"], clips(3, seed=1), clips(3, seed=2)
    both = augment_views([a, b], spec, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    pa, pb = draw_batch(spec, 3, 32, 40, 6, g), draw_batch(spec, 3, 32, 40, 6, g)
    assert torch.allclose(both[0], apply_batch(a, spec, pa)) and torch.allclose(both[1], apply_batch(b, spec, pb))


def test_bad_shapes_are_named() -> None:
    p = draw_batch(SPECS["crop"], 2, 32, 40, 6, torch.Generator())
    with pytest.raises(ValueError, match="N×3×T×H×W"):
        apply_batch(clips(3), SPECS["crop"], p)
    with pytest.raises(ValueError, match="smaller than the crop 48"):
        draw_batch(AugmentSpec(crop=48), 2, 32, 40, 6, torch.Generator())


def test_collate_cuts_clips_of_other_sizes_to_the_smallest_centred() -> None:
    from torch.utils.data import default_collate

    from vidssl.data.clips import collate_clips

    same = [(clips(1, seed=s)[0], s, s) for s in range(3)]
    got, want = collate_clips(same), default_collate(same)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    wide = clips(1, w=56, seed=9)[0]
    batch = collate_clips([same[0], (wide, 7, 7)])
    assert batch[0].shape == (2, 3, 6, 32, 40) and batch[1].tolist() == [0, 7]
    assert torch.equal(batch[0][0], same[0][0]) and torch.equal(batch[0][1], wide[..., 8:48])
