"""Clip-consistent spatial augmentation on uint8 3×T×H×W clips.

Every random parameter (crop box, flip, rotation angle, jitter factors and their order, grayscale, blur σ) is
drawn ONCE per clip from an explicit ``numpy.random.Generator`` and applied to every frame, so motion between
frames survives augmentation. IIC's released code lost exactly this on newer torchvision (each frame got its
own crop, METHODS.md §2(g)); MLFO jitters colour per frame, which ``per_frame_color`` reproduces.

Colour operations follow torchvision's definitions (brightness scales, contrast and saturation blend with the
grey mean / grey image, hue shifts H in HSV), written here on float tensors so no global RNG is involved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentSpec:
    """What to apply to a clip; every field's randomness is drawn once per clip (colour: per frame if asked)."""

    crop: int  # output side
    scale: tuple[float, float] | None = None  # RandomResizedCrop area range (None = plain random crop)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = False  # horizontal flip, p=0.5
    jitter: tuple[float, float, float, float] | None = None  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.0
    blur_p: float = 0.0  # gaussian blur, sigma ~ U(0.1, 2)
    rotate: float = 0.0  # max degrees (BE: 10)
    per_frame_color: bool = False  # MLFO: jitter/grayscale drawn per frame
    # "luma": torchvision's grey; "channel": one RGB channel, drawn at random, copied to all three (MLFO's
    # RandomGray, which its code calls "channel splitting, not strictly grayscale")
    gray: Literal["luma", "channel"] = "luma"
    gray_first: bool = False  # MLFO (DPC's transform order): grayscale before colour jitter

    def __post_init__(self) -> None:
        if self.crop < 1:
            raise ValueError(f"AugmentSpec.crop must be a positive side length, got {self.crop}")
        if self.scale is not None and not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"AugmentSpec.scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"AugmentSpec.ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        for name in ("jitter_p", "grayscale_p", "blur_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"AugmentSpec.{name} must be a probability in [0, 1], got {getattr(self, name)}"
                )
        if self.jitter is not None and (
            len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5
        ):
            raise ValueError(
                f"AugmentSpec.jitter must be 4 non-negative (brightness, contrast, saturation, hue<=0.5), "
                f"got {self.jitter}"
            )
        if self.gray not in ("luma", "channel"):
            raise ValueError(f"AugmentSpec.gray must be 'luma' or 'channel', got {self.gray!r}")
        if self.rotate < 0:
            raise ValueError(
                f"AugmentSpec.rotate is a maximum angle in degrees and must be >= 0, got {self.rotate}"
            )


# ---------------------------------------------------------------- geometry


