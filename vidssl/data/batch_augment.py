"""Batched augmentation on the training device: every clip of a batch in one pass, parameters drawn per clip.

Loaders only sample frames and decode them; the clips reach the device uncropped and this module makes the
views there. Parameters are drawn on the CPU from an explicit ``torch.Generator`` (the method's, saved in its
checkpoint, so a resumed run draws exactly what the uninterrupted run would), one draw per clip (colour: one per
frame where the spec asks), with the distributions of the per-clip path ``vidssl.data.augment`` (torchvision's
rules). Applying them is plain torch on whatever device the clips are on:

- rotation: one ``affine_grid``/``grid_sample`` call for the batch, a rotation matrix per clip;
- crop, flip and the random-resized crop's resize: a plain crop gathers each clip's window (one indexing call);
  a resized crop is two matrix products per clip, with the rows of the antialiased bilinear resize
  (``F.interpolate(antialias=True)``'s triangle filter) cut to the clip's window and mirrored for a flip;
- colour: brightness, contrast, saturation and hue each run once per position of the random op order, on the
  frames that apply that op there; grayscale (luma or one channel) on the frames drawn grey;
- blur: one grouped convolution per axis, each clip's kernel zero-padded to the batch's widest.

Under data parallelism the parameters are drawn for the global batch and each rank takes its rows, so the
augmentation does not depend on the number of processes. Values match the per-clip path on the same
parameters to float rounding (tests/test_batch_augment.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from vidssl.data.augment import _LUMA, AugmentSpec, ClipParams, _hue_shift

NO_GRAY = -2  # gray code: not greyed (-1: luma, 0-2: that channel copied to all three)


@dataclass(frozen=True)
class BatchParams:
    """The drawn parameters of N clips (CPU tensors; U colour units per clip: 1, or T for per-frame colour).

    ``angle`` N float64 degrees or None (no rotation in the spec); ``box`` N×4 (top, left, height, width);
    ``flip`` N bool; ``jitter`` N×U bool (jitter drawn); ``order`` N×U×K op ids in the order applied, K the
    spec's ops with non-zero strength (0 brightness, 1 contrast, 2 saturation, 3 hue); ``factors`` N×U×4
    float64; ``gray`` N×U long (:data:`NO_GRAY`, -1 luma, or a channel); ``sigma`` N float64 blur σ, NaN for
    no blur."""

    angle: torch.Tensor | None
    box: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    gray: torch.Tensor
    sigma: torch.Tensor

    def __len__(self) -> int:
        return self.box.shape[0]

    def rows(self, sl: slice) -> BatchParams:
        """The parameters of clips ``sl``."""
        return BatchParams(None if self.angle is None else self.angle[sl], self.box[sl], self.flip[sl],
                           self.jitter[sl], self.order[sl], self.factors[sl], self.gray[sl], self.sigma[sl])

    def plain(self, mask: torch.Tensor) -> BatchParams:
        """The same draws with colour and blur switched off for the clips in ``mask`` (DualVar's crop-only
        transform of clip A: its crop is drawn by the same rule)."""
        m = mask.view(-1, 1)
        return replace(self, jitter=self.jitter & ~m, gray=self.gray.masked_fill(m, NO_GRAY),
                       sigma=self.sigma.masked_fill(mask, float("nan")))

    @staticmethod
    def cat(parts: list[BatchParams]) -> BatchParams:
        """Parameters of several batches, one after the other."""
        angle = None if parts[0].angle is None else torch.cat([p.angle for p in parts])  # type: ignore[misc]
        return BatchParams(angle, *(torch.cat([getattr(p, f) for p in parts]) for f in
                                    ("box", "flip", "jitter", "order", "factors", "gray", "sigma")))


def _enabled_ops(spec: AugmentSpec) -> list[int]:
    return [] if spec.jitter is None else [op for op in range(4) if spec.jitter[op] > 0]


def _units(spec: AugmentSpec, t: int) -> int:
    return t if spec.per_frame_color else 1


# ---------------------------------------------------------------- drawing


def _uniform(n: tuple[int, ...], lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _index_below(bound: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One uniform integer in [0, bound) per entry (bound >= 1)."""
    return (torch.rand(bound.shape, generator=g, dtype=torch.float64) * bound).long().clamp_(max=bound - 1)


