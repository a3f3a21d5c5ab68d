"""Params of the two-view contrastive baselines (SimCLR, MoCo, CMC) and their BE / intra-negative add-ons.

No torch import here: config parsing must stay fast. Defaults follow the papers' video baselines: DualVar's
SimCLR/MoCo cores (τ 0.07, 512→512→128 head, queue 16384, EMA 0.999, its colour jitter and blur) and IIC's CMC
banks (K 1024 noise samples, momentum 0.5, raw features).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vidssl.params_base import Jitter, Section


class ContrastiveParams(Section):
    """One section per registered baseline (``pretrain.simclr``, ``pretrain.moco``, ``pretrain.cmc``).

    ``core`` None means the configured method's own core (simclr/moco/cmc); if set it must match that method.
    The other cores' fields are ignored.
    """

    core: Literal["simclr", "moco", "cmc"] | None = None
    temperature: float = Field(0.07, gt=0)
    # simclr / moco: ProjectionHead(C, hidden, proj_dim) + L2 norm; hidden 0 means C (DualVar: 512→512→128).
    proj_dim: int = Field(128, ge=1)
    proj_hidden: int = Field(0, ge=0)
    # moco
    queue_size: int = Field(16384, ge=1)
    key_momentum: float = Field(0.999, ge=0, le=1)
    # cmc (IIC's banks): K noise rows per sample, bank momentum; raw GAP features unless cmc_normalize.
    nce_k: int = Field(1024, ge=1)
    nce_m: float = Field(0.5, ge=0, le=1)
    cmc_normalize: bool = False
    # add-ons, valid for every core
    be: bool = False  # background erasing on the query view (METHODS.md §4(a))
    be_lambda: float = Field(0.3, ge=0, le=1)  # λmax; λ ~ U(0, λmax) once per batch
    intra_neg: Literal["none", "repeat", "shuffle"] = "none"  # IIC-style intra-negative, one per sample
    # per-clip augmentation (vidssl.data.augment.AugmentSpec); DualVar's recipe by default
    scale: list[float] | None = None  # RandomResizedCrop area range, None = plain random crop
    flip: bool = False
    jitter: Jitter | None = Field(default_factory=lambda: [0.8, 0.8, 0.8, 0.2])
    jitter_p: float = Field(0.8, ge=0, le=1)
    grayscale_p: float = Field(0.0, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _lengths(self) -> ContrastiveParams:
        if self.scale is not None and len(self.scale) != 2:
            raise ValueError(f"scale needs 2 values (min, max area fraction), got {self.scale}")
        return self
