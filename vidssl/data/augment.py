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


def _blend(a: torch.Tensor, b: torch.Tensor, factor: float) -> torch.Tensor:
    return (factor * a + (1.0 - factor) * b).clamp_(0.0, 1.0)


def _hue_shift(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Add ``shift`` (in turns) to the HSV hue, as torchvision's adjust_hue."""
    r, g, b = x[0], x[1], x[2]
    maxc, minc = x.max(dim=0).values, x.min(dim=0).values
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
    table = [(v, tt, p), (q, v, p), (p, v, tt), (p, q, v), (tt, p, v), (v, p, q)]
    out = [torch.zeros_like(v) for _ in range(3)]
    for k, chans in enumerate(table):
        sel = i == k
        for ch in range(3):
            out[ch] = torch.where(sel, chans[ch], out[ch])
    return torch.stack(out)


def _jitter(
    x: torch.Tensor, jitter: tuple[float, float, float, float], rng: np.random.Generator
) -> torch.Tensor:
    """torchvision ColorJitter with factors and order drawn from ``rng``."""
    bri, con, sat, hue = jitter
    ops = []
    if bri > 0:
        f_b = rng.uniform(max(0.0, 1 - bri), 1 + bri)
        ops.append(lambda y: (y * f_b).clamp_(0.0, 1.0))
    if con > 0:
        f_c = rng.uniform(max(0.0, 1 - con), 1 + con)
        # The grey mean is per frame: torchvision applied frame by frame uses each image's own mean.
        ops.append(lambda y: _blend(y, _gray(y).mean(dim=(2, 3), keepdim=True), f_c))
    if sat > 0:
        f_s = rng.uniform(max(0.0, 1 - sat), 1 + sat)
        ops.append(lambda y: _blend(y, _gray(y), f_s))
    if hue > 0:
        f_h = rng.uniform(-hue, hue)
        ops.append(lambda y: _hue_shift(y, f_h))
    for k in rng.permutation(len(ops)):
        x = ops[k](x)
    return x


def _grayscale(x: torch.Tensor, spec: AugmentSpec, rng: np.random.Generator) -> torch.Tensor:
    if spec.grayscale_p > 0 and rng.random() < spec.grayscale_p:
        one = _gray(x) if spec.gray == "luma" else x[int(rng.integers(0, 3))].unsqueeze(0)
        x = one.expand(3, -1, -1, -1).clone()
    return x


def _colour(x: torch.Tensor, spec: AugmentSpec, rng: np.random.Generator) -> torch.Tensor:
    """Jitter and grayscale (in ``spec``'s order), with parameters for the whole (sub-)clip ``x``."""
    if spec.gray_first:
        x = _grayscale(x, spec, rng)
    if spec.jitter is not None and rng.random() < spec.jitter_p:
        x = _jitter(x, spec.jitter, rng)
    if not spec.gray_first:
        x = _grayscale(x, spec, rng)
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


def augment_clip(clip: torch.Tensor, spec: AugmentSpec, rng: np.random.Generator) -> torch.Tensor:
    """Augment one clip with parameters drawn once (colour per frame if ``spec.per_frame_color``).

    Order: rotation (BE rotates the full frame), crop (random or random-resized), horizontal flip, colour jitter
    and grayscale (grayscale first if ``spec.gray_first``), Gaussian blur.

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
    x = clip
    if spec.rotate > 0:
        x = _rotate(x.float() / 255.0, float(rng.uniform(-spec.rotate, spec.rotate)))
    top, left, ch, cw = _crop_box(x.shape[-2], x.shape[-1], spec, rng)
    x = x[..., top : top + ch, left : left + cw]
    if spec.flip and rng.random() < 0.5:
        x = x.flip(-1)
    colour = spec.jitter is not None or spec.grayscale_p > 0
    blur = spec.blur_p > 0 and rng.random() < spec.blur_p
    resize = (ch, cw) != (spec.crop, spec.crop)
    if not (colour or blur or resize or x.is_floating_point()):
        return x.contiguous()  # pure crop/flip: no float round trip
    x = x if x.is_floating_point() else x.float() / 255.0
    x = _resize(x, spec.crop)
    if colour and spec.per_frame_color:
        x = torch.cat([_colour(x[:, i : i + 1], spec, rng) for i in range(x.shape[1])], dim=1)
    elif colour:
        x = _colour(x, spec, rng)
    if blur:
        x = _blur(x, float(rng.uniform(0.1, 2.0)))
    return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)


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