def _crop_box(h: int, w: int, spec: AugmentSpec, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the crop window, torchvision's RandomResizedCrop rule when ``scale`` is set."""
    if spec.scale is None:
        if h < spec.crop or w < spec.crop:
            raise ValueError(
                f"clip frames are {h}×{w}, smaller than the crop {spec.crop}; resize the clip first "
                "(clip.resize >= clip.crop) or set AugmentSpec.scale for a resized crop"
            )
        return (
            int(rng.integers(0, h - spec.crop + 1)),
            int(rng.integers(0, w - spec.crop + 1)),
            spec.crop,
            spec.crop,
        )
    area = h * w
    log_ratio = (math.log(spec.ratio[0]), math.log(spec.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*spec.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
    # Fallback (as torchvision): the whole frame, cut to the nearest allowed aspect ratio, centred.
    aspect = w / h
    if aspect < spec.ratio[0]:
        cw, ch = w, round(w / spec.ratio[0])
    elif aspect > spec.ratio[1]:
        ch, cw = h, round(h * spec.ratio[1])
    else:
        ch, cw = h, w
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate every frame of a float 3×T×H×W clip by ``degrees`` about the centre; corners fill with 0."""
    c, t, h, w = x.shape
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    # Normalised coordinates scale differently along H and W, so the rotation is conjugated by the aspect.
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=x.dtype).unsqueeze(0)
    grid = F.affine_grid(theta, [1, c * t, h, w], align_corners=False)
    return F.grid_sample(x.reshape(1, c * t, h, w), grid, mode="bilinear", align_corners=False).view(
        c, t, h, w
    )


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# ---------------------------------------------------------------- colour (float in [0, 1], 3×T×H×W)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (_LUMA[0] * x[0] + _LUMA[1] * x[1] + _LUMA[2] * x[2]).unsqueeze(0)


def _blend(a: torch.Tensor, b: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    """factor·a + (1 − factor)·b per frame, clamped; both weights computed in float64, then cast (as a Python
    float scalar would be), so a per-frame call and a batched one give the same bits."""
    f = torch.from_numpy(factors).float().view(-1, 1, 1)
    return (f * a + torch.from_numpy(1.0 - factors).float().view(-1, 1, 1) * b).clamp_(0.0, 1.0)


def _hue_shift(x: torch.Tensor, shift: float | torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Add ``shift`` (in turns) to the HSV hue, as torchvision's adjust_hue; RGB along ``dim``."""
    r, g, b = x.unbind(dim)
    maxc, minc = x.amax(dim=dim), x.amin(dim=dim)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.long() % 6
    v = maxc
    p, q, tt = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # sector i of the hue circle picks (r, g, b) from (v, q, p, t) as torchvision's table does: one gather per
    # channel from the four candidates instead of a select per sector and channel
    cand = torch.stack([v, q, p, tt])
    pick = torch.tensor([[0, 1, 2, 2, 3, 0], [3, 0, 0, 1, 2, 2], [2, 2, 3, 0, 0, 1]], device=x.device)
    return torch.stack([cand.gather(0, pick[ch][i].unsqueeze(0))[0] for ch in range(3)], dim=dim)


@dataclass(frozen=True)
class _ColourDraw:
    """The colour draws of a clip, or of one frame for per-frame colour.

    ``gray``: the channel copied to all three (-1 luma, None no grey); ``jitter``: (op, factor) pairs in the
    order applied (ops 0 brightness, 1 contrast, 2 saturation, 3 hue), None when the jitter was not drawn."""

    gray: int | None
    jitter: tuple[tuple[int, float], ...] | None


def _draw_colour(spec: AugmentSpec, rng: np.random.Generator) -> _ColourDraw:
    """Grayscale and jitter draws, in torchvision's order (ColorJitter: factors b, c, s, h, then a random op
    order), grayscale before the jitter if ``spec.gray_first``; no pixels touched."""
    gray: int | None = None

    def draw_gray() -> int | None:
        if spec.grayscale_p > 0 and rng.random() < spec.grayscale_p:
            return -1 if spec.gray == "luma" else int(rng.integers(0, 3))
        return None

    if spec.gray_first:
        gray = draw_gray()
    jitter = None
    if spec.jitter is not None and rng.random() < spec.jitter_p:
        bri, con, sat, hue = spec.jitter
        drawn: list[tuple[int, float]] = []
        ranges = [(max(0.0, 1 - bri), 1 + bri), (max(0.0, 1 - con), 1 + con), (max(0.0, 1 - sat), 1 + sat),
                  (-hue, hue)]
        for op, (lo, hi) in enumerate(ranges):
            if spec.jitter[op] > 0:
                drawn.append((op, float(rng.uniform(lo, hi))))
        jitter = tuple(drawn[k] for k in rng.permutation(len(drawn)))
    if not spec.gray_first:
        gray = draw_gray()
    return _ColourDraw(gray, jitter)


def _gray_frames(x: torch.Tensor, draws: list[_ColourDraw]) -> torch.Tensor:
    """Grey the frames whose draw says so (luma, or one RGB channel copied to all three)."""
    greyed = [t for t, d in enumerate(draws) if d.gray is not None]
    if not greyed:
        return x
    x = x.clone()
    luma = _gray(x[:, greyed])
    for k, t in enumerate(greyed):
        c = draws[t].gray
        x[:, t] = luma[0, k] if c == -1 else x[c, t].clone()  # clone: source and target share memory
    return x


# Up to this many pixels a frame, a colour op costs its call more than its arithmetic, so per-frame colour is
# batched over frames; above it the batching's extra passes and copies cost more than the calls they save
# (bench/bench_augment.py: about 2x at the demo's 28 px, 0.8-0.9x at 112 px).
_SMALL_FRAME = 48 * 48


def _colour_op(op: int, y: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    """Brightness (0), contrast (1), saturation (2) or hue (3) on 3×T×H×W frames, one factor per frame.

    A factor of exactly 1 leaves a frame in [0, 1] bit for bit as it was for ops 0-2 (1·y + 0·grey, the clamp
    inside the range), which lets one call pass the frames doing something else through; not for hue, whose
    HSV round trip is not exact at shift 0."""
    if op == 1:  # each frame's own grey mean, as torchvision applied frame by frame
        return _blend(y, _gray(y).mean(dim=(2, 3), keepdim=True), factors)
    if op == 2:
        return _blend(y, _gray(y), factors)
    f = torch.from_numpy(factors).float().view(-1, 1, 1)
    return (y * f).clamp_(0.0, 1.0) if op == 0 else _hue_shift(y, f)


def _colour(
    x: torch.Tensor, spec: AugmentSpec, rng: np.random.Generator, *, per_frame: bool = False
) -> torch.Tensor:
    """Colour jitter and grayscale on a float 3×T×H×W clip: one draw for the clip, or one per frame (MLFO)."""
    t = x.shape[1]
    draws = [_draw_colour(spec, rng) for _ in range(t)] if per_frame else [_draw_colour(spec, rng)]
    return _apply_colour(x, spec, draws)


def _apply_colour(x: torch.Tensor, spec: AugmentSpec, draws: list[_ColourDraw]) -> torch.Tensor:
    """Apply colour draws (one for the clip, or one per frame) to a float 3×T×H×W clip.

    Per-frame draws on small frames are applied batched: at each position of the (per-frame random) op
    order, brightness, contrast and saturation run once over the clip with factor 1 for the frames doing
    something else there, and the hue shift on its frames only, so a clip costs at most 16 op calls, not 4 per
    frame, with the same float32 arithmetic as frame by frame (tests/test_augment.py). Larger frames go frame
    by frame.
    """
    t = x.shape[1]
    if len(draws) == 1:
        draws = draws * t
    elif x.shape[2] * x.shape[3] > _SMALL_FRAME:
        return torch.cat([_apply_colour(x[:, i : i + 1], spec, [d]) for i, d in enumerate(draws)], dim=1)
    owned = False  # whether x is already a tensor made here, which may be written in place
    if spec.gray_first:
        x, owned = _gray_frames(x, draws), any(d.gray is not None for d in draws)
    orders = [d.jitter or () for d in draws]
    for pos in range(max(len(o) for o in orders)):
        at = [o[pos] if pos < len(o) else None for o in orders]
        for op in range(4):
            frames = [k for k, a in enumerate(at) if a is not None and a[0] == op]
            if not frames:
                continue
            # Factors go float64 -> float32, as a Python float multiplying a float32 tensor does.
            f64 = np.array([at[k][1] for k in frames])  # type: ignore[index]
            if len(frames) == t:
                x = _colour_op(op, x, f64)
            elif op < 3:  # factor 1 passes the other frames through, cheaper than gathering tiny frames
                full = np.ones(t)
                full[frames] = f64
                x = _colour_op(op, x, full)
            else:
                x = x if owned else x.clone()  # never write into the caller's tensor
                x[:, frames] = _colour_op(op, x[:, frames], f64)
            owned = True
    if not spec.gray_first:
        x = _gray_frames(x, draws)
    return x


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every frame, radius ceil(3σ) (kept inside the frame), reflect padding."""
    _, t, h, w = x.shape
    radius = max(1, min(math.ceil(3 * sigma), (min(h, w) - 1) // 2))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    y = x.reshape(3 * t, 1, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return y.view(3, t, h, w)


# ---------------------------------------------------------------- public API


@dataclass(frozen=True)
class ClipParams:
    """Every random number one clip's augmentation uses, drawn before any pixel is touched.

    ``angle``: rotation in degrees (None: no rotation); ``box``: crop window (top, left, height, width) in the
    (rotated) frame; ``flip``: horizontal flip; ``colour``: one draw for the clip, or one per frame, or none
    when the spec has no colour op; ``sigma``: blur σ (None: no blur)."""

    angle: float | None
    box: tuple[int, int, int, int]
    flip: bool
    colour: tuple[_ColourDraw, ...]
    sigma: float | None


def draw_clip_params(spec: AugmentSpec, h: int, w: int, t: int, rng: np.random.Generator) -> ClipParams:
    """Draw one clip's parameters for ``h``×``w`` frames, ``t`` of them, in the order :func:`augment_clip`
    always drew them (angle, crop box, flip, blur or not, colour, σ)."""
    angle = float(rng.uniform(-spec.rotate, spec.rotate)) if spec.rotate > 0 else None
    box = _crop_box(h, w, spec, rng)
    flip = bool(spec.flip and rng.random() < 0.5)
    blur = spec.blur_p > 0 and rng.random() < spec.blur_p
    colour: tuple[_ColourDraw, ...] = ()
    if spec.jitter is not None or spec.grayscale_p > 0:
        colour = tuple(_draw_colour(spec, rng) for _ in range(t if spec.per_frame_color else 1))
    sigma = float(rng.uniform(0.1, 2.0)) if blur else None
    return ClipParams(angle, box, flip, colour, sigma)


def apply_clip_params(clip: torch.Tensor, spec: AugmentSpec, p: ClipParams, *, quantize: bool = True
                      ) -> torch.Tensor:
    """Apply drawn parameters to one 3×T×H×W clip (uint8, or float in [0, 1]).

    Returns a uint8 3×T×crop×crop clip, or with ``quantize=False`` the float result before rounding to uint8.
    """
    x = clip
    if p.angle is not None:
        x = _rotate(x if x.is_floating_point() else x.float() / 255.0, p.angle)
    top, left, ch, cw = p.box
    x = x[..., top : top + ch, left : left + cw]
    if p.flip:
        x = x.flip(-1)
    resize = (ch, cw) != (spec.crop, spec.crop)
    if quantize and not (p.colour or p.sigma is not None or resize or x.is_floating_point()):
        return x.contiguous()  # pure crop/flip: no float round trip
    x = x if x.is_floating_point() else x.float() / 255.0
    x = _resize(x, spec.crop)
    if p.colour:
        x = _apply_colour(x, spec, list(p.colour))
    if p.sigma is not None:
        x = _blur(x, p.sigma)
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8) if quantize else x


def augment_clip(clip: torch.Tensor, spec: AugmentSpec, rng: np.random.Generator) -> torch.Tensor:
    """Augment one clip with parameters drawn once (colour per frame if ``spec.per_frame_color``).

    The per-clip path (the reference the batched device path, ``vidssl.data.batch_augment``, is tested
    against). Order: rotation (BE rotates the full frame), crop (random or random-resized), horizontal flip,
    colour jitter and grayscale (grayscale first if ``spec.gray_first``), Gaussian blur.

    Args:
        clip: 3×T×H×W uint8 clip (already resized so its short side is at least ``spec.crop``).
        spec: what to apply.
        rng: the only source of randomness; the same generator state gives the same output.

    Returns:
        3×T×crop×crop uint8 clip.

    Raises:
        ValueError: if the clip is not 3×T×H×W uint8, or smaller than the crop without ``spec.scale``.
    """
    if clip.dim() != 4 or clip.shape[0] != 3 or clip.dtype != torch.uint8:
        raise ValueError(
            f"augment_clip expects a uint8 3×T×H×W clip, got {clip.dtype} of shape {tuple(clip.shape)}; "
            "use vidssl.data.clips.to_tensor on T×H×W×3 frames"
        )
    params = draw_clip_params(spec, clip.shape[-2], clip.shape[-1], clip.shape[1], rng)
    return apply_clip_params(clip, spec, params)


def center_view(clip: torch.Tensor, crop: int) -> torch.Tensor:
    """Deterministic evaluation view: the centre ``crop``×``crop`` window of every frame (3×T×H×W, any dtype).

    Raises:
        ValueError: if the frames are smaller than ``crop``.
    """
    h, w = clip.shape[-2:]
    if h < crop or w < crop:
        raise ValueError(
            f"clip frames are {h}×{w}, smaller than the centre crop {crop}; resize the clip first"
        )
    top, left = (h - crop) // 2, (w - crop) // 2
    return clip[..., top : top + crop, left : left + crop].contiguous()
