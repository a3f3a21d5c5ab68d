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
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord, _sample_rng
from vidssl.methods.base import Augment, Batch, Method, augment_clips
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


def looped_indices(start: int, frames: int, stride: int, n_frames: int) -> list[int]:
    """Clip indices read as BE's loader reads them: step by ``stride`` and go back to the first frame whenever the
    next step would pass the end (so a clip near the end loops to the video's start)."""
    out, p = [], start
    for _ in range(frames):
        out.append(p)
        p = p + stride if p + stride < n_frames else 0
    return out


def start_range(n_frames: int, frames: int, stride: int, window: int) -> int:
    """The last start BE's sampler draws (uniform from 0).

    BE's code calls ``_sample_indices`` with its default ``new_length=32`` rather than the clip's length, so a
    start leaves room for ``window`` samples at ``stride``: every clip starts in the first N − 32·stride frames,
    and on a video shorter than that every anchor starts at the first frame (its negative then N // 3 later).
    ``window=0`` leaves room for the clip's own span instead.
    """
    span = window * stride if window else (frames - 1) * stride + 1
    return max(n_frames - span, 0)


class BETripletDataset(ClipDataset):
    """(clip, other, label, index), uncropped: the anchor's frames and the negative's; the negative is another
    time of the same video (:func:`temporal_negative_start`), or with ``negative="other"`` a clip of another
    video drawn by the same start rule (BE's MoCo baseline). :func:`triplet_augment` makes the anchor and the
    positive (the same frames, augmented independently) and the negative on the training device."""

    def __init__(
        self, records: Sequence[VideoRecord], spec: ClipSpec, thresh: int = 2,
        window: int = 32, negative: Literal["video", "other"] = "video",
    ) -> None:
        super().__init__(records, spec, crop=False)
        if negative not in ("video", "other"):
            raise ValueError(f"BE negative {negative!r}: use 'video' (BE) or 'other' (its MoCo baseline)")
        if negative == "other" and len(records) < 2:
            raise ValueError("BE's MoCo baseline draws its negative from another video; the list holds only one")
        self.thresh, self.window, self.negative = thresh, window, negative

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        rng = _sample_rng()
        rec, s = self.records[index], self.spec
        last = start_range(rec.n_frames, s.frames, s.stride, self.window)
        a = int(rng.integers(0, last + 1))
        clip = self.load(index, looped_indices(a, s.frames, s.stride, rec.n_frames))
        if self.negative == "video":
            n = temporal_negative_start(a, int(rng.integers(0, last + 1)), rec.n_frames, self.thresh)
            other = self.load(index, looped_indices(n, s.frames, s.stride, rec.n_frames))
        else:
            j = int(rng.integers(0, len(self.records) - 1))
            j += j >= index  # uniform over the other videos
            r = self.records[j]
            n = int(rng.integers(0, start_range(r.n_frames, s.frames, s.stride, self.window) + 1))
            other = self.load(j, looped_indices(n, s.frames, s.stride, r.n_frames))
        return clip, other, rec.label, index


def be_augment_spec(p: BEParams, crop: int) -> AugmentSpec:
    """BE's clip-consistent augmentation: rotation, random crop, colour jitter (METHODS.md §4(a))."""
    return AugmentSpec(crop=crop, jitter=tuple(p.jitter), jitter_p=p.jitter_p, rotate=p.rotate)


def triplet_augment(spec: AugmentSpec) -> Augment:
    """(clip, other, label, index) -> (anchor, positive, negative, label, index): anchor and positive are two
    independent draws of ``spec`` on the same frames, the negative one on the other clip."""

    def augment(batch: Batch, generator: torch.Generator) -> Batch:
        clip, other = batch[:2]
        anchor, positive, negative = augment_clips([clip, clip, other], spec, generator)
        return (anchor, positive, negative, *batch[2:])

    return augment


