"""Mixed precision for the training loops: bf16/fp16 backbones with everything after them in fp32.

Only the backbones' conv stages run under autocast (:attr:`vidssl.models.base.Backbone.autocast_dtype`): they
hold nearly all the compute and activation memory, and their maps come back as float32, so projection heads,
similarity logits, softmax/log-softmax, memory banks and queues are computed and stored in fp32 whatever the
precision. fp16 adds a gradient scaler (its state is checkpointed); bf16 needs none.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def resolve(name: str, dev: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; any other name is checked and returned.

    Raises:
        ValueError: an unknown name, or bf16 on a GPU without bf16 support.
    """
    if name == "auto":
        return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name not in DTYPES:
        raise ValueError(f"train.precision: unknown precision {name!r}; choose from auto, bf16, fp16, fp32")
    if name == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.precision: bf16 but this GPU has no bf16 support; use fp16 or fp32")
    return name


class Precision:
    """Autocast settings and the gradient scaler for one training run."""

    def __init__(self, name: str, dev: torch.device) -> None:
        self.name = resolve(name, dev)
        self.dtype = DTYPES[self.name]
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.name == "fp16")

    def apply(self, module: nn.Module) -> None:
        """Set every backbone inside ``module`` (online and key encoders alike) to this precision."""
        from vidssl.models.base import Backbone

        for m in module.modules():
            if isinstance(m, Backbone):
                m.autocast_dtype = self.dtype

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, opt: torch.optim.Optimizer) -> None:
        """Optimiser step (skipped by the fp16 scaler when gradients overflowed), then the scaler's update."""
        self.scaler.step(opt)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss (or weights); the run stops and its last checkpoint stays."""


def check_finite(loss: torch.Tensor, terms: dict[str, float], *, where: str, epoch: int, step: int,
                 hint: str) -> None:
    """Stop with :class:`NonFiniteLoss` naming the epoch, step and first non-finite loss term.

    ``terms`` are the step's logged values (already floats); the total ``loss`` is checked after them.
    """
    bad = next(((k, v) for k, v in terms.items() if k.startswith("loss") and not math.isfinite(v)), None)
    if bad is None:
        value = float(loss.detach())
        if math.isfinite(value):
            return
        bad = ("loss", value)
    raise NonFiniteLoss(f"{where}: non-finite loss at epoch {epoch + 1}, step {step + 1}: {bad[0]}={bad[1]}; "
                        f"training stopped and its last good checkpoint kept. {hint}")


def check_finite_weights(module: nn.Module, *, where: str, epoch: int, step: int, hint: str) -> None:
    """Refuse to checkpoint weights that hold NaN or Inf (the step after a finite loss can still produce them)."""
    for name, p in module.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise NonFiniteLoss(f"{where}: non-finite weights ({name}) after epoch {epoch + 1}, step {step}; "
                                f"training stopped and its last good checkpoint kept. {hint}")
