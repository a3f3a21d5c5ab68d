"""Clips: list reading, temporal samplers, clip-consistent augmentation and the datasets training reads.

Augmentation parameters are drawn once per clip from an explicit generator, never from torchvision's global
RNG: IIC's released code re-seeded Python's ``random`` per frame, which broke on newer torchvision (every frame
got a different crop, destroying its residual view; METHODS.md §2(g)).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vidssl.data.pool import batch_buffer
from vidssl.data.store import FramePack

LIST_COLUMNS = ("video_id", "frames_path", "n_frames", "label", "class_name", "split")


@dataclass(frozen=True)
class VideoRecord:
    """One row of a list CSV."""

    video_id: str
    frames_path: str
    n_frames: int
    label: int


def read_list(path: str | os.PathLike[str]) -> list[VideoRecord]:
    """Read a list CSV written by the lists stage."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: list not found; run `vidssl lists` (or `dvc repro lists`) first")
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(LIST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{p}: missing columns {sorted(missing)}; expected {list(LIST_COLUMNS)}")
        return [
            VideoRecord(r["video_id"], r["frames_path"], int(r["n_frames"]), int(r["label"])) for r in reader
        ]


# ---------------------------------------------------------------- temporal samplers


def clip_indices(start: int, frames: int, stride: int, n_frames: int) -> list[int]:
    """Indices ``start + i*stride``, clamped to the video so short videos repeat their last frame."""
    return [min(max(start + i * stride, 0), n_frames - 1) for i in range(frames)]


def random_clip(n_frames: int, frames: int, stride: int, rng: np.random.Generator) -> list[int]:
    """One clip at a uniformly random start (IIC/VCOP training sampler)."""
    span = (frames - 1) * stride + 1
    start = int(rng.integers(0, max(n_frames - span, 0) + 1))
    return clip_indices(start, frames, stride, n_frames)


def linspace_clips(n_frames: int, frames: int, stride: int, n_clips: int) -> list[list[int]]:
    """``n_clips`` clips whose centres are evenly spaced over the video (VCOP/IIC test protocol).

    VCOP/IIC place 16-frame clip centres at linspace(8, L-8, 10); this is the same rule for any span.
    """
    span = (frames - 1) * stride + 1
    half = span // 2
    centres = np.linspace(half, max(n_frames - (span - half), half), n_clips)
    return [clip_indices(int(round(c)) - half, frames, stride, n_frames) for c in centres]


# ---------------------------------------------------------------- clip-consistent spatial transforms


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """T×H×W×3 uint8 -> 3×T×H×W uint8 view.

    Clips stay uint8 until they reach the training device (``to_float``): 4x less to copy between loader
    workers and to the GPU, and the float conversion runs where it is cheapest.
    """
    return torch.from_numpy(frames).permute(3, 0, 1, 2)


def to_float(clips: torch.Tensor) -> torch.Tensor:
    """uint8 clips -> float in [0, 1] (IIC feeds unnormalised [0, 1] input); float input passes through."""
    return clips.float().div_(255.0) if clips.dtype == torch.uint8 else clips


def resize_short(clip: torch.Tensor, short: int) -> torch.Tensor:
    """Resize a 3×T×H×W uint8 clip so its shorter side is ``short`` (aspect kept); a no-op when it already is."""
    h, w = clip.shape[-2:]
    if min(h, w) == short:
        return clip
    scale = short / min(h, w)
    size = (max(short, round(h * scale)), max(short, round(w * scale)))
    out = F.interpolate(clip.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def crop(clip: torch.Tensor, size: int, top: int, left: int) -> torch.Tensor:
    """The same ``size``×``size`` window from every frame."""
    return clip[..., top : top + size, left : left + size]


def random_crop(clip: torch.Tensor, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Random crop drawn once for the whole clip."""
    h, w = clip.shape[-2:]
    return crop(clip, size, int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)))


def collate_clips(samples: list[tuple]) -> tuple:
    """``default_collate`` for samples of uncropped clips: where the clips at one position of the samples differ
    in size (videos of other aspect ratios), each is first cut to the batch's smallest height and width,
    centred, so they stack. Clips still in their decoded layout stack without a transposition
    (:func:`stack_decoded`); :func:`move_batch <vidssl.engine.train.move_batch>` makes them contiguous on the
    training device.

    Videos of one shape (UCF101, the embedded dataset) pass unchanged. On a mixed batch a wider video's random
    crop then falls in its central part only; equal shapes keep every window reachable (extract such data at
    one size, or keep the batch's videos alike, to avoid it)."""
    from torch.utils.data import default_collate

    first = samples[0]
    if not isinstance(first, tuple):
        return default_collate(samples)
    stacked = {}
    for i, item in enumerate(first):
        if not (torch.is_tensor(item) and item.dim() >= 4):
            continue
        sizes = {tuple(s[i].shape[-2:]) for s in samples}
        if len(sizes) > 1:
            h, w = min(hw[0] for hw in sizes), min(hw[1] for hw in sizes)
            samples = [(*s[:i], _centre(s[i], h, w), *s[i + 1 :]) for s in samples]
        stacked[i] = stack_clips([s[i] for s in samples])
    if not stacked:
        return default_collate(samples)
    rest = default_collate([tuple(x for j, x in enumerate(s) if j not in stacked) for s in samples])
    it = iter(rest)
    return tuple(stacked[i] if i in stacked else next(it) for i in range(len(first)))


def stack_clips(clips: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack equal-sized clips into one batch built in :func:`batch_buffer <vidssl.data.pool.batch_buffer>`
    memory: in their decoded layout when they all are views of decoded T×H×W×3 frames (:func:`stack_decoded`),
    contiguous otherwise."""
    batch = stack_decoded(clips)
    if batch is None:
        first = clips[0]
        batch = batch_buffer(len(clips) * first.numel(), first.dtype).view(len(clips), *first.shape)
        torch.stack(list(clips), out=batch)
    return batch


def stack_decoded(clips: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """Stack 3×T×H×W clips that are views of decoded T×H×W×3 frames (:func:`to_tensor`) into one B×3×T×H×W
    batch in that same channels-last layout; None when they are not such views (the caller stacks as usual).

    Why: making each clip contiguous transposes it in the loader worker, about 0.4 ms of a 16×112×112 clip's
    ~4 ms of JPEG decoding on one core, and the loader's CPUs are what a GPU waits on; a same-layout stack is a
    straight copy. The batch is built in :func:`batch_buffer <vidssl.data.pool.batch_buffer>` memory, so it
    reaches the main process without another copy.
    """
    first = clips[0]
    c, t, h, w = first.shape if first.dim() == 4 else (0, 0, 0, 0)
    layout = (1, h * w * c, w * c, c)  # strides of the permuted T×H×W×C view, in elements
    if not c or any(x.shape != first.shape or x.dtype != first.dtype or x.stride() != layout for x in clips):
        return None
    out = batch_buffer(len(clips) * first.numel(), first.dtype).as_strided(
        (len(clips), c, t, h, w), (first.numel(), *layout))
    for i, x in enumerate(clips):
        out[i].copy_(x)
    return out


def _centre(clip: torch.Tensor, h: int, w: int) -> torch.Tensor:
    top, left = (clip.shape[-2] - h) // 2, (clip.shape[-1] - w) // 2
    return clip[..., top : top + h, left : left + w]


def center_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    h, w = clip.shape[-2:]
    return crop(clip, size, (h - size) // 2, (w - size) // 2)


# ---------------------------------------------------------------- datasets


SHORT_POLICIES = ("loop", "drop")


@dataclass(frozen=True)
class ClipSpec:
    """Clip geometry: frames per clip, temporal stride, short-side resize and square crop.

    ``short_videos`` says what happens to a video with fewer frames than one clip spans: ``loop`` plays it
    again from its first frame until the span is filled (as the seeds' loaders do), ``drop`` leaves it out.
    """

    frames: int = 16
    stride: int = 1
    resize: int = 64
    crop: int = 56
    short_videos: str = "loop"

    @property
    def span(self) -> int:
        """Frames one clip covers in the source video."""
        return (self.frames - 1) * self.stride + 1


def usable_records(records: Sequence[VideoRecord], spec: ClipSpec) -> list[VideoRecord]:
    """The records a dataset reads under ``spec.short_videos``: all of them for ``loop``; for ``drop``, those
    with at least one clip span of frames. Pretraining, fine-tuning and retrieval all go through here.

    Raises:
        ValueError: an unknown policy.
    """
    if spec.short_videos not in SHORT_POLICIES:
        raise ValueError(f"clip.short_videos={spec.short_videos!r}: choose from {SHORT_POLICIES}")
    if spec.short_videos == "loop":
        return list(records)
    return [r for r in records if r.n_frames >= spec.span]


def looped(index: int, n_frames: int) -> int:
    """Frame ``index`` of a video played over and over: ``index mod n_frames``."""
    return index % n_frames


def _sample_rng() -> np.random.Generator:
    # Seeded from torch's generator, which DataLoader seeds per worker and per epoch from its own seeded
    # generator: runs repeat exactly for a given seed and worker count, and epochs differ.
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


class ClipDataset(Dataset):
    """One random clip per video (training): returns (3×T×S×S uint8 clip, label, index).

    ``crop=False`` leaves the clip at the resize (3×T×H×W), for augmentation on the training device."""

    def __init__(self, records: Sequence[VideoRecord], spec: ClipSpec, *, crop: bool = True) -> None:
        kept = usable_records(records, spec)
        # Under ``loop`` a short video is presented as its looped self, one clip span long, so every sampler
        # (each method's own) draws indices as for a long video and ``load`` maps them back with ``looped``.
        self.frames = [r.n_frames for r in kept]
        self.records = [r if r.n_frames >= spec.span else replace(r, n_frames=spec.span) for r in kept]
        self.spec = spec
        self.crop = crop
        self.packs = [FramePack(r.frames_path) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def collate(self, samples: list[tuple]) -> tuple:
        """How a loader stacks this dataset's samples (:func:`collate_clips` for uncropped clips)."""
        from torch.utils.data import default_collate

        return default_collate(samples) if self.crop else collate_clips(samples)

    def load(self, index: int, indices: Sequence[int]) -> torch.Tensor:
        n = self.frames[index]
        frames = self.packs[index].read([looped(i, n) for i in indices])
        return resize_short(to_tensor(frames), self.spec.resize)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        rng = _sample_rng()
        rec, s = self.records[index], self.spec
        clip = self.load(index, random_clip(rec.n_frames, s.frames, s.stride, rng))
        return (random_crop(clip, s.crop, rng).contiguous() if self.crop else clip), rec.label, index


class MultiClipDataset(ClipDataset):
    """``n_clips`` evenly spaced, centre-cropped clips per video (evaluation): (N×3×T×S×S uint8, label, index)."""

    def __init__(self, records: Sequence[VideoRecord], spec: ClipSpec, n_clips: int) -> None:
        super().__init__(records, spec)
        self.n_clips = n_clips

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        rec, s = self.records[index], self.spec
        clips = linspace_clips(rec.n_frames, s.frames, s.stride, self.n_clips)
        # Decode the union of frames once, then slice: neighbouring test clips overlap heavily.
        wanted = sorted({i for c in clips for i in c})
        where = {f: k for k, f in enumerate(wanted)}
        video = self.load(index, wanted)
        stacked = torch.stack([video[:, [where[f] for f in c]] for c in clips])
        return center_crop(stacked, s.crop).contiguous(), rec.label, index
