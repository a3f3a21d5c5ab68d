"""DualVar: inter-intra variant dual representations (Lin et al., BMVC'21), as specified in METHODS.md §3.

A stock SimCLR or MoCo core contrasts two clips A and B of a video (clip head, L_clip). Two add-ons make the
representation keep intra-video variance: a series head whose S vectors are contrasted through their averaged
similarity (temporal-coherent loss L_tc), and a shuffle-rank loss L_rank that asks the series vectors of a
segment-shuffled copy of A (clip C, re-indexed back to segment order) to match A's and C's own series vectors
slot by slot rather than any other slot.

One deliberate difference under DDP: DualVar's SimCLR core gathers embeddings with a GatherLayer whose backward
keeps only this rank's slice of the incoming gradient, so with N processes L_clip reaches the encoder with about
1/N of its single-process weight next to L_tc and L_rank. :func:`gather_with_grad` sums the gradient over ranks,
so every term keeps the weight it has on one GPU (and the two agree exactly in a single process).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord, _sample_rng, clip_indices
from vidssl.methods.base import Augment, Batch, Method, augment_clips
from vidssl.methods.distributed import gather_with_grad
from vidssl.methods.losses import (
    averaged_similarity, info_nce, nt_xent, nt_xent_from_similarity, rank_loss_from_margins, rank_margins,
)
from vidssl.methods.params_dualvar import DualVarParams
from vidssl.methods.queue import FeatureQueue, copy_params, ema_update
from vidssl.models.heads import ProjectionHead

if TYPE_CHECKING:
    from vidssl.config import Params

# ---------------------------------------------------------------- three-clip sampler and dataset


def centred_indices(centre: int, frames: int, stride: int, n_frames: int) -> list[int]:
    """Indices centre + (k - frames//2)·stride for k < frames, clamped so boundary frames repeat."""
    return clip_indices(centre - (frames // 2) * stride, frames, stride, n_frames)


def sample_clip_indices(
    n_frames: int, frames: int, stride: int, rng: np.random.Generator, rand_flip: bool
) -> tuple[list[int], list[int]]:
    """Frame indices of clips A and B (C reuses A's): independent centres uniform over the whole video.

    With ``rand_flip`` both are reversed together with p=0.5, as the code's ``--rand_flip`` does.
    """
    a = centred_indices(int(rng.integers(0, n_frames)), frames, stride, n_frames)
    b = centred_indices(int(rng.integers(0, n_frames)), frames, stride, n_frames)
    if rand_flip and rng.random() < 0.5:
        a, b = a[::-1], b[::-1]
    return a, b


def full_transform(crop: int, p: DualVarParams | None = None) -> AugmentSpec:
    """DualVar's full per-clip transform (METHODS.md §3(a)), clip-consistent: random crop, colour jitter and
    blur as ``p`` says (the defaults are the code's; no flip). Its crop-only transform is the same crop alone."""
    p = p or DualVarParams()
    return AugmentSpec(crop=crop, jitter=tuple(p.jitter), jitter_p=p.jitter_p, blur_p=p.blur_p)


class DualVarDataset(ClipDataset):
    """The frames of clips A and B of a video, uncropped: (A, B, label, index), each 3×T×H×W uint8.

    Clip C has A's frames, so it is not read twice: :meth:`DualVar.make_augment` makes A, B and C on the
    training device.
    """

    def __init__(
        self, records: Sequence[VideoRecord], spec: ClipSpec, *, stride: int, rand_flip: bool,
    ) -> None:
        super().__init__(records, spec, crop=False)
        self.stride, self.rand_flip = stride, rand_flip

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int, int]:
        rng = _sample_rng()
        rec = self.records[index]
        a, b = sample_clip_indices(rec.n_frames, self.spec.frames, self.stride, rng, self.rand_flip)
        wanted = sorted(set(a) | set(b))  # decode each frame once
        where = {f: k for k, f in enumerate(wanted)}
        video = self.load(index, wanted)
        clip_a, clip_b = (video[:, [where[f] for f in idx]] for idx in (a, b))
        return clip_a, clip_b, rec.label, index


def dualvar_augment(full: AugmentSpec, crop_only_p: float) -> Augment:
    """(A, B, label, index) -> (A, B, C, label, index) views: A the crop-only transform with p=``crop_only_p``
    (else the full one), B and C (A's frames) independent full transforms, each drawn per clip."""

    def augment(batch: Batch, generator: torch.Generator) -> Batch:
        from vidssl.data.batch_augment import draw_views
        from vidssl.methods.distributed import rank, world_size

        a, b = batch[:2]
        world, me = world_size(), rank()
        pa, pb, pc = draw_views([a, b, a], full, generator, world=world, rank=me)
        light = torch.rand(a.shape[0] * world, generator=generator) < crop_only_p
        pa = pa.plain(light[me * a.shape[0] : (me + 1) * a.shape[0]])
        view_a, view_b, view_c = augment_clips([a, b, a], full, generator, params=[pa, pb, pc])
        return (view_a, view_b, view_c, *batch[2:])

    return augment


# ---------------------------------------------------------------- segment shuffle, series head, losses


def shuffle_segments(x: Tensor, perm: Tensor) -> Tensor:
    """Cut B×C×T×H×W clips into S=perm.shape[1] segments; output segment j is input segment perm[b, j]."""
    b, c, t, h, w = x.shape
    s = perm.shape[1]
    if t % s:
        raise ValueError(
            f"DualVar: clip length {t} is not divisible into n_series={s} segments; set clip.frames to a "
            f"multiple of {s}"
        )
    seg = x.reshape(b, c, s, t // s, h, w)
    return seg.gather(2, perm.view(b, 1, s, 1, 1, 1).expand_as(seg)).reshape(b, c, t, h, w)


def unshuffle_slots(series: Tensor, perm: Tensor) -> Tensor:
    """Re-index B×S×D outputs of shuffled input: slot perm[b, j] gets output j (original segment order)."""
    inverse = perm.argsort(dim=1)
    return series.gather(1, inverse.unsqueeze(2).expand_as(series))


class SeriesHead(nn.Module):
    """in→in→ReLU→S·D MLP on the pooled feature, reshaped to S vectors, each L2-normalised."""

    def __init__(self, in_dim: int, n_series: int, series_dim: int) -> None:
        super().__init__()
        self.n_series, self.series_dim = n_series, series_dim
        self.proj = ProjectionHead(in_dim, in_dim, n_series * series_dim, normalize=False)

    def forward(self, f: Tensor) -> Tensor:
        """B×in -> B×S×D unit vectors."""
        return F.normalize(self.proj(f).view(-1, self.n_series, self.series_dim), dim=2)


def tc_loss_in_batch(s1: Tensor, s2: Tensor, temperature: float, gather: Callable | None = None) -> Tensor:
    """L_tc, SimCLR form: NT-Xent over the 2B series sets (B×S×D each) with the averaged similarity."""
    if gather is not None:
        s1, s2 = gather(s1), gather(s2)
    s = torch.cat([s1, s2])
    return nt_xent_from_similarity(averaged_similarity(s, s), temperature)


def tc_loss_queue(q: Tensor, k: Tensor, queue_items: Tensor, temperature: float) -> Tensor:
    """L_tc, MoCo form: q, k B×S×D; queue K×(S·D) of flattened key series; averaged similarity throughout."""
    negatives = queue_items.view(queue_items.shape[0], q.shape[1], q.shape[2]).mean(dim=1)
    # (1/S²)Σ_pq <q_p, k_q> is the dot product of the series means (losses.averaged_similarity).
    return info_nce(q.mean(dim=1), k.mean(dim=1), negatives, temperature)


# ---------------------------------------------------------------- the method


def resolve_rank_clamp(rank_clamp: str | float, core: str) -> float | None:
    """The L_rank clip for ``DualVarParams.rank_clamp``: ``core`` gives the code's choice per core."""
    if rank_clamp == "core":
        # The SimCLR code clips the rank softplus argument at 5; the MoCo code does not (METHODS.md §3(c)).
        return 5.0 if core == "simclr" else None
    if rank_clamp == "off":
        return None
    if isinstance(rank_clamp, str):
        raise ValueError(f"DualVar: rank_clamp {rank_clamp!r} is not 'core', 'off' or a number")
    return float(rank_clamp)


def _params(cfg: "Params") -> DualVarParams:
    return getattr(cfg.pretrain, "dualvar", None) or DualVarParams()


class DualVar(Method):
    """DualVar over any backbone, on a SimCLR or MoCo core; ``use_tc=False`` is the clip-sr ablation."""

    name = "dualvar"
    baseline = "simclr"
    probes = {"acc_rank": "shuffled halves ranked right, L_rank"}

    def __init__(
        self, backbone: nn.Module, *, core: str = "simclr", use_tc: bool = True, dim: int = 128,
        n_series: int = 2, series_dim: int = 64, temperature: float = 0.07, tc_temperature: float = 0.07,
        theta: float = 0.05, rank_weight: float = 0.5, rank_clamp: str | float = "core",
        queue_size: int = 16384, moco_m: float = 0.999, seed: int = 0,
    ) -> None:
        """Build the heads (and, for MoCo, the key encoder and queues); arguments as in DualVarParams."""
        super().__init__(backbone, seed=seed)
        if core not in {"simclr", "moco"}:
            raise ValueError(f"DualVar: unknown core {core!r}; choose from ['moco', 'simclr']")
        self.core, self.use_tc, self.n_series, self.rank_weight = core, use_tc, n_series, rank_weight
        self.t, self.tc_t, self.theta, self.m = temperature, tc_temperature, theta, moco_m
        self.rank_clamp = resolve_rank_clamp(rank_clamp, core)
        feat = backbone.out_dim
        self.clip_head = ProjectionHead(feat, feat, dim)
        self.series_head = SeriesHead(feat, n_series, series_dim)
        self.generator = torch.Generator().manual_seed(seed)
        if core == "moco":
            self.key_backbone = copy.deepcopy(backbone)
            self.key_clip_head = copy.deepcopy(self.clip_head)
            self.key_series_head = copy.deepcopy(self.series_head)
            for online, key in self._encoder_pairs():
                copy_params(online, key)
            self.clip_queue = FeatureQueue(queue_size, dim)
            self.series_queue = FeatureQueue(queue_size, n_series * series_dim)
            with torch.no_grad():  # every series vector of an initial key is a unit vector, as in the code
                q = self.series_queue.queue
                q.copy_(F.normalize(q.view(queue_size, n_series, series_dim), dim=2).view_as(q))

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: "Params", *, n_samples: int) -> "DualVar":
        dataset_keys = {"ds", "rand_flip", "crop_only_p", "jitter", "jitter_p", "blur_p"}
        p = _params(cfg).model_dump(exclude=dataset_keys)
        return cls(backbone, seed=cfg.seed, **p)

    @classmethod
    def make_dataset(cls, records: Sequence[VideoRecord], spec: ClipSpec, cfg: "Params") -> DualVarDataset:
        p = _params(cfg)
        return DualVarDataset(records, spec, stride=p.ds, rand_flip=p.rand_flip)

    def make_augment(self, spec: ClipSpec, cfg: "Params") -> Augment:
        p = _params(cfg)
        return dualvar_augment(full_transform(spec.crop, p), p.crop_only_p)

    def _encoder_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.clip_head, self.key_clip_head),
                (self.series_head, self.key_series_head)]

    def _simclr_terms(self, a: Tensor, b: Tensor, c: Tensor, c_shuffled: Tensor) -> tuple[Tensor, ...]:
        n = a.shape[0]
        f = self.backbone(torch.cat([a, b, c]))  # one batch, as the code (BN statistics over A, B and C)
        za, zb = self.clip_head(f[: 2 * n]).split(n)
        sa, sb, sc = self.series_head(f).split(n)
        loss_clip = nt_xent(za, zb, self.t, gather=gather_with_grad)
        loss_tc = tc_loss_in_batch(sa, sb, self.tc_t, gather=gather_with_grad) if self.use_tc else None
        return loss_clip, loss_tc, sa, sc, self.series_head(self.backbone(c_shuffled))

    def _moco_terms(self, a: Tensor, b: Tensor, c: Tensor, c_shuffled: Tensor) -> tuple[Tensor, ...]:
        fa = self.backbone(a)
        za, sa = self.clip_head(fa), self.series_head(fa)
        with torch.no_grad():
            # Shuffle-BN exchanges key samples across GPUs; it is not applied (on one process there is
            # nothing to exchange; under DDP each key encoder's BN sees its own process's keys).
            fk = self.key_backbone(b)
            zk, sk = self.key_clip_head(fk), self.key_series_head(fk)
        loss_clip = info_nce(za, zk, self.clip_queue.items, self.t)
        loss_tc = tc_loss_queue(sa, sk, self.series_queue.items, self.tc_t) if self.use_tc else None
        with torch.no_grad():
            self.clip_queue.enqueue(gather_with_grad(zk))
            self.series_queue.enqueue(gather_with_grad(sk.flatten(1)))
        sc, s_shuffled = self.series_head(self.backbone(torch.cat([c, c_shuffled]))).split(a.shape[0])
        return loss_clip, loss_tc, sa, sc, s_shuffled

    def training_step(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        a, b, c = batch[:3]
        perm = torch.rand(a.shape[0], self.n_series, generator=self.generator).argsort(dim=1).to(a.device)
        c_shuffled = shuffle_segments(c, perm)
        # The two cores batch clips through the backbone as the code does, which sets BN's batch statistics:
        # SimCLR runs [A; B; C] then shuffled C; MoCo runs A, then keys of B, then [C; shuffled C].
        core = self._simclr_terms if self.core == "simclr" else self._moco_terms
        loss_clip, loss_tc, sa, sc, s_shuffled = core(a, b, c, c_shuffled)
        # L_rank reads the series head only (backbone -> pool -> series head); back to segment order first.
        s_shuffled = unshuffle_slots(s_shuffled, perm)
        margins = [rank_margins(s, s_shuffled) for s in (sa, sc)]  # once: for L_rank and its probe
        rank_a, rank_c = (rank_loss_from_margins(m, self.theta, self.rank_clamp) for m in margins)
        loss = loss_clip + self.rank_weight * (rank_a + rank_c)
        terms = {"loss_clip": loss_clip.item(), "loss_rank_a": rank_a.item(), "loss_rank_c": rank_c.item()}
        swapped = (perm != torch.arange(self.n_series, device=perm.device)).any(dim=1)
        if swapped.any():  # an unshuffled C matches A by construction, so only shuffled ones measure anything
            terms["acc_rank"] = torch.cat([m.detach()[swapped] < 0 for m in margins]).float().mean().item()
        if loss_tc is not None:
            loss = loss + loss_tc
            terms["loss_tc"] = loss_tc.item()
        return loss, {"loss": loss.item(), **terms}

    def on_step_end(self) -> None:
        if self.core == "moco":
            for online, key in self._encoder_pairs():
                ema_update(online, key, self.m)
