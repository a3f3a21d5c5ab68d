"""Params of MLFO (``pretrain.mlfo`` in params.yaml); defaults: the paper's UCF101 settings (METHODS.md §5).

No torch import here: the config is parsed by the CLI, which must start instantly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vidssl.params_base import Section


class MLFOParams(Section):
    """Multi-level feature optimisation (Qian et al., ICCV'21).

    The paper's optimiser lives in ``pretrain``, not here: Adam, lr 1e-3, weight decay 1e-5, batch 256
    (64 per GPU × 4), 112² crops, 300 epochs on UCF101 with lr ×0.1 once at epoch 200 (K400: 100 epochs,
    decay at 70, ``cluster`` 1000, ``split`` 20). As pretrain params: ``optimizer: adam, lr: 0.001,
    weight_decay: 1.0e-5, batch_size: 256, epochs: 300, milestones: [200], gamma: 0.1``.

    Attributes:
        seq: frames per local clip (``--seq``; 16 in MLFO); 0 follows ``clip.frames``. Each level is pooled to
            the steps R3D gives 16-frame clips (layer4 2, layer3 4, layer2 8): with fewer frames a stage has
            fewer steps than its level pools to, and that level's timestamp matching cannot tell the repeated
            steps apart (the tiny backbone at 8 frames gives 4 / 2 / 1 steps, so L_flow, L_fmid and L_fine
            cannot go below log 2). Only pretraining reads it; retrieval and fine-tuning read ``clip``.
        rate: upper bound of the sampling rate r ~ U[min_rate, min(rate, F / 2T)] (official ``--rate``).
        min_rate: lower bound of that rate (1 in MLFO; a demo with a coarser clip stride can raise it).
        flip: horizontal flip (p = 0.5, consistent within a clip), as MLFO's code does. Turn it off where a
            mirror image is another class (left/right or clockwise/anticlockwise motion, as in MotionShapes or
            Something-Something): there a flipped positive asks for the invariance its reversed negatives forbid.
        colour: ``frame``: grey and colour jitter drawn for each frame on its own, as MLFO's code does
            (``consistent=False``); ``clip``: drawn once per clip, as the other methods here do. On MotionShapes
            MLFO fine-tunes at random init's level with per-frame colour and well above it with per-clip colour,
            at the same sampler and schedule (docs/motionshapes-study.md).
        cluster: number of prototypes K (``--cluster``; 200 for UCF101, 1000 for K400).
        split: epoch from which the graph constraint is added (``--split``).
        thres: G_ins entries below this are zeroed (``--thres``).
        queue_start: epoch from which Sinkhorn runs over the logit queue instead of the batch.
        queue_size: rows of gathered logits the queue keeps.
        temperature: τ of every contrastive, timestamp-matching and graph loss.
        proto_temperature: temperature of the prototype softmax in L_sd.
        epsilon: Sinkhorn entropic regularisation ε.
        sinkhorn_iters: Sinkhorn rounds.
        dim: output channels of every projection head.
        reduction: channel squeeze ratio of the motion-excitation blocks.
        low_stage: backbone stage read as the low level (R3D: layer2).
        mid_stage: backbone stage read as the mid level (R3D: layer3); the high level is the last stage.
        freeze_prototype_epochs: prototypes get no gradient during the first this-many epochs (paper: 1).
        w_mid: weight of L_mid + L_fmid.
        w_low: weight of L_low + L_flow.
        w_sd: weight of L_sd.
        w_graph: weight of the summed graph loss.
        graph_mid: weight of the mid graph head inside the graph loss (the high one has weight 1).
        graph_low: weight of the low graph head inside the graph loss.
    """

    seq: int = Field(0, ge=0)
    rate: float = Field(3.0, ge=1)
    min_rate: float = Field(1.0, ge=1)
    flip: bool = True
    colour: Literal["frame", "clip"] = "frame"
    cluster: int = Field(200, ge=2)
    split: int = Field(50, ge=0)
    thres: float = Field(0.05, ge=0, lt=1)
    queue_start: int = Field(10, ge=0)
    queue_size: int = Field(1024, ge=1)
    temperature: float = Field(0.07, gt=0)
    proto_temperature: float = Field(0.1, gt=0)
    epsilon: float = Field(0.05, gt=0)
    sinkhorn_iters: int = Field(3, ge=1)
    dim: int = Field(128, ge=1)
    reduction: int = Field(16, ge=1)
    low_stage: str = "layer2"
    mid_stage: str = "layer3"
    freeze_prototype_epochs: int = Field(1, ge=0)
    w_mid: float = Field(0.5, ge=0)
    w_low: float = Field(0.3, ge=0)
    w_sd: float = Field(0.5, ge=0)
    w_graph: float = Field(1.0, ge=0)
    graph_mid: float = Field(0.5, ge=0)
    graph_low: float = Field(0.3, ge=0)
