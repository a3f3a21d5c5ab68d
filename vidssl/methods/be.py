"""BE: background erasing (Wang et al., CVPR'21), as specified in METHODS.md §4.

MoCo v1 with two additions: the query is the anchor clip with one of its own frames blended into every frame
(x̃_t = (1−λ)x_t + λ·x_r, so a static background gains nothing while motion is kept), and each sample adds one
logit for an intra-video temporal negative (a clip from another time of the same video), encoded by the online
encoder with gradient. Variants (``BEParams.variant``):

- ``moco``: L = CE([q·k, q·Q_1..Q_K, q·n] / τ, target 0); k from the EMA encoder on the positive (same frames as
  the anchor, augmented independently); the queue starts uniform random, not normalised (BE's code).
- ``triplet``: BE's ``be_triplet``: TripletMargin(0.5) on (q, f(x⁺), f(x⁻)) plus the same with the
  batch-reversed negatives; no EMA encoder, no queue.
- ``consistency``: the MSE form for pretext methods, ‖F(x̃) − F(x)‖² on backbone (GAP) features, added with
  weight ``consistency_weight`` to the loss of the registered method ``pretext`` (e.g. VCOP) by
  :class:`BEConsistency`; ``BE.from_config`` builds that wrapper and ``BE.make_dataset`` uses the pretext's data.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.augment import AugmentSpec, augment_clip
from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord, _sample_rng, clip_indices
from vidssl.methods.base import Batch, Method
from vidssl.methods.distributed import gather_with_grad
from vidssl.methods.losses import nce_softmax_loss
from vidssl.methods.params_be import BEParams
from vidssl.methods.queue import FeatureQueue, copy_params, ema_update, moco_logits
from vidssl.methods.views import be_mix

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from vidssl.config import Params


def temporal_negative_start(anchor_start: int, drawn_start: int, n_frames: int, thresh: int = 2) -> int:
    """BE's rule for the intra-video negative: a drawn start closer than ``thresh`` frames to the anchor's is
    shifted by n_frames // 3, wrapping around the video (BE's ``thresh = 2``, i.e. |Δ| < 2)."""
    if abs(drawn_start - anchor_start) < thresh:
        return (drawn_start + n_frames // 3) % n_frames
    return drawn_start


def wrapped_indices(start: int, frames: int, stride: int, n_frames: int) -> list[int]:
    """Clip indices that loop back to the first frame past the end (BE reads a shifted negative this way)."""
    return [(start + i * stride) % n_frames for i in range(frames)]


class BETripletDataset(ClipDataset):
    """(anchor, positive, negative, label, index): anchor and positive read the same frames and are augmented
    independently; the negative is another time of the same video (:func:`temporal_negative_start`)."""

    def __init__(self, records: Sequence[VideoRecord], spec: ClipSpec, augment: AugmentSpec, thresh: int = 2):
        super().__init__(records, spec)
        self.augment, self.thresh = augment, thresh

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        rng = _sample_rng()
        rec, s = self.records[index], self.spec
        max_start = max(rec.n_frames - ((s.frames - 1) * s.stride + 1), 0)
        a = int(rng.integers(0, max_start + 1))
        n = temporal_negative_start(a, int(rng.integers(0, max_start + 1)), rec.n_frames, self.thresh)
        clip = self.load(index, clip_indices(a, s.frames, s.stride, rec.n_frames))
        n_idx = (clip_indices if n <= max_start else wrapped_indices)(n, s.frames, s.stride, rec.n_frames)
        anchor, positive = augment_clip(clip, self.augment, rng), augment_clip(clip, self.augment, rng)
        negative = augment_clip(self.load(index, n_idx), self.augment, rng)
        return anchor, positive, negative, rec.label, index


def be_params(cfg: Params) -> BEParams:
    """``cfg.pretrain.be``, or BE's defaults before the section is wired into the config."""
    return getattr(cfg.pretrain, "be", None) or BEParams()


def _pretext_class(name: str) -> type[Method]:
    from vidssl.methods.registry import METHODS  # late: the registry imports this module

    if name == "be" or name not in METHODS:
        raise ValueError(
            f"pretrain.be.pretext is {name!r}; set it to a registered method other than 'be' "
            f"(one of {sorted(set(METHODS) - {'be'})})"
        )
    return METHODS[name]


class BE(Method):
    """BE over any backbone: MoCo v1 (``variant='moco'``) or the triplet form (``variant='triplet'``)."""

    name = "be"
    baseline = "moco"
    probes = {"acc_temporal": "anchor nearer its positive than its own video's other-time clip"}

    def __init__(
        self,
        backbone: nn.Module,
        *,
        variant: str = "moco",
        temperature: float = 0.07,
        proj_dim: int = 128,
        queue_size: int = 3569,
        key_momentum: float = 0.999,
        be_lambda: float = 0.3,
        triplet_margin: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__(backbone)
        if variant not in ("moco", "triplet"):
            raise ValueError(
                f"BE variant {variant!r} is not a BE model; use 'moco' or 'triplet' (the 'consistency' form wraps "
                "another method: BE.from_config builds it, or use BEConsistency directly)"
            )
        self.variant, self.t, self.be_lambda, self.key_momentum = (
            variant,
            temperature,
            be_lambda,
            key_momentum,
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.head = nn.Linear(backbone.out_dim, proj_dim)  # BE: Linear(C→128) then L2 norm
        if variant == "moco":
            self.key_backbone, self.key_head = copy.deepcopy(backbone), copy.deepcopy(self.head)
            copy_params(backbone, self.key_backbone)
            copy_params(self.head, self.key_head)
            self.queue = FeatureQueue(queue_size, proj_dim, normalize_init=False)
        else:
            self.triplet = nn.TripletMarginLoss(margin=triplet_margin, p=2)

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: Params, *, n_samples: int) -> Method:
        p = be_params(cfg)
        if p.variant == "consistency":
            inner = _pretext_class(p.pretext).from_config(backbone, cfg, n_samples=n_samples)
            return BEConsistency(inner, weight=p.consistency_weight, be_lambda=p.be_lambda, seed=cfg.seed)
        keys = {"temperature", "proj_dim", "queue_size", "key_momentum", "be_lambda", "triplet_margin"}
        return cls(backbone, variant=p.variant, seed=cfg.seed, **p.model_dump(include=keys))

    @classmethod
    def make_dataset(cls, records: Sequence[VideoRecord], spec: ClipSpec, cfg: Params) -> Dataset:
        p = be_params(cfg)
        if p.variant == "consistency":
            return _pretext_class(p.pretext).make_dataset(records, spec, cfg)
        if p.stride:
            spec = dataclasses.replace(spec, stride=p.stride)  # BE pretrains at stride 4
        aug = AugmentSpec(crop=spec.crop, jitter=tuple(p.jitter), jitter_p=p.jitter_p, rotate=p.rotate)
        return BETripletDataset(records, spec, aug, thresh=p.neg_thresh)

    def draw_lambda(self) -> float:
        """λ ~ U(0, λmax), once per batch."""
        return float(torch.rand((), generator=self.generator)) * self.be_lambda

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def project_key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_head(self.key_backbone(x)), dim=1)

    def training_step(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        anchor, positive, negative = batch[:3]
        lam = self.draw_lambda()
        q = self.project(be_mix(anchor, lam, self.generator))
        n = self.project(negative)  # online encoder, with gradient
        if self.variant == "moco":
            k = self.project_key(positive)
            logits = moco_logits(q, k, self.queue.items, self.t, extra_negatives=n)
            loss = nce_softmax_loss(logits)
            self.queue.enqueue(gather_with_grad(k))
            pos_prob = logits.detach().softmax(dim=1)[:, 0].mean().item()
            return loss, {
                "loss": loss.item(),
                "loss_nce": loss.item(),
                "pos_prob": pos_prob,
                # the anchor's own-video, other-time clip is its last logit
                "acc_temporal": (logits[:, 0] > logits[:, -1]).float().mean().item(),
                "be_lambda": lam,
            }
        p = self.project(positive)
        intra = self.triplet(q, p, n)
        inter = self.triplet(q, p, n.flip(0))  # other videos' negatives, by reversing the batch
        loss = intra + inter
        with torch.no_grad():
            temporal = (F.pairwise_distance(q, p) < F.pairwise_distance(q, n)).float().mean()
        return loss, {
            "loss": loss.item(),
            "loss_intra": intra.item(),
            "loss_inter": inter.item(),
            "acc_temporal": temporal.item(),
            "be_lambda": lam,
        }

    def on_step_end(self) -> None:
        if self.variant == "moco":
            ema_update(self.backbone, self.key_backbone, self.key_momentum)
            ema_update(self.head, self.key_head, self.key_momentum)


def first_clips(batch: Any) -> torch.Tensor:
    """The first clip tensor of a batch (B×C×T×H×W; a stacked B×N×C×T×H×W is flattened to (B·N)×C×T×H×W).

    Raises:
        ValueError: if the batch holds no tensor with at least 5 dimensions.
    """
    items = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    for item in items:
        if torch.is_tensor(item) and item.dim() >= 5:
            return item.flatten(0, item.dim() - 5)
        if isinstance(item, (list, tuple)):
            try:
                return first_clips(item)
            except ValueError:
                continue
    raise ValueError("BEConsistency: the batch holds no clip tensor (B×C×T×H×W); check the method's dataset")


class BEConsistency(Method):
    """BE's MSE form for any method: loss = inner loss + w · MSE(F(x̃), F(x)).

    F is the shared backbone's pooled feature, x the first clip tensor of the inner method's batch
    (:func:`first_clips`) and x̃ its BE blend with λ ~ U(0, λmax) once per batch. Both branches carry gradient,
    as BE's README writes the loss; the inner loss keeps the features from collapsing.
    """

    name = "be_consistency"

    def __init__(self, inner: Method, *, weight: float = 1.0, be_lambda: float = 0.3, seed: int = 0) -> None:
        super().__init__(inner.backbone)
        self.inner, self.weight, self.be_lambda = inner, weight, be_lambda
        self.generator = torch.Generator().manual_seed(seed + 7919)  # independent of the inner method's draws

    @property
    def probes(self) -> dict[str, str]:  # type: ignore[override]
        return self.inner.probes

    def training_step(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, terms = self.inner.training_step(batch, epoch)
        x = first_clips(batch)
        lam = float(torch.rand((), generator=self.generator)) * self.be_lambda
        mse = F.mse_loss(self.backbone(be_mix(x, lam, self.generator)), self.backbone(x))
        total = loss + self.weight * mse
        extra = {
            "loss": total.item(),
            "loss_pretext": loss.item(),
            "loss_be_mse": mse.item(),
            "be_lambda": lam,
        }
        return total, {**terms, **extra}

    def make_dataset(  # type: ignore[override]
        self, records: Sequence[VideoRecord], spec: ClipSpec, cfg: Params
    ) -> Dataset:
        """The inner method's dataset (an instance method: the training loop calls it on the built method)."""
        return type(self.inner).make_dataset(records, spec, cfg)

    def on_step_end(self) -> None:
        self.inner.on_step_end()

    def views(self, clips: torch.Tensor) -> list[torch.Tensor]:
        return self.inner.views(clips)

    @torch.no_grad()
    def embed(self, clips: torch.Tensor, feature: str = "pool", merged: bool = False) -> torch.Tensor:
        return self.inner.embed(clips, feature, merged)
