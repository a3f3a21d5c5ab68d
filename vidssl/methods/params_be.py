"""Params of BE, background erasing (METHODS.md §4); defaults are the UCF101 script's settings.

No torch import here: config parsing must stay fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vidssl.params_base import Jitter, Section


class BEParams(Section):
    """``pretrain.be``.

    ``variant``: ``moco`` (BE proper: MoCo v1 + BE-mixed query + intra-video temporal negative), ``triplet``
    (BE's ``be_triplet``), or ``consistency`` (the MSE form ‖F(x̃) − F(x)‖² added with ``consistency_weight``
    to the loss of the registered method named by ``pretext``, e.g. ``vcop``).
    """

    variant: Literal["moco", "triplet", "consistency"] = "moco"
    temperature: float = Field(0.07, gt=0)
    proj_dim: int = Field(128, ge=1)  # Linear(C→128) + L2 norm
    queue_size: int = Field(3569, ge=1)  # UCF/HMDB scripts; K400 uses 65536
    key_momentum: float = Field(0.999, ge=0, le=1)
    be_lambda: float = Field(0.3, ge=0, le=1)  # λmax; λ ~ U(0, λmax) once per batch
    triplet_margin: float = Field(0.5, gt=0)
    # sampling: BE pretrains on clips at stride 4 (0 keeps clip.stride); a negative start closer than
    # neg_thresh frames to the anchor's is shifted by n_frames // 3
    stride: int = Field(4, ge=0)
    neg_thresh: int = Field(2, ge=0)
    # starts leave room for start_window samples at that stride (BE's code: its sampler's default 32, not the clip
    # length; on videos under 32·4 frames every anchor starts at the first frame); 0 = the clip's own span
    start_window: int = Field(32, ge=0)
    # clip-consistent augmentation: rotation ±10°, crop, ColorJitter(0.5, 0.5, 0.25, 0.5) always applied
    rotate: float = Field(10.0, ge=0)
    jitter: Jitter = Field(default_factory=lambda: [0.5, 0.5, 0.25, 0.5])
    jitter_p: float = Field(1.0, ge=0, le=1)
    # consistency variant
    pretext: str = "vcop"
    consistency_weight: float = Field(1.0, ge=0)