def _draw_boxes(spec: AugmentSpec, n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """N×4 crop windows: a plain random crop, or torchvision's RandomResizedCrop rule (up to 10 tries of area
    and log-aspect, the first that fits, else the whole frame cut to the nearest allowed aspect, centred)."""
    if spec.scale is None:
        if h < spec.crop or w < spec.crop:
            raise ValueError(
                f"clip frames are {h}×{w}, smaller than the crop {spec.crop}; resize the clip first "
                "(clip.resize >= clip.crop) or set AugmentSpec.scale for a resized crop"
            )
        top = _index_below(torch.full((n,), h - spec.crop + 1), g)
        left = _index_below(torch.full((n,), w - spec.crop + 1), g)
        side = torch.full((n,), spec.crop)
        return torch.stack([top, left, side, side], dim=1)
    area = _uniform((n, 10), *spec.scale, g) * (h * w)
    aspect = torch.exp(_uniform((n, 10), math.log(spec.ratio[0]), math.log(spec.ratio[1]), g))
    # round half to even, as Python's round() in the per-clip path
    cw, ch = torch.round(torch.sqrt(area * aspect)).long(), torch.round(torch.sqrt(area / aspect)).long()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(fits.any(dim=1), fits.long().argmax(dim=1), torch.zeros(n, dtype=torch.long))
    ch, cw = ch.gather(1, first[:, None])[:, 0], cw.gather(1, first[:, None])[:, 0]
    top, left = _index_below((h - ch + 1).clamp(min=1), g), _index_below((w - cw + 1).clamp(min=1), g)
    ratio = w / h
    if ratio < spec.ratio[0]:
        fch, fcw = round(w / spec.ratio[0]), w
    elif ratio > spec.ratio[1]:
        fch, fcw = h, round(h * spec.ratio[1])
    else:
        fch, fcw = h, w
    fallback = ~fits.any(dim=1)
    box = torch.stack([top, left, ch, cw], dim=1)
    box[fallback] = torch.tensor([(h - fch) // 2, (w - fcw) // 2, fch, fcw])
    return box


def draw_batch(spec: AugmentSpec, n: int, h: int, w: int, t: int, generator: torch.Generator) -> BatchParams:
    """Draw the parameters of ``n`` clips of ``t`` frames of ``h``×``w`` from ``generator``.

    The distributions are the per-clip path's (``vidssl.data.augment.draw_clip_params``); the numbers are not,
    since they come from a torch generator, drawn vector by vector."""
    g = generator
    angle = _uniform((n,), -spec.rotate, spec.rotate, g) if spec.rotate > 0 else None
    box = _draw_boxes(spec, n, h, w, g)
    flip = torch.rand(n, generator=g) < 0.5 if spec.flip else torch.zeros(n, dtype=torch.bool)
    u, ops = _units(spec, t), _enabled_ops(spec)
    jitter = torch.zeros(n, u, dtype=torch.bool)
    factors = torch.ones(n, u, 4, dtype=torch.float64)
    order = torch.zeros(n, u, len(ops), dtype=torch.long)
    if spec.jitter is not None:
        jitter = torch.rand(n, u, generator=g, dtype=torch.float64) < spec.jitter_p
        bri, con, sat, hue = spec.jitter
        ranges = [(max(0.0, 1 - bri), 1 + bri), (max(0.0, 1 - con), 1 + con), (max(0.0, 1 - sat), 1 + sat),
                  (-hue, hue)]
        for op in ops:
            factors[..., op] = _uniform((n, u), *ranges[op], g)
        if ops:
            perm = torch.rand(n, u, len(ops), generator=g).argsort(dim=2)  # a uniform random order per unit
            order = torch.tensor(ops)[perm]
    gray = torch.full((n, u), NO_GRAY, dtype=torch.long)
    if spec.grayscale_p > 0:
        greyed = torch.rand(n, u, generator=g, dtype=torch.float64) < spec.grayscale_p
        code = (torch.randint(0, 3, (n, u), generator=g) if spec.gray == "channel"
                else torch.full((n, u), -1, dtype=torch.long))
        gray = torch.where(greyed, code, gray)
    sigma = torch.full((n,), float("nan"), dtype=torch.float64)
    if spec.blur_p > 0:
        blur = torch.rand(n, generator=g, dtype=torch.float64) < spec.blur_p
        sigma = torch.where(blur, _uniform((n,), 0.1, 2.0, g), sigma)
    return BatchParams(angle, box, flip, jitter, order, factors, gray, sigma)


def from_clip_params(params: list[ClipParams], spec: AugmentSpec, t: int) -> BatchParams:
    """Stack per-clip parameters (``vidssl.data.augment.draw_clip_params``) into batch form: the batched path
    applied to them must give the per-clip path's values."""
    n, u, ops = len(params), _units(spec, t), _enabled_ops(spec)
    angle = (torch.tensor([p.angle for p in params], dtype=torch.float64) if spec.rotate > 0 else None)
    box = torch.tensor([p.box for p in params], dtype=torch.long).view(n, 4)
    flip = torch.tensor([p.flip for p in params], dtype=torch.bool)
    jitter = torch.zeros(n, u, dtype=torch.bool)
    factors = torch.ones(n, u, 4, dtype=torch.float64)
    order = torch.zeros(n, u, len(ops), dtype=torch.long)
    gray = torch.full((n, u), NO_GRAY, dtype=torch.long)
    for i, p in enumerate(params):
        for k, d in enumerate(p.colour):
            if d.gray is not None:
                gray[i, k] = d.gray
            if d.jitter is not None:
                jitter[i, k] = True
                order[i, k] = torch.tensor([op for op, _ in d.jitter])
                for op, f in d.jitter:
                    factors[i, k, op] = f
    sigma = torch.tensor([float("nan") if p.sigma is None else p.sigma for p in params], dtype=torch.float64)
    return BatchParams(angle, box, flip, jitter, order, factors, gray, sigma)


# ---------------------------------------------------------------- applying


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate every frame of each clip (N×C×T×H×W float) by its clip's angle about the centre; corners 0."""
    n, c, t, h, w = x.shape
    a = torch.deg2rad(degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(cos)
    # normalised coordinates scale differently along H and W, so the rotation is conjugated by the aspect
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, c * t, h, w], align_corners=False)
    return F.grid_sample(x.reshape(n, c * t, h, w), grid, mode="bilinear", align_corners=False).view(
        n, c, t, h, w
    )


def resize_weights(size: int, out: int, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """N×out×size matrices: row i resamples output pixel i from the window [start, start + length) of a
    ``size``-pixel axis, with the weights of ``F.interpolate(mode="bilinear", antialias=True)`` (a triangle
    filter widened by the scale when shrinking, each row normalised to sum 1)."""
    n = start.shape[0]
    scale = length.double() / out  # input pixels per output pixel
    support = torch.where(scale >= 1, scale, torch.ones_like(scale))  # filter half-width (interp size 2 / 2)
    inv = torch.where(scale >= 1, 1 / scale, torch.ones_like(scale))
    centre = scale[:, None] * (torch.arange(out, dtype=torch.float64) + 0.5)  # N×out, in window coordinates
    j = torch.arange(size, dtype=torch.float64)[None, None] - start.double()[:, None, None]  # N×1×size
    lo = torch.trunc(centre - support[:, None] + 0.5).clamp(min=0)  # torchvision / ATen's window bounds
    hi = torch.minimum(torch.trunc(centre + support[:, None] + 0.5), length.double()[:, None])
    inside = (j >= lo[..., None]) & (j < hi[..., None])
    wts = (1 - ((j - centre[..., None] + 0.5) * inv[:, None, None]).abs()).clamp(min=0) * inside
    return (wts / wts.sum(dim=2, keepdim=True)).view(n, out, size)


def _crop(x: torch.Tensor, spec: AugmentSpec, p: BatchParams) -> torch.Tensor:
    """Each clip's crop window (flipped where drawn), resized to crop×crop when the window is another size."""
    n, c, t, h, w = x.shape
    s, dev = spec.crop, x.device
    top, left, ch, cw = p.box.unbind(1)
    if bool(((ch == s) & (cw == s)).all()):  # plain windows: one copy of the N windows, exact for any dtype
        out = torch.stack([x[i, ..., t_ : t_ + s, l_ : l_ + s] for i, (t_, l_) in
                           enumerate(zip(top.tolist(), left.tolist()))])
        if bool(p.flip.any()):
            out = torch.where(p.flip.to(dev).view(-1, 1, 1, 1, 1), out.flip(-1), out)
        return out
    xf = x if x.is_floating_point() else x.float() / 255.0
    a_h = resize_weights(h, s, top, ch).to(dev, xf.dtype)
    a_w = resize_weights(w, s, left, cw)
    a_w = torch.where(p.flip[:, None, None], a_w.flip(1), a_w).to(dev, xf.dtype)
    # one large matrix product per clip and axis (many small per-frame products cost more than they compute)
    y = torch.bmm(xf.reshape(n, c * t * h, w), a_w.transpose(1, 2))  # N×(CTH)×S
    y = y.view(n, c * t, h, s).transpose(1, 2).reshape(n, h, c * t * s)
    y = torch.bmm(a_h, y)  # N×S×(CT·S)
    return y.view(n, s, c, t, s).permute(0, 2, 3, 1, 4)


def _blend(a: torch.Tensor, b: torch.Tensor, f64: torch.Tensor) -> torch.Tensor:
    """f·a + (1 − f)·b per frame, both weights computed in float64 then cast, as the per-clip path."""
    f = f64.view(-1, 1, 1, 1)
    return (f.to(a.dtype) * a + (1.0 - f).to(a.dtype) * b).clamp_(0.0, 1.0)


def _gray(y: torch.Tensor) -> torch.Tensor:
    """M×3×H×W -> M×1×H×W luma."""
    return (_LUMA[0] * y[:, 0] + _LUMA[1] * y[:, 1] + _LUMA[2] * y[:, 2]).unsqueeze(1)


def _colour_op(op: int, y: torch.Tensor, f64: torch.Tensor) -> torch.Tensor:
    """Brightness (0), contrast (1), saturation (2) or hue (3) on M×3×H×W frames, one factor per frame."""
    if op == 0:
        return (y * f64.to(y.dtype).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    if op == 1:  # each frame's own grey mean, as torchvision applied frame by frame
        return _blend(y, _gray(y).mean(dim=(2, 3), keepdim=True), f64)
    if op == 2:
        return _blend(y, _gray(y), f64)
    return _hue_shift(y, f64.to(y.dtype).view(-1, 1, 1), dim=1)


def _gray_frames(y: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Grey the frames (rows of M×3×H×W) whose code says so."""
    sel = (gray != NO_GRAY).nonzero()[:, 0]
    if not len(sel):
        return y
    frames, code = y[sel], gray[sel]
    luma = _gray(frames)
    chan = frames.gather(1, code.clamp(min=0).view(-1, 1, 1, 1).expand(-1, 1, *frames.shape[2:]))
    y[sel] = torch.where((code == -1).view(-1, 1, 1, 1), luma, chan).expand(-1, 3, -1, -1)
    return y


def _colour(x: torch.Tensor, spec: AugmentSpec, p: BatchParams) -> torch.Tensor:
    """Colour jitter and grayscale on N×3×T×S×S float clips, per clip or per frame as drawn."""
    n, c, t, s, _ = x.shape
    dev = x.device

    def per_frame(v: torch.Tensor) -> torch.Tensor:  # N×U×... -> (N·T)×..., a clip's draw on all its frames
        return (v if v.shape[1] == t else v.expand(n, t, *v.shape[2:])).reshape(n * t, *v.shape[2:]).to(dev)

    jitter, order, factors, gray = (per_frame(v) for v in (p.jitter, p.order, p.factors, p.gray))
    # one row per frame; a copy (x is never the caller's tensor: the crop made it), written in place
    y = x.transpose(1, 2).contiguous().view(n * t, c, s, s)
    if spec.gray_first:
        y = _gray_frames(y, gray)
    for pos in range(order.shape[1]):
        for op in _enabled_ops(spec):
            sel = (jitter & (order[:, pos] == op)).nonzero()[:, 0]
            if len(sel):
                y[sel] = _colour_op(op, y[sel], factors[sel, op])
    if not spec.gray_first:
        y = _gray_frames(y, gray)
    return y.view(n, t, c, s, s).transpose(1, 2)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of the clips with a finite σ (radius ceil(3σ), kept inside the frame, reflect
    padding, as the per-clip path); every clip's kernel is zero-padded to the widest, which reflect padding
    makes exact."""
    sel = torch.isfinite(sigma).nonzero()[:, 0]
    if not len(sel):
        return x
    n, c, t, h, w = x.shape
    sig = sigma[sel]
    radius = torch.clamp(torch.ceil(3 * sig), max=(min(h, w) - 1) // 2).clamp(min=1).long()
    r = int(radius.max())
    taps = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (taps[None] / sig[:, None]) ** 2) * (taps.abs()[None] <= radius[:, None])
    k = (k / k.sum(dim=1, keepdim=True)).to(x.device, x.dtype)
    m = len(sel)
    k = k.repeat_interleave(c * t, dim=0)  # one kernel per (clip, channel, frame) plane
    y = x[sel.to(x.device)].reshape(1, m * c * t, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(-1, 1, 1, 2 * r + 1), groups=m * c * t)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(-1, 1, 2 * r + 1, 1), groups=m * c * t)
    x = x.clone()
    x[sel.to(x.device)] = y.view(m, c, t, h, w)
    return x


def apply_batch(clips: torch.Tensor, spec: AugmentSpec, p: BatchParams) -> torch.Tensor:
    """Augment N×3×T×H×W clips (uint8, or float in [0, 1]) with drawn parameters, on the clips' device.

    Order as the per-clip path: rotation, crop (resized to ``spec.crop`` if the window is another size) and
    flip, colour, blur. Returns float N×3×T×crop×crop clips in [0, 1] (not rounded to 1/255 steps)."""
    if clips.dim() != 5 or clips.shape[1] != 3 or len(p) != clips.shape[0]:
        raise ValueError(f"apply_batch expects N×3×T×H×W clips and N clips' parameters, got clips of shape "
                         f"{tuple(clips.shape)} and {len(p)} clips' parameters")
    x = clips
    if p.angle is not None:
        x = _rotate(x if x.is_floating_point() else x.float() / 255.0, p.angle)
    x = _crop(x, spec, p)
    x = x if x.is_floating_point() else x.float().div_(255.0)
    if spec.jitter is not None or spec.grayscale_p > 0:
        x = _colour(x, spec, p)
    if spec.blur_p > 0:
        x = _blur(x, p.sigma)
    return x.contiguous()


def draw_views(clips: list[torch.Tensor], spec: AugmentSpec, generator: torch.Generator, *, world: int = 1,
               rank: int = 0) -> list[BatchParams]:
    """Parameters for each of several batches of clips (each N×3×T×H×W, this process's rows).

    With ``world`` > 1 processes (data parallelism) each batch's parameters are drawn for the global batch
    (world·N clips) and rank ``rank`` keeps its rows, so every clip gets what it would get in one process with
    the global batch."""
    out = []
    for x in clips:
        n, _, t, h, w = x.shape
        p = draw_batch(spec, n * world, h, w, t, generator)
        out.append(p.rows(slice(rank * n, (rank + 1) * n)) if world > 1 else p)
    return out


def augment_views(clips: list[torch.Tensor], spec: AugmentSpec, generator: torch.Generator, *,
                  params: list[BatchParams] | None = None, world: int = 1, rank: int = 0) -> list[torch.Tensor]:
    """Augment several batches of same-sized clips with one spec in one pass (parameters: :func:`draw_views`
    unless given). Returns float clips in [0, 1], one tensor per input."""
    params = params if params is not None else draw_views(clips, spec, generator, world=world, rank=rank)
    sizes = [x.shape[0] for x in clips]
    out = apply_batch(torch.cat(clips) if len(clips) > 1 else clips[0], spec, BatchParams.cat(params))
    return list(out.split(sizes))
