"""MLFO: multi-level feature optimisation (Qian et al., ICCV'21), as specified in METHODS.md §5.

Each video gives two consecutive clips and a "global" clip at twice the rate covering both. Three levels of
the backbone are trained at once: the last stage (high) by instance contrast, prototype swapping (SwAV-style
Sinkhorn codes) and, from epoch ``split``, a graph constraint; two intermediate stages (mid, low) pass through
motion-excitation blocks and are contrasted with their own time-reversed copies as hard negatives. Every level
also matches the local clips' time steps to the global clip's (timestamp matching).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord, _sample_rng
from vidssl.methods.base import Augment, Batch, Method, augment_clips
from vidssl.methods.distributed import gather_with_grad
from vidssl.methods.losses import multi_positive_info_nce
from vidssl.methods.mlfo_heads import (
    LevelHeads,
    LogitQueue,
    MEBlock,
    pool_steps,
    stage_channels,
    stage_shapes,
)
from vidssl.methods.params_mlfo import MLFOParams
from vidssl.models.heads import ProjectionHead

if TYPE_CHECKING:
    from vidssl.config import Params

log = logging.getLogger(__name__)

# Messages already logged by this process: one report entry builds MLFO for pretraining, probes and retrieval,
# and the same warning four times over reads like four problems.
_warned: set[str] = set()

# Time steps each level is pooled to (what 16-frame clips give R3D: layer4 T=2, layer3 T=4, layer2 T=8).
HIGH_STEPS, MID_STEPS, LOW_STEPS = 2, 4, 8

# ---------------------------------------------------------------- sampling


def mlfo_indices(
    n_frames: int, frames: int, max_rate: float, rng: np.random.Generator, min_rate: float = 1.0
) -> list[int]:
    """2·``frames`` indices ``round(start + r·i)`` at a random rate r ~ U[min_rate, min(max_rate, F / 2T)] (≥ 1).

    ``min_rate`` is 1 in MLFO; above 1 it is clamped to the upper bound, so a short video still gets the
    fastest rate that fits.

    The start is uniform over the positions where the span fits; indices are clamped to the video so a video
    shorter than 2T frames repeats its last frame.
    """
    n = 2 * frames
    high = max(1.0, min(max_rate, n_frames / n))
    rate = float(rng.uniform(min(min_rate, high), high))
    start = int(rng.integers(0, max(int(n_frames - rate * n), 0) + 1))
    idx = np.minimum(np.round(start + rate * np.arange(n)), n_frames - 1)
    return [int(i) for i in idx]


def split_clips(video: torch.Tensor, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(…×)3×2T×H×W -> (clip1 = steps 0..T-1, clip2 = steps T..2T-1, global = every other step)."""
    return video[..., :frames, :, :], video[..., frames:, :, :], video[..., ::2, :, :]


def mlfo_augment_spec(crop: int, flip: bool = True, per_frame_colour: bool = True) -> AugmentSpec:
    """MLFO's per-clip augmentation: RandomResizedCrop (area 0.5–1, aspect 3/4–4/3) and flip consistent within
    the clip; then, each frame on its own, a random RGB channel copied to all three with p = 0.5 (its RandomGray)
    followed by ColorJitter(0.5, 0.5, 0.5, 0.25) always (its train.py order; both ``consistent=False``).
    ``flip=False`` drops the flip (``MLFOParams.flip``); ``per_frame_colour=False`` draws grey and jitter once
    for the whole clip (``MLFOParams.colour: clip``)."""
    return AugmentSpec(
        crop=crop,
        scale=(0.5, 1.0),
        ratio=(3 / 4, 4 / 3),
        flip=flip,
        jitter=(0.5, 0.5, 0.5, 0.25),
        jitter_p=1.0,
        grayscale_p=0.5,
        gray="channel",
        gray_first=True,
        per_frame_color=per_frame_colour,
    )


class MLFODataset(ClipDataset):
    """Yields (frames, label, index): the 2T sampled frames of a video, uint8 3×2T×H×W, uncropped;
    :func:`mlfo_augment` splits them into clip1, clip2 and the global clip and augments each independently.

    ``spec.stride`` is not used: MLFO draws its own rate per sample, between ``min_rate`` and ``rate``.
    """

    def __init__(
        self, records: Sequence[VideoRecord], spec: ClipSpec, *, rate: float = 3.0, min_rate: float = 1.0,
    ) -> None:
        super().__init__(records, spec, crop=False)
        self.rate, self.min_rate = rate, min_rate

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        rng = _sample_rng()
        rec, t = self.records[index], self.spec.frames
        return self.load(index, mlfo_indices(rec.n_frames, t, self.rate, rng, self.min_rate)), rec.label, index


