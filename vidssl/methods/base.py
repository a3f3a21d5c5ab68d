"""The shared method interface: a backbone plus whatever its loss needs.

A method overrides ``training_step`` (and optionally the hooks below); optimisers, schedules, checkpoints and
logging live in ``vidssl.engine.train`` so this base stays small (STYLE.md rule 2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from vidssl.config import Params
    from vidssl.data.clips import ClipSpec, VideoRecord

Batch = tuple[Any, ...]


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

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    @classmethod
    def from_config(cls, backbone: nn.Module, cfg: "Params", *, n_samples: int) -> "Method":
        """Build from the typed params (each method reads its own section)."""
        raise NotImplementedError(f"{cls.__name__} does not define from_config")

    @classmethod
    def make_dataset(cls, records: Sequence["VideoRecord"], spec: "ClipSpec", cfg: "Params") -> "Dataset":
        """The pretraining dataset; default: one random clip per video, yielding (clip, label, index).

        Methods that need several clips or views per sample override this; clips come out uint8 and the
        training loop moves every uint8 5-D tensor to the device as float in [0, 1] before training_step.
        """
        from vidssl.data.clips import ClipDataset

        return ClipDataset(records, spec)

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
