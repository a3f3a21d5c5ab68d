"""Params of the VCOP baseline (clip order prediction); no torch import."""

from __future__ import annotations

from pydantic import Field

from vidssl.params_base import Section


class VCOPParams(Section):
    """VCOP's section (``pretrain.vcop``); defaults are the paper's settings (Xu et al., CVPR'19).

    The paper's run (xudejing/video-clip-order-prediction, train_vcop.py) for the presets: C3D / R3D-10 /
    R(2+1)D-10, clips of 16 consecutive frames (stride 1), Resize(128,171) then RandomCrop 112 drawn per clip;
    SGD lr 1e-3, momentum 0.9, weight decay 5e-4, batch 8, 300 epochs, ReduceLROnPlateau on validation loss
    (factor 0.1, patience 50, min lr 1e-5) with 800 training videos held out for validation.

    Attributes:
        tuple_len: clips per tuple; the classifier predicts one of tuple_len! orders.
        interval: frames skipped between consecutive clips of a tuple.
        stride: frame step inside each clip while pretraining (VCOP: 1, consecutive frames); the shared
            ``clip.stride`` still sets evaluation, so a tuple fits in short videos whatever eval uses.
        hidden: width of the pairwise layer (fc7).
        dropout: dropout before the order classifier (fc8).
    """

    tuple_len: int = Field(3, ge=2, le=5)
    interval: int = Field(8, ge=0)
    stride: int = Field(1, ge=1)
    hidden: int = Field(512, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
