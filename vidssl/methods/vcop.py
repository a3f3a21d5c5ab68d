"""VCOP: video clip order prediction (Xu et al., CVPR'19), the pretext-task baseline.

A tuple of ``tuple_len`` clips, taken in order from one video with ``interval`` frames between them, is
shuffled by a random permutation; the backbone encodes each clip (GAP), every pair of clip features is
concatenated and mapped by a shared layer, and a classifier over all pair features predicts which of the
tuple_len! permutations was applied.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord, _sample_rng, clip_indices
from vidssl.methods.base import Augment, Batch, Method, augment_clips
from vidssl.methods.params_vcop import VCOPParams

if TYPE_CHECKING:
    from vidssl.config import Params


@lru_cache(maxsize=8)
def permutations(n: int) -> tuple[tuple[int, ...], ...]:
    """All orders of ``n`` clips; class k is the k-th in ``itertools.permutations`` order (as VCOP's code)."""
    return tuple(itertools.permutations(range(n)))


def order_label(order: Sequence[int]) -> int:
    """Class index of ``order``, where shuffled position i holds original clip ``order[i]``.

    Raises:
        ValueError: if ``order`` is not a permutation of 0..n-1.
    """
    key = tuple(int(o) for o in order)
    if sorted(key) != list(range(len(key))):
        raise ValueError(f"order_label: {list(key)} is not a permutation of 0..{len(key) - 1}")
    return permutations(len(key)).index(key)


def tuple_indices(
    n_frames: int, frames: int, stride: int, interval: int, tuple_len: int, rng: np.random.Generator
) -> list[list[int]]:
    """Frame indices of ``tuple_len`` consecutive clips separated by ``interval`` frames, at a random start.

    Videos shorter than the tuple start at 0 and repeat their last frame (VCOP's lists skip such videos).
    """
    span = (frames - 1) * stride + 1
    total = tuple_len * span + interval * (tuple_len - 1)
    start = int(rng.integers(0, max(n_frames - total, 0) + 1))
    return [clip_indices(start + i * (span + interval), frames, stride, n_frames) for i in range(tuple_len)]


class VCOPDataset(ClipDataset):
    """Shuffled clip tuples: (N×3×T×H×W uint8 clips in shuffled order, uncropped, permutation label, label,
    index); :func:`tuple_augment` crops them on the training device."""

    def __init__(
        self, records: Sequence[VideoRecord], spec: ClipSpec, *, tuple_len: int, interval: int
    ) -> None:
        super().__init__(records, spec, crop=False)
        self.tuple_len, self.interval = tuple_len, interval

    def __getitem__(self, index: int) -> tuple[Tensor, int, int, int]:
        rng = _sample_rng()
        rec, s = self.records[index], self.spec
        clips = tuple_indices(rec.n_frames, s.frames, s.stride, self.interval, self.tuple_len, rng)
        order = rng.permutation(self.tuple_len)
        wanted = sorted({f for c in clips for f in c})  # decode each frame once
        where = {f: k for k, f in enumerate(wanted)}
        video = self.load(index, wanted)
        shuffled = [video[:, [where[f] for f in clips[o]]] for o in order]
        return torch.stack(shuffled), order_label(order), rec.label, index


def tuple_augment(spec: AugmentSpec) -> Augment:
    """(B×N×3×T×H×W tuples, ...) -> the same with every clip cropped: VCOP draws the crop per clip, not per
    tuple."""

    def augment(batch: Batch, generator: torch.Generator) -> Batch:
        tuples = batch[0]
        out = augment_clips([tuples.flatten(0, 1)], spec, generator)[0]
        return (out.view(*tuples.shape[:2], *out.shape[1:]), *batch[1:])

    return augment


class OrderHead(nn.Module):
    """Pairwise feature extraction (fc7 on each concatenated pair, shared) then fc8 over all pairs."""

    def __init__(self, in_dim: int, tuple_len: int, *, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        self.pairs = list(itertools.combinations(range(tuple_len), 2))
        self.fc7 = nn.Linear(2 * in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc8 = nn.Linear(hidden * len(self.pairs), math.factorial(tuple_len))

    def forward(self, f: Tensor) -> Tensor:
        """B×N×D clip features (shuffled order) -> B×N! order logits."""
        pair = torch.stack([torch.cat([f[:, i], f[:, j]], dim=1) for i, j in self.pairs], dim=1)
        h = F.relu(self.fc7(pair)).flatten(1)
        return self.fc8(self.dropout(h))


def _params(cfg: "Params") -> VCOPParams:
    return getattr(cfg.pretrain, "vcop", None) or VCOPParams()


class VCOP(Method):
    """Clip order prediction over any backbone."""

    name = "vcop"
    probes = {"acc_order": "order of a shuffled clip tuple (chance 16.7 for 3 clips)"}

    def __init__(
        self, backbone: nn.Module, *, tuple_len: int = 3, hidden: int = 512, dropout: float = 0.5, seed: int = 0
    ) -> None:
        super().__init__(backbone, seed=seed)
        if tuple_len < 2:
            raise ValueError(f"VCOP: tuple_len must be >= 2, got {tuple_len}")
        self.tuple_len = tuple_len
        self.head = OrderHead(backbone.out_dim, tuple_len, hidden=hidden, dropout=dropout)

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: "Params", *, n_samples: int) -> "VCOP":
        p = _params(cfg)
        return cls(backbone, tuple_len=p.tuple_len, hidden=p.hidden, dropout=p.dropout, seed=cfg.seed)

    @classmethod
    def make_dataset(cls, records: Sequence[VideoRecord], spec: ClipSpec, cfg: "Params") -> VCOPDataset:
        p = _params(cfg)
        spec = dataclasses.replace(spec, stride=p.stride)  # VCOP pretrains on consecutive frames
        return VCOPDataset(records, spec, tuple_len=p.tuple_len, interval=p.interval)

    def make_augment(self, spec: ClipSpec, cfg: "Params") -> Augment:
        return tuple_augment(AugmentSpec(crop=spec.crop))

    def logits(self, clips: Tensor) -> Tensor:
        """B×N×3×T×H×W shuffled tuples -> B×N! logits."""
        b, n = clips.shape[:2]
        if n != self.tuple_len:
            raise ValueError(
                f"VCOP: expected tuples of {self.tuple_len} clips, got {n} (shape {tuple(clips.shape)}); "
                "set pretrain.vcop.tuple_len to match the dataset"
            )
        # One backbone call for all clips (VCOP's code calls it per tuple position: only BN batching differs).
        return self.head(self.backbone(clips.flatten(0, 1)).view(b, n, -1))

    def training_step(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        clips, target = batch[0], batch[1].to(batch[0].device)
        logits = self.logits(clips)
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(dim=1) == target).float().mean()
        return loss, {"loss": loss.item(), "acc_order": acc.item()}
