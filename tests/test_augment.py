"""Clip-consistent augmentation: parameters drawn once per clip, exact colour/geometry maths, determinism."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from vidssl.data.augment import AugmentSpec, _crop_box, _hue_shift, _rotate, augment_clip, center_view

FULL = AugmentSpec(
    crop=24,
    scale=(0.3, 1.0),
    flip=True,
    jitter=(0.5, 0.5, 0.25, 0.5),
    jitter_p=1.0,
    grayscale_p=0.0,
    blur_p=1.0,
    rotate=10.0,
)


def rand_clip(t: int = 6, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, t, h, w), generator=g, dtype=torch.uint8)


def static_clip(t: int = 6, h: int = 32, w: int = 40) -> torch.Tensor:
    return rand_clip(1, h, w).expand(-1, t, -1, -1).contiguous()


@pytest.mark.parametrize(
    "spec",
    [
        AugmentSpec(crop=24),
        FULL,
        AugmentSpec(crop=20, scale=(0.08, 1.0), grayscale_p=1.0),
        AugmentSpec(crop=32),
    ],
)
def test_shape_dtype_and_determinism(spec: AugmentSpec) -> None:
    clip = rand_clip()
    a = augment_clip(clip, spec, np.random.default_rng(7))
    b = augment_clip(clip, spec, np.random.default_rng(7))
    assert a.shape == (3, 6, spec.crop, spec.crop) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    outs = {augment_clip(clip, spec, np.random.default_rng(s)).numpy().tobytes() for s in range(6)}
    assert len(outs) > 1  # different seeds give different crops


@pytest.mark.parametrize("spec", [FULL, AugmentSpec(crop=24, grayscale_p=0.5, jitter=(0.8, 0.8, 0.8, 0.2))])
def test_parameters_drawn_once_per_clip(spec: AugmentSpec) -> None:
    # A clip of identical frames stays identical over time: crop, flip, angle, jitter, blur are shared by frames.
    for seed in range(5):
        out = augment_clip(static_clip(), spec, np.random.default_rng(seed))
        assert torch.equal(out, out[:, :1].expand_as(out))


def test_per_frame_color_differs_between_frames() -> None:
    spec = AugmentSpec(crop=24, jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=1.0, per_frame_color=True)
    out = augment_clip(static_clip(), spec, np.random.default_rng(0))
    assert not torch.equal(out[:, 0], out[:, 1])
    # ...while the crop is still shared: grayscale per frame keeps the geometry of every frame identical.
    gray = augment_clip(
        static_clip(), AugmentSpec(crop=24, grayscale_p=1.0, per_frame_color=True), np.random.default_rng(0)
    )
    assert torch.equal(gray, gray[:, :1].expand_as(gray))


def test_plain_crop_is_a_window_of_the_input() -> None:
    clip = rand_clip()
    out = augment_clip(clip, AugmentSpec(crop=24), np.random.default_rng(3))
    hits = [
        (i, j)
        for i in range(32 - 24 + 1)
        for j in range(40 - 24 + 1)
        if torch.equal(out, clip[..., i : i + 24, j : j + 24])
    ]
    assert len(hits) == 1


def test_flip_mirrors_and_happens_about_half_the_time() -> None:
    clip = rand_clip(h=32, w=32)
    flipped = 0
    for seed in range(40):
        out = augment_clip(clip, AugmentSpec(crop=32, flip=True), np.random.default_rng(seed))
        if torch.equal(out, clip.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(out, clip)
    assert 8 <= flipped <= 32


def test_grayscale_makes_channels_equal_with_luma_weights() -> None:
    clip = rand_clip(h=24, w=24)
    out = augment_clip(clip, AugmentSpec(crop=24, grayscale_p=1.0), np.random.default_rng(0))
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    ref = (0.299 * clip[0].double() + 0.587 * clip[1].double() + 0.114 * clip[2].double()).round()
    assert (out[0].double() - ref).abs().max() <= 1


def test_zero_rotation_and_no_jitter_are_identity() -> None:
    clip = rand_clip(h=24, w=24)
    for spec in (
        AugmentSpec(crop=24),
        AugmentSpec(crop=24, rotate=0.0, jitter=None),
        AugmentSpec(crop=24, jitter=(0.0, 0.0, 0.0, 0.0), jitter_p=1.0),
    ):
        assert torch.equal(augment_clip(clip, spec, np.random.default_rng(1)), clip)


def test_brightness_scales_every_pixel_by_one_factor() -> None:
    clip = torch.full((3, 4, 16, 16), 100, dtype=torch.uint8)
    spec = AugmentSpec(crop=16, jitter=(0.5, 0, 0, 0), jitter_p=1.0)
    values = set()
    for seed in range(8):
        out = augment_clip(clip, spec, np.random.default_rng(seed))
        assert torch.all(out == out.flatten()[0])  # one factor for every pixel of every frame
        values.add(int(out.flatten()[0]))
    assert all(50 <= v <= 150 for v in values) and len(values) > 4


def test_hue_shift_matches_colorsys() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 5, 5, generator=g, dtype=torch.float64)
    out = _hue_shift(x, 0.2)
    for idx in [(0, 0, 0), (1, 3, 4), (0, 2, 1), (1, 4, 0)]:
        h, s, v = colorsys.rgb_to_hsv(*[float(x[(c,) + idx]) for c in range(3)])
        ref = colorsys.hsv_to_rgb((h + 0.2) % 1.0, s, v)
        assert np.allclose([float(out[(c,) + idx]) for c in range(3)], ref, atol=1e-9)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1, 1)
    assert torch.allclose(_hue_shift(red, 1 / 3).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_rotation_by_90_degrees_is_rot90() -> None:
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    out = _rotate(x, 90.0)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-9) or torch.allclose(
        out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-9
    )


def test_random_resized_crop_area_and_ratio_in_range() -> None:
    spec = AugmentSpec(crop=16, scale=(0.2, 0.6), ratio=(3 / 4, 4 / 3))
    h, w = 64, 80
    for seed in range(200):
        top, left, ch, cw = _crop_box(h, w, spec, np.random.default_rng(seed))
        assert 0 <= top <= h - ch and 0 <= left <= w - cw
        area = ch * cw / (h * w)
        # round() of each side moves the area by at most about one row/column.
        assert 0.2 - (ch + cw) / (h * w) <= area <= 0.6 + (ch + cw + 1) / (h * w)
        assert 3 / 4 - 0.1 <= cw / ch <= 4 / 3 + 0.1


def test_blur_keeps_constant_frames_and_smooths_noise() -> None:
    const = torch.full((3, 2, 20, 20), 77, dtype=torch.uint8)
    spec = AugmentSpec(crop=20, blur_p=1.0)
    assert torch.equal(augment_clip(const, spec, np.random.default_rng(0)), const)
    noisy = rand_clip(2, 20, 20)
    assert augment_clip(noisy, spec, np.random.default_rng(0)).float().std() < noisy.float().std()


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="uint8 3×T×H×W"):
        augment_clip(torch.zeros(6, 3, 32, 32), AugmentSpec(crop=24), np.random.default_rng(0))
    with pytest.raises(ValueError, match="smaller than the crop 48"):
        augment_clip(rand_clip(), AugmentSpec(crop=48), np.random.default_rng(0))
    with pytest.raises(ValueError, match="jitter"):
        AugmentSpec(crop=8, jitter=(0.5, 0.5, 0.5, 0.9))
    with pytest.raises(ValueError, match="scale"):
        AugmentSpec(crop=8, scale=(0.5, 0.2))


def test_center_view() -> None:
    clip = rand_clip()
    assert torch.equal(center_view(clip, 24), clip[..., 4:28, 8:32])
    with pytest.raises(ValueError, match="smaller than the centre crop"):
        center_view(clip, 33)


def _is_one_input_channel(out: torch.Tensor, clip: torch.Tensor) -> int | None:
    """Which input channel every output channel copies (±1 for the float round trip), or None."""
    for c in range(3):
        if all((out[k].int() - clip[c].int()).abs().max() <= 1 for k in range(3)):
            return c
    return None


def test_channel_gray_copies_one_random_channel() -> None:
    # MLFO's RandomGray copies one RGB channel, drawn at random, into all three (no luma mix).
    clip = rand_clip(h=24, w=24)
    picked = set()
    for seed in range(12):
        out = augment_clip(clip, AugmentSpec(crop=24, grayscale_p=1.0, gray="channel"), np.random.default_rng(seed))
        c = _is_one_input_channel(out, clip)
        assert c is not None
        picked.add(c)
    assert picked == {0, 1, 2}


def test_gray_first_then_jitter_order() -> None:
    # A hue shift leaves a grey image unchanged, so grey-then-hue returns an input channel exactly, while
    # hue-then-grey (the default order) reads a channel of the hue-shifted colours.
    clip = rand_clip(h=24, w=24)
    first = AugmentSpec(crop=24, jitter=(0, 0, 0, 0.5), jitter_p=1.0, grayscale_p=1.0, gray="channel", gray_first=True)
    after = AugmentSpec(crop=24, jitter=(0, 0, 0, 0.5), jitter_p=1.0, grayscale_p=1.0, gray="channel")
    for seed in range(6):
        assert _is_one_input_channel(augment_clip(clip, first, np.random.default_rng(seed)), clip) is not None
    assert any(
        _is_one_input_channel(augment_clip(clip, after, np.random.default_rng(s)), clip) is None for s in range(6)
    )


def test_gray_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="AugmentSpec.gray"):
        AugmentSpec(crop=24, gray="average")  # type: ignore[arg-type]


def test_mlfo_augmentation_greys_frames_one_by_one() -> None:
    # MLFO draws grayscale per frame (p 0.5): in a 16-frame clip some frames come out grey, some in colour.
    from vidssl.methods.mlfo import mlfo_augment_spec

    clip = static_clip(t=16)
    out = augment_clip(clip, mlfo_augment_spec(24), np.random.default_rng(0))
    grey = [bool(torch.equal(out[0, i], out[1, i]) and torch.equal(out[1, i], out[2, i])) for i in range(16)]
    assert 0 < sum(grey) < 16


def test_mlfo_augmentation_with_colour_per_clip_keeps_a_still_clip_still() -> None:
    from vidssl.methods.mlfo import mlfo_augment_spec

    spec = mlfo_augment_spec(24, per_frame_colour=False)
    for seed in range(8):
        out = augment_clip(static_clip(t=16), spec, np.random.default_rng(seed))
        assert all(torch.equal(out[:, i], out[:, 0]) for i in range(16))


def _reference_colour(x: torch.Tensor, spec: AugmentSpec, rng: np.random.Generator) -> torch.Tensor:
    """Colour the plain way, torchvision's ColorJitter + RandomGrayscale on one (sub-)clip with Python-float
    factors: the reference the batched per-frame path must match bit for bit."""
    from vidssl.data.augment import _gray, _hue_shift

    def grey(y: torch.Tensor) -> torch.Tensor:
        if spec.grayscale_p > 0 and rng.random() < spec.grayscale_p:
            one = _gray(y) if spec.gray == "luma" else y[int(rng.integers(0, 3))].unsqueeze(0)
            y = one.expand(3, -1, -1, -1).clone()
        return y

    if spec.gray_first:
        x = grey(x)
    if spec.jitter is not None and rng.random() < spec.jitter_p:
        b, c, s, h = spec.jitter
        ops = []
        if b > 0:
            fb = rng.uniform(max(0.0, 1 - b), 1 + b)
            ops.append(lambda y: (y * fb).clamp(0, 1))
        if c > 0:
            fc = rng.uniform(max(0.0, 1 - c), 1 + c)
            ops.append(lambda y: (fc * y + (1.0 - fc) * _gray(y).mean(dim=(2, 3), keepdim=True)).clamp(0, 1))
        if s > 0:
            fs = rng.uniform(max(0.0, 1 - s), 1 + s)
            ops.append(lambda y: (fs * y + (1.0 - fs) * _gray(y)).clamp(0, 1))
        if h > 0:
            fh = rng.uniform(-h, h)
            ops.append(lambda y: _hue_shift(y, fh))
        for k in rng.permutation(len(ops)):
            x = ops[k](x)
    if not spec.gray_first:
        x = grey(x)
    return x


SPECS_COLOUR = [
    AugmentSpec(crop=24, jitter=(0.5, 0.5, 0.5, 0.25), jitter_p=1.0, grayscale_p=0.5, gray="channel",
                gray_first=True, per_frame_color=True),  # MLFO's
    AugmentSpec(crop=24, jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.6, grayscale_p=0.3, per_frame_color=True),
    AugmentSpec(crop=24, jitter=(0.0, 0.4, 0.0, 0.1), jitter_p=0.8, per_frame_color=True),
    AugmentSpec(crop=24, grayscale_p=1.0, gray="channel", per_frame_color=True),
    AugmentSpec(crop=24, jitter=(0.8, 0.8, 0.8, 0.2), jitter_p=0.8, grayscale_p=0.2),  # one draw per clip
]


@pytest.mark.parametrize("side", [24, 56])  # small frames are batched, larger ones go frame by frame
@pytest.mark.parametrize("spec", SPECS_COLOUR)
def test_colour_matches_the_plain_reference_bit_for_bit(spec: AugmentSpec, side: int) -> None:
    from vidssl.data.augment import _SMALL_FRAME, _colour

    assert (side * side <= _SMALL_FRAME) is (side == 24)
    g = torch.Generator().manual_seed(1)
    for seed in range(8):
        x = torch.rand(3, 16, side, side, generator=g)
        before = x.clone()
        ref_rng, rng = np.random.default_rng(seed), np.random.default_rng(seed)
        if spec.per_frame_color:
            ref = torch.cat([_reference_colour(x[:, i : i + 1], spec, ref_rng) for i in range(16)], dim=1)
        else:
            ref = _reference_colour(x, spec, ref_rng)
        out = _colour(x, spec, rng, per_frame=spec.per_frame_color)
        assert torch.equal(out, ref)  # the same float32 arithmetic, frames batched
        assert rng.random() == ref_rng.random()  # the same number of draws, so later draws are unchanged
        assert torch.equal(x, before)  # the input is not modified in place
