"""The shared method interface: a backbone plus whatever its loss needs.

A method overrides ``training_step`` (and optionally the hooks below); optimisers, schedules, checkpoints and
logging live in ``vidssl.engine.train`` so this base stays small (STYLE.md rule 2).

Data reaches a method in two steps. Its dataset (:meth:`Method.make_dataset`) samples frames and decodes them:
uint8 clips at the loader's resize, no crop, no colour. Its augmentation (:meth:`Method.make_augment`) turns
that batch, once on the training device, into the views ``training_step`` takes, batched, with parameters drawn
per clip from :attr:`Method.augment_generator` (saved with the method, so a resumed run draws the same).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from vidssl.config import Params
    from vidssl.data.augment import AugmentSpec
    from vidssl.data.clips import ClipSpec, VideoRecord

Batch = tuple[Any, ...]
# A loader batch (moved to the device) and the method's augmentation generator -> the batch training_step takes.
Augment = Callable[[Batch, torch.Generator], Batch]

# Offset of the augmentation generator's seed from the method's seed: its draws stay apart from the method's
# own generator (bank noise, shuffles, mix weights), which is seeded with the seed itself.
AUGMENT_SEED_OFFSET = 0x5EED


def augment_clips(clips: list[torch.Tensor], spec: "AugmentSpec", generator: torch.Generator,
                  params: list[Any] | None = None) -> list[torch.Tensor]:
    """Augment batches of clips on their device in one pass (``vidssl.data.batch_augment``), each drawn for
    the global batch under data parallelism so the ranks do not crop and jitter their clips alike."""
    from vidssl.data.batch_augment import augment_views
    from vidssl.methods.distributed import rank, world_size

    return augment_views(clips, spec, generator, params=params, world=world_size(), rank=rank())


def crop_first(spec: "AugmentSpec") -> Augment:
    """Augmentation of batches (clips, ...): ``spec`` on the clips, the rest passed through."""

    def augment(batch: Batch, generator: torch.Generator) -> Batch:
        return (augment_clips([batch[0]], spec, generator)[0], *batch[1:])

    return augment


def pool_feature(fmap: torch.Tensor, kind: str) -> torch.Tensor:
    """Turn a B×C×T×H×W map into a retrieval feature.

    ``gap``: global average pool (B×C). ``pool``: IIC's retrieval feature, MaxPool3d((1,2,2)) over the map then
    flattened (9216-d for R3D at 16×112²; METHODS.md §1.2).
    """
    if kind == "gap":
        return fmap.mean(dim=(2, 3, 4))
    if kind == "pool":
        return F.max_pool3d(fmap, kernel_size=(1, 2, 2), stride=(1, 2, 2)).flatten(1)
    raise ValueError(f"unknown feature kind {kind!r}; choose from ['gap', 'pool']")


def sample_views(augment: Augment, sample: Batch, generator: torch.Generator) -> Batch:
    """The views one dataset sample becomes in training (a batch of one through ``augment``, on the CPU), with
    clips as uint8 3×T×S×S (rounded to 1/255 steps) for inspection; other entries as the batch holds them."""
    from torch.utils.data import default_collate

    from vidssl.data.clips import to_float

    batch = tuple(to_float(b) if torch.is_tensor(b) and b.dim() >= 5 else b for b in default_collate([sample]))
    out = augment(batch, generator)
    def one(b: Any) -> Any:
        if not torch.is_tensor(b):
            return b
        if b.is_floating_point() and b.dim() >= 5:
            return (b[0] * 255).round().to(torch.uint8)
        return b[0].item() if b.dim() == 1 else b[0]

    return tuple(one(b) for b in out)


class Method(nn.Module):
    """Base class of every self-supervised method."""

    name = "method"
    # The method a seed method is compared against (its paper's own baseline); None for baselines.
    baseline: str | None = None
    # Logged accuracies that measure what the method's own add-ons ask for, each with a short description
    # (vidssl.evaluation.probe scores them on held-out videos); empty for plain instance discrimination.
    probes: dict[str, str] = {}
    # True where some trainable parameters take no gradient in some steps (heads switched on at a given epoch):
    # DistributedDataParallel must then search the graph for them every step, which costs the others time.
    unused_parameters: bool = False

    def __init__(self, backbone: nn.Module, *, seed: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.augment_generator = torch.Generator().manual_seed(seed + AUGMENT_SEED_OFFSET)

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: "Params", *, n_samples: int) -> "Method":
        """Build from the typed params (each method reads its own section)."""
        raise NotImplementedError(f"{cls.__name__} does not define from_config")

    @classmethod
    def make_dataset(cls, records: Sequence["VideoRecord"], spec: "ClipSpec", cfg: "Params") -> "Dataset":
        """The pretraining dataset; default: one random clip per video, yielding (clip, label, index).

        Datasets sample frames and decode them only: clips come out uint8 at the loader's resize, uncropped,
        and the training loop moves every uint8 5-D tensor to the device as float in [0, 1], then hands the
        batch to :meth:`make_augment`'s function. Methods that need several clips per sample override this.
        """
        from vidssl.data.clips import ClipDataset

        return ClipDataset(records, spec, crop=False)

    def make_augment(self, spec: "ClipSpec", cfg: "Params") -> Augment:
        """The function that makes a loader batch into the views ``training_step`` takes, on the batch's
        device; default: one random ``spec.crop`` crop per clip (IIC's only augmentation)."""
        from vidssl.data.augment import AugmentSpec

        return crop_first(AugmentSpec(crop=spec.crop))

    def training_step(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss to minimise and the named terms to log."""
        raise NotImplementedError

    def forward(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """One training step's loss and terms (:meth:`training_step`): the call DistributedDataParallel wraps."""
        return self.training_step(batch, epoch)

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The states of the method's own random generators (bank noise, mix weights, shuffles), saved with its
        weights so that a resumed run draws exactly what the uninterrupted run would have."""
        return {k: v.get_state() for k, v in vars(self).items() if isinstance(v, torch.Generator)}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        for name, value in state.items():
            getattr(self, name).set_state(value)

    def on_step_end(self) -> None:
        """Called after each optimiser step (momentum encoders update here)."""

    def views(self, clips: torch.Tensor) -> list[torch.Tensor]:
        """The inputs whose features are concatenated for retrieval ('merged' views); default: the clip only."""
        return [clips]

    @torch.no_grad()
    def embed(self, clips: torch.Tensor, feature: str = "pool", merged: bool = False) -> torch.Tensor:
        """Retrieval feature of a batch of clips (B×3×T×H×W -> B×D)."""
        inputs = self.views(clips) if merged else [clips]
        return torch.cat([pool_feature(self.backbone.forward_map(x), feature) for x in inputs], dim=1)
