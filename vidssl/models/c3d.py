"""C3D with batch norm, as used by VCOP and IIC (and BE's C3D option).

conv1 64 → pool(1,2,2) → conv2 128 → pool 2 → conv3 256×2 → pool 2 → conv4 512×2 → pool 2 → conv5 512×2.
Every conv is 3³ with padding 1, then BN and ReLU. The original fc6/fc7 are replaced by a global average pool,
so the feature is 512-d. A 16×112² clip gives a 512×2×7×7 conv5 map.
"""

from __future__ import annotations

from torch import nn

from vidssl.models.base import Backbone, conv_bn_relu, init_weights

# (stage, output widths of its convs); the pool before each stage is in _POOLS.
_STAGES = (
    ("conv1", (64,)),
    ("conv2", (128,)),
    ("conv3", (256, 256)),
    ("conv4", (512, 512)),
    ("conv5", (512, 512)),
)
# conv1 keeps T: only the first pool is spatial-only, as in the C3D paper.
_POOLS = {"conv2": (1, 2, 2), "conv3": (2, 2, 2), "conv4": (2, 2, 2), "conv5": (2, 2, 2)}


def c3d(*, in_channels: int = 3) -> Backbone:
    """C3D (VCOP-style, with BN): five conv stages, 3³ convs, GAP → 512-d.

    Args:
        in_channels: input channels.

    Returns:
        A :class:`Backbone` with stages ``conv1 … conv5``; each stage starts with the pool that precedes it.

    Note:
        Convs have no bias because BN follows (VCOP's convs keep a redundant bias: +2,752 params there).
    """
    stages = []
    in_ch = in_channels
    for name, widths in _STAGES:
        layers: list[nn.Module] = []
        if name in _POOLS:
            layers.append(nn.MaxPool3d(_POOLS[name], stride=_POOLS[name]))
        for w in widths:
            layers.append(conv_bn_relu(in_ch, w, 3, padding=1))
            in_ch = w
        stages.append((name, nn.Sequential(*layers)))
    model = Backbone(stages, out_dim=in_ch, in_channels=in_channels)
    init_weights(model)
    return model
