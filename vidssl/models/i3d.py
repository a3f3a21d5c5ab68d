"""I3D: Inception-v1 inflated to 3D (Carreira & Zisserman 2017), the RGB backbone BE uses; 1024-d.

Layout (channels after each unit):

    stem:   Conv 7³/2 (64) → MaxPool (1,3,3)/(1,2,2) → Conv 1³ (64) → Conv 3³ (192)
    mixed3: MaxPool (1,3,3)/(1,2,2) → Mixed_3b (256) → Mixed_3c (480)
    mixed4: MaxPool 3³/2 → Mixed_4b (512) 4c (512) 4d (512) 4e (528) 4f (832)
    mixed5: MaxPool 2³/2 → Mixed_5b (832) → Mixed_5c (1024)

TensorFlow's "SAME" padding is replaced by symmetric padding (plus ``ceil_mode`` for the 2³ pool), which gives
the same output sizes for even inputs; only the alignment of stride-2 windows differs by one pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vidssl.models.base import Backbone, conv_bn_relu, init_weights

# Mixed block widths: (1³ branch, 3³ reduce, 3³, 3³ reduce, 3³, pool-projection), from the Inception-v1 table.
_MIXED: dict[str, tuple[int, int, int, int, int, int]] = {
    "3b": (64, 96, 128, 16, 32, 32),
    "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64),
    "4c": (160, 112, 224, 24, 64, 64),
    "4d": (128, 128, 256, 24, 64, 64),
    "4e": (112, 144, 288, 32, 64, 64),
    "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128),
    "5c": (384, 192, 384, 48, 128, 128),
}


class Mixed(nn.Module):
    """Inflated Inception block: four parallel branches concatenated along channels."""

    def __init__(self, in_ch: int, widths: Sequence[int]) -> None:
        super().__init__()
        b0, b1r, b1, b2r, b2, b3 = widths
        self.branch0 = conv_bn_relu(in_ch, b0, 1)
        self.branch1 = nn.Sequential(conv_bn_relu(in_ch, b1r, 1), conv_bn_relu(b1r, b1, 3, padding=1))
        # The original calls this a 5×5 branch, but Inception-v1 (and I3D) implement it with a 3×3 conv.
        self.branch2 = nn.Sequential(conv_bn_relu(in_ch, b2r, 1), conv_bn_relu(b2r, b2, 3, padding=1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), conv_bn_relu(in_ch, b3, 1))
        self.out_ch = b0 + b1 + b2 + b3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


def _mixed_stage(pool: nn.Module, in_ch: int, names: Sequence[str]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [pool]
    for name in names:
        block = Mixed(in_ch, _MIXED[name])
        layers.append(block)
        in_ch = block.out_ch
    return nn.Sequential(*layers), in_ch


def i3d(*, in_channels: int = 3) -> Backbone:
    """I3D (Inception-v1 inflated, RGB, no logits): Mixed_3b … Mixed_5c, 1024-d.

    Args:
        in_channels: input channels (2 for the flow stream of the original).
    """
    stem = nn.Sequential(
        conv_bn_relu(in_channels, 64, 7, stride=2, padding=3),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        conv_bn_relu(64, 64, 1),
        conv_bn_relu(64, 192, 3, padding=1),
    )
    spatial_pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    mixed3, ch = _mixed_stage(spatial_pool, 192, ("3b", "3c"))
    mixed4, ch = _mixed_stage(nn.MaxPool3d(3, stride=2, padding=1), ch, ("4b", "4c", "4d", "4e", "4f"))
    mixed5, ch = _mixed_stage(nn.MaxPool3d(2, stride=2, ceil_mode=True), ch, ("5b", "5c"))
    stages = [("stem", stem), ("mixed3", mixed3), ("mixed4", mixed4), ("mixed5", mixed5)]
    model = Backbone(stages, out_dim=ch, in_channels=in_channels)
    init_weights(model)
    return model