def mlfo_augment(spec: AugmentSpec) -> Augment:
    """(frames, label, index) -> (clip1, clip2, global, label, index), each clip its own draw of ``spec``."""

    def augment(batch: Batch, generator: torch.Generator) -> Batch:
        video = batch[0]
        clip1, clip2, glob = augment_clips(list(split_clips(video, video.shape[2] // 2)), spec, generator)
        return (clip1, clip2, glob, *batch[1:])

    return augment


# ---------------------------------------------------------------- losses (pure functions of tensors)


def timestamp_matching_loss(
    local1: torch.Tensor, local2: torch.Tensor, glob: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Local↔global timestamp matching (L_fine / L_fmid / L_flow).

    Each local clip (B×D×t) is pooled to t/2 steps and the two are concatenated in time, so step j covers the
    same frames as step j of the global clip (B×D×t, twice the rate). Step j must pick step j of the other
    side among its t steps: cross-entropy over t, local→global and global→local, averaged.

    Raises:
        ValueError: if t is odd or the shapes differ.
    """
    t = glob.shape[-1]
    if t % 2 or local1.shape != glob.shape or local2.shape != glob.shape:
        raise ValueError(
            f"timestamp matching needs equal B×D×t inputs with even t, got "
            f"{tuple(local1.shape)}, {tuple(local2.shape)}, {tuple(glob.shape)}"
        )
    local = torch.cat([F.adaptive_avg_pool1d(local1, t // 2), F.adaptive_avg_pool1d(local2, t // 2)], dim=-1)
    sim = torch.einsum("bdm,bdn->bmn", F.normalize(local, dim=1), F.normalize(glob, dim=1)) / temperature
    target = torch.arange(t, device=glob.device).repeat(glob.shape[0])
    l2g = F.cross_entropy(sim.reshape(-1, t), target)
    g2l = F.cross_entropy(sim.transpose(1, 2).reshape(-1, t), target)
    return (l2g + g2l) / 2


def clip_contrast(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    reversed_: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Multi-positive InfoNCE over both clips of B videos (B×D each, L2-normalised).

    A row's positive is the other clip of its video, its negatives every clip of the other videos, plus, when
    ``reversed_`` = (time-reversed clip1, clip2) embeddings is given, its own video's two reversed clips.
    """
    b = z1.shape[0]
    labels = torch.arange(b, device=z1.device).repeat(2)
    extra = None if reversed_ is None else torch.stack(reversed_, dim=1).repeat(2, 1, 1)
    return multi_positive_info_nce(torch.cat([z1, z2]), labels, temperature, extra)


@torch.no_grad()
def reversal_accuracy(
    z1: torch.Tensor, z2: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor
) -> torch.Tensor:
    """How often a clip is closer to its video's other clip than to both of the video's time-reversed clips.

    Rows of B×D unit vectors: clip1, clip2 and their reversed copies; the rate over the 2B clips (what L_mid and
    L_low ask for; a model blind to frame order ties the reversed copy with the clip itself and scores ~0).
    """
    pos = (z1 * z2).sum(dim=1)
    right = [pos > torch.maximum((z * r1).sum(dim=1), (z * r2).sum(dim=1)) for z in (z1, z2)]
    return torch.cat(right).float().mean()


def swapped_prototype_loss(
    l1: torch.Tensor, l2: torch.Tensor, q_s: torch.Tensor, q_t: torch.Tensor, temperature: float
) -> torch.Tensor:
    """L_sd = -½ mean_b[Σ_k q_t log softmax(ℓ₁/T) + Σ_k q_s log softmax(ℓ₂/T)]; all B×K (codes: no grad)."""
    ce1 = (q_t * F.log_softmax(l1 / temperature, dim=1)).sum(dim=1)
    ce2 = (q_s * F.log_softmax(l2 / temperature, dim=1)).sum(dim=1)
    return -0.5 * (ce1 + ce2).mean()


@torch.no_grad()
def graph_target(instance: torch.Tensor, labels: torch.Tensor, thres: float) -> torch.Tensor:
    """G = rownorm(G_ins ⊙ G_sem), no gradient.

    Args:
        instance: B×B G_ins = row-softmax(z¹z²ᵀ/τ); entries below ``thres`` are zeroed, the diagonal kept.
        labels: (B,) cluster of each video (argmax of q_s + q_t); G_sem[i, j] = [labels_i == labels_j].
        thres: sparsification threshold.
    """
    g = instance.detach().clone()
    diag = g.diagonal().clone()
    g[g < thres] = 0
    g.diagonal().copy_(diag)
    g = g * (labels.view(-1, 1) == labels.view(1, -1))
    return g / g.sum(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)


def graph_loss(g1: torch.Tensor, g2: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """mean_ij -G_ij log softmax_j(<g¹_i, g²_j>/τ) for L2-normalised B×D graph-head embeddings."""
    return -(target * F.log_softmax(g1 @ g2.T / temperature, dim=1)).mean()


# ---------------------------------------------------------------- the method


class MLFO(Method):
    """MLFO over any backbone with ``forward_stages`` (R3D: low = layer2, mid = layer3, high = last)."""

    name = "mlfo"
    baseline = "simclr"
    probes = {
        "acc_rev_mid": "clip nearer its video's other clip than its time-reversed clips, mid level (L_mid)",
        "acc_rev_low": "the same at the low level (L_low)",
    }
    unused_parameters = True  # graph heads before ``split``, prototypes during ``freeze_prototype_epochs``

    def __init__(self, backbone: torch.nn.Module, *, params: MLFOParams | None = None, seed: int = 0) -> None:
        super().__init__(backbone, seed=seed)
        p = self.p = params or MLFOParams()
        self.high_stage = backbone.stage_names[-1]
        ch = stage_channels(backbone, [p.low_stage, p.mid_stage, self.high_stage])
        self.me_low = MEBlock(ch[p.low_stage], p.reduction)
        self.me_mid = MEBlock(ch[p.mid_stage], p.reduction)
        self.high = LevelHeads(ch[self.high_stage], p.dim)
        self.mid = LevelHeads(ch[p.mid_stage], p.dim)
        self.low = LevelHeads(ch[p.low_stage], p.dim)
        c = ch[self.high_stage]
        self.project_global = ProjectionHead(c, c, p.dim, bn=True, normalize=True)
        self.prototype = torch.nn.Linear(p.dim, p.cluster, bias=False)
        self.queue = LogitQueue(p.queue_size, p.cluster)

    @classmethod
    def from_config(cls, backbone: torch.nn.Module, cfg: Params, *, n_samples: int) -> MLFO:
        method = cls(backbone, params=getattr(cfg.pretrain, "mlfo", None) or MLFOParams(), seed=cfg.seed)
        for problem in method.short_levels(method.p.seq or cfg.clip.frames):
            if problem not in _warned:
                _warned.add(problem)
                log.warning("%s", problem)
        return method

    @classmethod
    def make_dataset(cls, records: Sequence[VideoRecord], spec: ClipSpec, cfg: Params) -> MLFODataset:
        p = getattr(cfg.pretrain, "mlfo", None) or MLFOParams()
        if p.seq:
            spec = dataclasses.replace(spec, frames=p.seq)
        return MLFODataset(records, spec, rate=p.rate, min_rate=p.min_rate)

    def make_augment(self, spec: ClipSpec, cfg: Params) -> Augment:
        p = getattr(cfg.pretrain, "mlfo", None) or MLFOParams()
        return mlfo_augment(mlfo_augment_spec(spec.crop, p.flip, p.colour == "frame"))

    def short_levels(self, frames: int) -> list[str]:
        """One message per level whose stage gives ``frames``-frame clips fewer time steps T than the level is
        pooled to (S): pooling repeats each step S / T times, and repeats cannot be told apart, so that
        level's timestamp matching cannot go below log(S / T)."""
        levels = {
            "high": (self.high_stage, HIGH_STEPS, "L_fine"),
            "mid": (self.p.mid_stage, MID_STEPS, "L_fmid"),
            "low": (self.p.low_stage, LOW_STEPS, "L_flow"),
        }
        shapes = stage_shapes(self.backbone, [stage for stage, _, _ in levels.values()], frames=frames)
        problems = []
        for level, (stage, steps, term) in levels.items():
            t = shapes[stage][1]
            if t < steps:
                problems.append(
                    f"MLFO: at {frames}-frame clips {stage} has {t} time step(s), fewer than the {steps} its "
                    f"{level} level is pooled to, so {term} cannot go below "
                    f"log({steps // t}) = {math.log(steps // t):.3f}; "
                    "set pretrain.mlfo.seq: 16 (MLFO's --seq) or clip.frames: 16"
                )
        return problems

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-level step sequences of N stacked clips: high N×C×2; mid, low 2N×C×{4, 8} (originals first,
        then the same maps reversed in time; the ME blocks see both in one batch, as in the paper)."""
        maps = self.backbone.forward_stages(x)
        low, mid = maps[self.p.low_stage], maps[self.p.mid_stage]
        return {
            "high": pool_steps(maps[self.high_stage], HIGH_STEPS),
            "mid": pool_steps(self.me_mid(torch.cat([mid, mid.flip(2)])), MID_STEPS),
            "low": pool_steps(self.me_low(torch.cat([low, low.flip(2)])), LOW_STEPS),
        }

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype row back onto the unit sphere (done before every step)."""
        w = self.prototype.weight
        w.copy_(F.normalize(w, dim=1))

    def _prototype_logits(self, high: torch.Tensor, b: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The head's BN sees all three clips (as in the paper); only the two local clips get prototypes.
        g = self.project_global(high.mean(dim=2))[: 2 * b]
        w = self.prototype.weight
        # Frozen prototypes get no gradient, so the optimiser leaves them as they are (paper: epoch 0).
        if epoch < self.p.freeze_prototype_epochs:
            w = w.detach()
        logits = g @ w.T
        return gather_with_grad(logits[:b]), gather_with_grad(logits[b:])

    def _pair(self, z: torch.Tensor, b: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Gathered, L2-normalised (clip1, clip2) rows of stacked N×D embeddings, from row ``offset`` on."""
        z = F.normalize(z, dim=1)
        return gather_with_grad(z[offset : offset + b]), gather_with_grad(z[offset + b : offset + 2 * b])

    def _level_terms(
        self, seq: dict[str, torch.Tensor], b: int
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """L_high, L_fine; per intermediate level, reversed-negative contrast and timestamp matching.

        Also returns, per intermediate level, :func:`reversal_accuracy` (logged, not optimised)."""
        tau = self.p.temperature
        terms = {"high": clip_contrast(*self._pair(self.high.project(seq["high"]).mean(dim=2), b), tau)}
        terms["fine"] = timestamp_matching_loss(*self.high.fine(seq["high"]).split(b), tau)
        accs = {}
        for level, heads in (("mid", self.mid), ("low", self.low)):
            z = heads.project(seq[level]).mean(dim=2)  # 6B rows: 3 clips, then their time-reversed copies
            pair, reversed_ = self._pair(z, b), self._pair(z, b, offset=3 * b)
            terms[level] = clip_contrast(*pair, tau, reversed_=reversed_)
            terms[f"f{level}"] = timestamp_matching_loss(*heads.fine(seq[level][: 3 * b]).split(b), tau)
            accs[f"acc_rev_{level}"] = reversal_accuracy(*pair, *reversed_)
        return terms, accs

    def _graph_terms(
        self, seq: dict[str, torch.Tensor], b: int, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The graph constraint on the three graph heads, against one stop-gradient target G."""
        tau, p = self.p.temperature, self.p
        with torch.no_grad():
            z1, z2 = self._pair(self.high.project(seq["high"]).mean(dim=2), b)
            target = graph_target(torch.softmax(z1 @ z2.T / tau, dim=1), labels, p.thres)
        terms = {
            f"graph_{level}": graph_loss(
                *self._pair(heads.graph(seq[level][: 2 * b]).mean(dim=2), b), target, tau
            )
            for level, heads in (("high", self.high), ("mid", self.mid), ("low", self.low))
        }
        terms["graph"] = (
            terms["graph_high"] + p.graph_mid * terms["graph_mid"] + p.graph_low * terms["graph_low"]
        )
        return terms

    def training_step(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        clip1, clip2, glob = batch[:3]
        b, p = clip1.shape[0], self.p
        self.normalize_prototypes()
        seq = self.encode(torch.cat([clip1, clip2, glob]))
        terms, accs = self._level_terms(seq, b)
        l1, l2 = self._prototype_logits(seq["high"], b, epoch)
        q_s, q_t = self.queue.codes(
            l1.detach(),
            l2.detach(),
            use_queue=epoch >= p.queue_start,
            epsilon=p.epsilon,
            iterations=p.sinkhorn_iters,
        )
        terms["sd"] = swapped_prototype_loss(l1, l2, q_s, q_t, p.proto_temperature)
        loss = (
            terms["high"]
            + terms["fine"]
            + p.w_mid * (terms["mid"] + terms["fmid"])
            + p.w_low * (terms["low"] + terms["flow"])
            + p.w_sd * terms["sd"]
        )
        labels = (q_s + q_t).argmax(dim=1)
        if epoch >= p.split:
            terms.update(self._graph_terms(seq, b, labels))
            loss = loss + p.w_graph * terms["graph"]
        names = ["loss", *(f"loss_{k}" for k in terms), *accs]
        values = torch.stack([loss.detach(), *(v.detach() for v in [*terms.values(), *accs.values()])]).tolist()
        logged = dict(zip(names, values, strict=True))
        logged["clusters"] = float(labels.unique().numel())  # distinct prototype labels; collapse shows as 1
        return loss, logged
