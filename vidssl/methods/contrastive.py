"""Two-view contrastive baselines over a pluggable negative core: SimCLR, MoCo, CMC (METHODS.md §6).

Each sample gives two clips of the same video (independent random starts and augmentations); they are the
positive pair, as in the SimCLR/MoCo video baselines. The core decides where negatives come from:

- ``simclr``: the other clips of the (gathered) batch, NT-Xent;
- ``moco``: a FIFO queue of keys from an EMA key encoder (MoCo v1/v2);
- ``cmc``: CMC's two memory banks with K noise rows per sample (IIC's banks, raw features).

Two add-ons work with every core, which is how the seeds' composition claim is realised:

- ``be``: background erasing on the query view, x̃ = (1−λ)x + λ·x_r (BE, METHODS.md §4(a));
- ``intra_neg``: the query clip with its motion destroyed (repeat one frame / swap chunks, IIC), encoded without
  gradient by the key path and appended as one extra negative per sample: moco via ``extra_negatives``, simclr as
  one extra column per row of the NT-Xent matrix, cmc through a third memory bank as in IIC.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord, _sample_rng, random_clip
from vidssl.methods.bank import MemoryBank, bank_logits
from vidssl.methods.base import Augment, Batch, Method, augment_clips
from vidssl.methods.distributed import gather_with_grad
from vidssl.methods.losses import nce_softmax_loss, nt_xent
from vidssl.methods.params_contrastive import ContrastiveParams
from vidssl.methods.queue import FeatureQueue, copy_params, ema_update, moco_logits
from vidssl.methods.views import be_mix, repeat_frame, shuffle_chunks
from vidssl.models.heads import ProjectionHead

if TYPE_CHECKING:
    from vidssl.config import Params

CORES = ("simclr", "moco", "cmc")
INTRA_NEGS = ("none", "repeat", "shuffle")


class TwoClipDataset(ClipDataset):
    """Two clips per video at independent random starts, uncropped: (x1, x2, label, index); each is augmented
    on its own on the training device (:meth:`Contrastive.make_augment`)."""

    def __init__(self, records: Sequence[VideoRecord], spec: ClipSpec) -> None:
        super().__init__(records, spec, crop=False)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int, int]:
        rng = _sample_rng()
        rec, s = self.records[index], self.spec
        x1, x2 = (self.load(index, random_clip(rec.n_frames, s.frames, s.stride, rng)) for _ in range(2))
        return x1, x2, rec.label, index


def augment_spec(p: ContrastiveParams, crop: int) -> AugmentSpec:
    """The per-clip augmentation a params section asks for."""
    return AugmentSpec(
        crop=crop,
        scale=tuple(p.scale) if p.scale else None,
        flip=p.flip,
        jitter=tuple(p.jitter) if p.jitter else None,
        jitter_p=p.jitter_p,
        grayscale_p=p.grayscale_p,
        blur_p=p.blur_p,
    )


def nt_xent_extra(z1: Tensor, z2: Tensor, extra: Tensor, temperature: float) -> Tensor:
    """NT-Xent over [z1; z2] with one extra negative column per row: row i and row i+N both get ``extra[i]``.

    Args:
        z1: (N, D) view-1 embeddings; z2: (N, D) view-2 embeddings, positives of z1 row by row.
        extra: (N, D) per-sample negatives (the intra-negative of sample i serves both of its rows).
        temperature: τ.

    Returns:
        Scalar loss, mean over the 2N rows.
    """
    n = z1.shape[0]
    z = torch.cat([z1, z2], dim=0)
    sim = (z @ z.T / temperature).masked_fill(
        torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf")
    )
    col = (z * torch.cat([extra, extra], dim=0)).sum(dim=1, keepdim=True) / temperature
    target = (torch.arange(2 * n, device=z.device) + n) % (2 * n)
    return F.cross_entropy(torch.cat([sim, col], dim=1), target)


class Contrastive(Method):
    """Two-view contrastive learning with a ``core`` ∈ {simclr, moco, cmc} and optional BE / intra-negatives."""

    name = "contrastive"
    fixed_core: str | None = None  # set by the registered subclasses

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_samples: int,
        core: str = "simclr",
        temperature: float = 0.07,
        proj_dim: int = 128,
        proj_hidden: int = 0,
        queue_size: int = 16384,
        key_momentum: float = 0.999,
        nce_k: int = 1024,
        nce_m: float = 0.5,
        cmc_normalize: bool = False,
        be: bool = False,
        be_lambda: float = 0.3,
        intra_neg: str = "none",
        seed: int = 0,
    ) -> None:
        super().__init__(backbone, seed=seed)
        if core not in CORES:
            raise ValueError(f"unknown contrastive core {core!r}; choose from {list(CORES)}")
        if intra_neg not in INTRA_NEGS:
            raise ValueError(f"unknown intra_neg {intra_neg!r}; choose from {list(INTRA_NEGS)}")
        self.core, self.t, self.intra_neg = core, temperature, intra_neg
        self.be, self.be_lambda = be, be_lambda
        self.generator = torch.Generator().manual_seed(seed)
        dim = backbone.out_dim
        if core == "cmc":
            # IIC/CMC bank the raw GAP feature: no projection head.
            self.head: nn.Module = nn.Identity()
            self.cmc_normalize, self.k = cmc_normalize, min(nce_k, n_samples)
            self.bank1 = MemoryBank(n_samples, dim, momentum=nce_m, seed=seed)
            self.bank2 = MemoryBank(n_samples, dim, momentum=nce_m, seed=seed + 1)
            self.bank_neg = (
                MemoryBank(n_samples, dim, momentum=nce_m, seed=seed + 2) if intra_neg != "none" else None
            )
            return
        self.head = ProjectionHead(dim, proj_hidden or dim, proj_dim)
        if core == "moco":
            self.key_momentum = key_momentum
            self.key_backbone, self.key_head = copy.deepcopy(backbone), copy.deepcopy(self.head)
            copy_params(backbone, self.key_backbone)
            copy_params(self.head, self.key_head)
            self.queue = FeatureQueue(queue_size, proj_dim)

    # ------------------------------------------------------------ config

    @classmethod
    def params(cls, cfg: Params) -> ContrastiveParams:
        """This method's section of ``cfg.pretrain`` (``pretrain.<name>``) with ``core`` resolved.

        Raises:
            ValueError: if the section names a core other than this registered method's.
        """
        p = getattr(cfg.pretrain, cls.name, None) or ContrastiveParams()
        core = cls.fixed_core or p.core or "simclr"
        if p.core is not None and p.core != core:
            raise ValueError(
                f"pretrain.{cls.name}.core is {p.core!r} but method {cls.name!r} uses core {core!r}; "
                f"remove the key or set it to {core!r}"
            )
        return p.model_copy(update={"core": core})

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: Params, *, n_samples: int) -> Contrastive:
        p = cls.params(cfg)
        aug_keys = {"scale", "flip", "jitter", "jitter_p", "grayscale_p", "blur_p"}
        return cls(backbone, n_samples=n_samples, seed=cfg.seed, **p.model_dump(exclude=aug_keys))

    @classmethod
    def make_dataset(cls, records: Sequence[VideoRecord], spec: ClipSpec, cfg: Params) -> TwoClipDataset:
        return TwoClipDataset(records, spec)

    def make_augment(self, spec: ClipSpec, cfg: Params) -> Augment:
        """Both clips of a sample through ``pretrain.<name>``'s augmentation, each with its own draw."""
        aug = augment_spec(type(self).params(cfg), spec.crop)

        def augment(batch: Batch, generator: torch.Generator) -> Batch:
            x1, x2 = augment_clips(list(batch[:2]), aug, generator)
            return (x1, x2, *batch[2:])

        return augment

    # ------------------------------------------------------------ pieces

    def draw_lambda(self) -> float:
        """λ ~ U(0, λmax), once per batch (BE)."""
        return float(torch.rand((), generator=self.generator)) * self.be_lambda

    def negative(self, x: Tensor) -> Tensor:
        """The intra-negative of clips ``x`` (IIC: one frame repeated, or two of 4 chunks swapped)."""
        if self.intra_neg == "repeat":
            return repeat_frame(x, self.generator)
        return shuffle_chunks(x, 4, self.generator)

    def embed_query(self, x: Tensor) -> Tensor:
        f = self.head(self.backbone(x))
        if self.core == "cmc" and self.cmc_normalize:
            f = F.normalize(f, dim=1)
        return f

    @torch.no_grad()
    def embed_key(self, x: Tensor) -> Tensor:
        """The key path: the EMA encoder for moco, the online encoder without gradient otherwise."""
        if self.core == "moco":
            return self.key_head(self.key_backbone(x))
        return self.embed_query(x)

    # ------------------------------------------------------------ cores

    def _simclr(self, q_in: Tensor, x2: Tensor, neg: Tensor | None, index: Tensor) -> dict[str, Tensor]:
        z1, z2 = self.embed_query(q_in), self.embed_query(x2)
        if neg is None:
            return {"loss_nce": nt_xent(z1, z2, self.t, gather=gather_with_grad)}
        n = self.embed_key(neg)
        return {
            "loss_nce": nt_xent_extra(gather_with_grad(z1), gather_with_grad(z2), gather_with_grad(n), self.t)
        }

    def _moco(self, q_in: Tensor, x2: Tensor, neg: Tensor | None, index: Tensor) -> dict[str, Tensor]:
        q, k = self.embed_query(q_in), self.embed_key(x2)
        extra = self.embed_key(neg) if neg is not None else None
        logits = moco_logits(q, k, self.queue.items, self.t, extra_negatives=extra)
        self.queue.enqueue(gather_with_grad(k))  # `items` was a copy, so this does not touch the logits
        return {"loss_nce": nce_softmax_loss(logits)}

    def _cmc(self, q_in: Tensor, x2: Tensor, neg: Tensor | None, index: Tensor) -> dict[str, Tensor]:
        v1, v2 = self.embed_query(q_in), self.embed_query(x2)
        idx = self.bank1.sample(index, self.k, generator=self.generator).to(v1.device)
        terms = {
            "loss_view1": self._bank_loss(v1, self.bank2, idx),
            "loss_view2": self._bank_loss(v2, self.bank1, idx),
        }
        if self.bank_neg is not None:
            self.bank_neg.update(index, self.embed_key(neg))
        self.bank1.update(index, v1.detach())
        self.bank2.update(index, v2.detach())
        return terms

    def _bank_loss(self, query: Tensor, bank: MemoryBank, idx: Tensor) -> Tensor:
        logits = bank_logits(query, bank.rows(idx), self.t)
        if self.bank_neg is not None:  # IIC: the negatives' bank rows join both views' losses
            logits = torch.cat([logits, bank_logits(query, self.bank_neg.rows(idx), self.t)], dim=1)
        return nce_softmax_loss(logits)

    # ------------------------------------------------------------ hooks

    def training_step(self, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        x1, x2, _, index = batch
        index = index.to(x1.device)
        # The intra-negative is built from the un-mixed query clip, as IIC builds it from view 1.
        neg = self.negative(x1) if self.intra_neg != "none" else None
        lam = self.draw_lambda() if self.be else 0.0
        q_in = be_mix(x1, lam, self.generator) if self.be else x1
        terms = {"simclr": self._simclr, "moco": self._moco, "cmc": self._cmc}[self.core](
            q_in, x2, neg, index
        )
        loss = torch.stack(list(terms.values())).sum()
        logged = {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        if self.be:
            logged["be_lambda"] = lam
        return loss, logged

    def on_step_end(self) -> None:
        if self.core == "moco":
            ema_update(self.backbone, self.key_backbone, self.key_momentum)
            ema_update(self.head, self.key_head, self.key_momentum)


class SimCLR(Contrastive):
    """SimCLR video baseline: in-batch NT-Xent (DualVar's SimCLR core)."""

    name = "simclr"
    fixed_core = "simclr"


class MoCo(Contrastive):
    """MoCo video baseline: EMA key encoder + FIFO queue (DualVar's MoCo core)."""

    name = "moco"
    fixed_core = "moco"


class CMC(Contrastive):
    """CMC baseline: two memory banks over two clips of a video, raw backbone features (IIC without intra-neg)."""

    name = "cmc"
    fixed_core = "cmc"
