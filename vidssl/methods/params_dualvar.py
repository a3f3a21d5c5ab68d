"""Params of DualVar (METHODS.md §3); no torch import, so the config can be parsed without it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vidssl.params_base import Jitter, Section


class DualVarParams(Section):
    """DualVar's section (``pretrain.dualvar``); defaults are the paper's settings.

    The paper's run (paper_scripts, METHODS.md §3(d)) for the presets: R(2+1)D-10, clips of 16 frames at
    stride ds=4, crop 112; SGD lr 0.003, momentum 0.9, weight decay 1e-4, batch 64 (8 GPUs × 8), 200 epochs
    with lr ×0.1 at epochs 120 and 160; downstream uses the epoch-189 checkpoint and retrieval uses ds=4.

    Attributes:
        core: contrastive core, ``simclr`` (gathered in-batch negatives) or ``moco`` (key encoder, queues).
        use_tc: add the temporal-coherent loss L_tc; False gives the paper's "clip-sr" (only-seg) ablation.
        ds: temporal stride of the three clips (frames per clip come from ``clip.frames``).
        rand_flip: reverse the frame order of clips A and B (and so C) together with p=0.5.
        crop_only_p: probability that clip A gets the crop-only transform instead of the full one.
        jitter: ColorJitter strengths of the full transform (brightness, contrast, saturation, hue).
        jitter_p: probability that a clip is jittered; the code wraps ColorJitter(p=0.8) in RandomApply(p=0.8),
            so 0.64.
        blur_p: probability of the full transform's Gaussian blur (σ in [0.1, 2]).
        dim: clip-head embedding size.
        n_series: S, the number of series vectors (and of segments clip C is cut into for L_rank).
        series_dim: size of each series vector.
        temperature: τ of L_clip.
        tc_temperature: τ of L_tc (the code's ``aligned_T``).
        theta: θ of the shuffle-rank softplus.
        rank_weight: weight of each of the two L_rank terms.
        rank_clamp: upper clip of the L_rank softplus argument. ``core`` follows the code: 5 on the SimCLR core
            (``.clip(max=5.0)``), none on the MoCo core; ``off`` never clips; a number clips there. A clipped
            argument has zero gradient, so with θ = 0.05 a shuffled pair ranked wrong by more than 0.25 teaches
            nothing.
        queue_size: MoCo clip- and series-queue length K.
        moco_m: MoCo key-encoder EMA momentum.
    """

    core: Literal["simclr", "moco"] = "simclr"
    use_tc: bool = True
    ds: int = Field(4, ge=1)
    rand_flip: bool = True
    crop_only_p: float = Field(0.2, ge=0, le=1)
    jitter: Jitter = Field(default_factory=lambda: [0.8, 0.8, 0.8, 0.2])
    jitter_p: float = Field(0.64, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1)
    dim: int = Field(128, ge=1)
    n_series: int = Field(2, ge=2)
    series_dim: int = Field(64, ge=1)
    temperature: float = Field(0.07, gt=0)
    tc_temperature: float = Field(0.07, gt=0)
    theta: float = Field(0.05, gt=0)
    rank_weight: float = Field(0.5, ge=0)
    rank_clamp: Literal["core", "off"] | float = "core"
    queue_size: int = Field(16384, ge=1)
    moco_m: float = Field(0.999, ge=0, le=1)
