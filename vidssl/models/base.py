"""Shared backbone base: an ordered chain of named stages over B×C×T×H×W clips.

Every backbone is a sequence of stages (``stem``, ``layer1`` … or ``conv1`` …). Methods that read intermediate
features (MLFO reads layer2/3/4) call :meth:`Backbone.forward_stages`; everything else uses the pooled
:meth:`Backbone.forward`. A stage owns the pooling that *precedes* it, so each stage output is a conv map
at the resolution its convs produced (IIC's 9216-d retrieval feature is pooled from the full conv5 map).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import ContextManager

import torch
from torch import Tensor, nn


class Backbone(nn.Module):
    """A video backbone made of named stages applied in order.

    Attributes:
        out_dim: channels of the final map, which is also the size of the pooled feature.
        stage_names: names of the stages, in the order they run.
        in_channels: channels the input clip must have (3 for RGB).
    """

    out_dim: int
    stage_names: tuple[str, ...]
    # Set by the training engine for mixed precision (bf16/fp16): the stages run under autocast and every map
    # they return comes back as float32, so heads, similarity logits, softmax, banks and queues stay fp32.
    autocast_dtype: torch.dtype | None = None

    def __init__(
        self, stages: Sequence[tuple[str, nn.Module]], *, out_dim: int, in_channels: int = 3
    ) -> None:
        """Wrap already-built stages.

        Args:
            stages: ``(name, module)`` pairs in execution order; names must be unique.
            out_dim: channels of the last stage's output.
            in_channels: expected input channels (checked on every call).
        """
        super().__init__()
        names = tuple(name for name, _ in stages)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"stage names must be non-empty and unique, got {names}")
        self.stages = nn.ModuleDict(list(stages))
        self.stage_names = names
        self.out_dim = out_dim
        self.in_channels = in_channels

    def _check_input(self, x: Tensor) -> Tensor:
        # Catch the common B×T×C×H×W mix-up here, with a clear message, instead of deep inside a conv.
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects a clip batch B×{self.in_channels}×T×H×W, got shape "
                f"{tuple(x.shape)}; permute frames to channels-first (B, C, T, H, W)"
            )
        # channels-last-3d input takes oneDNN's fast conv3d kernels: on CPU the backward pass of the
        # default layout is ~10-50x slower (bench/bench_train_step.py measures it).
        return x.contiguous(memory_format=torch.channels_last_3d)

    def _autocast(self, x: Tensor) -> ContextManager[object]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(x.device.type, dtype=self.autocast_dtype)

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """Run every stage and return each one's output map, keyed by stage name, in order."""
        x = self._check_input(x)
        outs: dict[str, Tensor] = {}
        with self._autocast(x):
            for name, stage in self.stages.items():
                x = stage(x)
                outs[name] = x
        return outs if self.autocast_dtype is None else {k: v.float() for k, v in outs.items()}

    def forward_map(self, x: Tensor) -> Tensor:
        """Return the final conv map, shape B×out_dim×T'×H'×W'."""
        x = self._check_input(x)
        with self._autocast(x):
            for stage in self.stages.values():
                x = stage(x)
        return x if self.autocast_dtype is None else x.float()

    def forward(self, x: Tensor) -> Tensor:
        """Return the globally average-pooled feature, shape B×out_dim."""
        return self.forward_map(x).mean(dim=(2, 3, 4))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU) for convs, weight 1 / bias 0 for batch norms, in place.

    This is the init of Hara's 3D ResNets (used by MLFO) and torchvision's video models.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn_relu(
    in_ch: int,
    out_ch: int,
    kernel: int | tuple[int, int, int],
    *,
    stride: int | tuple[int, int, int] = 1,
    padding: int | tuple[int, int, int] = 0,
) -> nn.Sequential:
    """Conv3d (no bias, BN follows) → BatchNorm3d → ReLU."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm3d(out_ch),
        nn.ReLU(inplace=True),
    )


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (all of them, trainable or not; shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())