def be_params(cfg: Params, section: str = "be") -> BEParams:
    """``cfg.pretrain.<section>`` (``be``, or ``be_moco`` for its baseline), else BE's defaults."""
    return getattr(cfg.pretrain, section, None) or BEParams()


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
    baseline = "be_moco"
    probes = {"acc_temporal": "anchor nearer its positive than its own video's other-time clip"}
    negative_term = "acc_temporal"

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
        mix: bool = True,
    ) -> None:
        super().__init__(backbone, seed=seed)
        self.mix = mix  # False: the query is the plain anchor (BE's MoCo baseline)
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
        return BETripletDataset(records, spec, thresh=p.neg_thresh, window=p.start_window)

    def make_augment(self, spec: ClipSpec, cfg: Params) -> Augment:
        return triplet_augment(be_augment_spec(be_params(cfg, self.name), spec.crop))

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
        lam = self.draw_lambda() if self.mix else 0.0
        q = self.project(be_mix(anchor, lam, self.generator) if self.mix else anchor)
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
                # the extra negative (BE: the anchor's own video at another time) is the last logit
                self.negative_term: (logits[:, 0] > logits[:, -1]).float().mean().item(),
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
    """BE's MSE form for any method: loss = inner loss + w · ‖F(x̃) − F(x)‖² (batch mean).

    F is the shared backbone's pooled feature, x the first clip tensor of the inner method's batch
    (:func:`first_clips`) and x̃ its BE blend with λ ~ U(0, λmax) once per batch. Both branches carry gradient,
    as BE's README writes the loss; the inner loss keeps the features from collapsing.
    """

    name = "be_consistency"

    def __init__(self, inner: Method, *, weight: float = 1.0, be_lambda: float = 0.3, seed: int = 0) -> None:
        super().__init__(inner.backbone, seed=seed)
        self.inner, self.weight, self.be_lambda = inner, weight, be_lambda
        self.generator = torch.Generator().manual_seed(seed + 7919)  # independent of the inner method's draws

    @property
    def probes(self) -> dict[str, str]:  # type: ignore[override]
        return self.inner.probes

    def training_step(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, terms = self.inner.training_step(batch, epoch)
        x = first_clips(batch)
        lam = float(torch.rand((), generator=self.generator)) * self.be_lambda
        # ‖F(x̃) − F(x)‖²: summed over the feature, averaged over the batch (a per-element mean is C× weaker)
        mse = (self.backbone(be_mix(x, lam, self.generator)) - self.backbone(x)).pow(2).sum(1).mean()
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

    def make_augment(self, spec: ClipSpec, cfg: Params) -> Augment:
        """The inner method's augmentation."""
        return self.inner.make_augment(spec, cfg)

    def on_step_end(self) -> None:
        self.inner.on_step_end()

    def views(self, clips: torch.Tensor) -> list[torch.Tensor]:
        return self.inner.views(clips)

    @torch.no_grad()
    def embed(self, clips: torch.Tensor, feature: str = "pool", merged: bool = False) -> torch.Tensor:
        return self.inner.embed(clips, feature, merged)


class BEMoCo(BE):
    """BE's own MoCo baseline: BE without the blend, its extra negative from another video.

    As BE's code runs ``pt_method=moco``: BE's sampler, augmentation, head, EMA key encoder, queue and one extra
    negative per sample. BE's gain over it is what its two additions buy; ``pretrain.be_moco`` holds its settings
    (variant moco)."""

    name = "be_moco"
    baseline = None
    probes: dict[str, str] = {}
    negative_term = "acc_other"

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: Params, *, n_samples: int) -> Method:
        p = be_params(cfg, "be_moco")
        if p.variant != "moco":
            raise ValueError(f"pretrain.be_moco.variant is {p.variant!r}; BE's MoCo baseline is 'moco' only")
        keys = {"temperature", "proj_dim", "queue_size", "key_momentum", "be_lambda"}
        return cls(backbone, variant="moco", seed=cfg.seed, mix=False, **p.model_dump(include=keys))

    @classmethod
    def make_dataset(cls, records: Sequence[VideoRecord], spec: ClipSpec, cfg: Params) -> Dataset:
        p = be_params(cfg, "be_moco")
        if p.stride:
            spec = dataclasses.replace(spec, stride=p.stride)
        return BETripletDataset(records, spec, window=p.start_window, negative="other")
