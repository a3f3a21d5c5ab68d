"""3D residual networks: R3D-10, R(2+1)D-10 (VCOP/IIC/DualVar), R3D-18 (Hara, MLFO) and a tiny CPU variant.

All share one builder, :func:`r3d`: a stem (conv + BN + ReLU, optional max-pool) followed by residual
layers of BasicBlocks. Every layer after the first halves T, H and W in its first block, whose shortcut is
then a 1³ conv + BN. With ``conv="2plus1d"`` every conv (stem and shortcuts included, as in the IIC/VCOP
code) is factorised into a (1,k,k) spatial conv → BN → ReLU → (k_t,1,1) temporal conv (Tran et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from vidssl.models.base import Backbone, init_weights

Triple = tuple[int, int, int]
ConvFactory = Callable[[int, int, Triple, Triple, Triple], nn.Module]
CONV_KINDS = ("3d", "2plus1d")


def _triple(v: int | Sequence[int]) -> Triple:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(v)
    if len(t) != 3:
        raise ValueError(f"expected an int or 3 ints (t, h, w), got {v!r}")
    return (int(t[0]), int(t[1]), int(t[2]))


def mid_channels(in_ch: int, out_ch: int, kernel: int | Sequence[int]) -> int:
    """Width between the spatial and temporal convs of a (2+1)D conv.

    Chosen so the factorised conv has about as many parameters as the full k_t×k×k conv:
    ⌊k_t·k²·Cin·Cout / (k²·Cin + k_t·Cout)⌋ (R(2+1)D paper, §3.5).
    """
    kt, kh, kw = _triple(kernel)
    return (kt * kh * kw * in_ch * out_ch) // (kh * kw * in_ch + kt * out_ch)


class Conv2Plus1d(nn.Sequential):
    """(1,k,k) spatial conv → BN → ReLU → (k_t,1,1) temporal conv; acts like one Conv3d (no output BN)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: Triple, stride: Triple, padding: Triple) -> None:
        (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = kernel, stride, padding
        mid = mid_channels(in_ch, out_ch, kernel)
        super().__init__(
            nn.Conv3d(in_ch, mid, (1, kh, kw), stride=(1, sh, sw), padding=(0, ph, pw), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_ch, (kt, 1, 1), stride=(st, 1, 1), padding=(pt, 0, 0), bias=False),
        )


def _conv3d(in_ch: int, out_ch: int, kernel: Triple, stride: Triple, padding: Triple) -> nn.Module:
    # No bias: every conv here is followed by a BatchNorm, which has its own shift.
    return nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)


def conv_factory(kind: str) -> ConvFactory:
    """Return the constructor for ``kind`` ("3d" or "2plus1d"), called as ``f(cin, cout, k, stride, pad)``."""
    if kind == "3d":
        return _conv3d
    if kind == "2plus1d":
        return Conv2Plus1d
    raise ValueError(f"unknown conv kind {kind!r}; choose from {list(CONV_KINDS)}")


class BasicBlock(nn.Module):
    """Residual block: relu(norm_b(conv_b(relu(norm_a(conv_a(x))))) + shortcut(x)), from built parts.

    ``shortcut=None`` means identity (same shape in and out).
    """

    def __init__(
        self,
        conv_a: nn.Module,
        norm_a: nn.Module,
        conv_b: nn.Module,
        norm_b: nn.Module,
        shortcut: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv_a, self.norm_a = conv_a, norm_a
        self.conv_b, self.norm_b = conv_b, norm_b
        self.shortcut = shortcut
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm_a(self.conv_a(x)))
        out = self.norm_b(self.conv_b(out))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(out + skip)


def basic_block(make_conv: ConvFactory, in_ch: int, out_ch: int, *, stride: int = 1) -> BasicBlock:
    """Build a 3³ BasicBlock; a 1³ conv + BN shortcut is added when the shape changes."""
    s, k, p = _triple(stride), (3, 3, 3), (1, 1, 1)
    shortcut = None
    if stride != 1 or in_ch != out_ch:
        shortcut = nn.Sequential(make_conv(in_ch, out_ch, (1, 1, 1), s, (0, 0, 0)), nn.BatchNorm3d(out_ch))
    return BasicBlock(
        make_conv(in_ch, out_ch, k, s, p),
        nn.BatchNorm3d(out_ch),
        make_conv(out_ch, out_ch, k, (1, 1, 1), p),
        nn.BatchNorm3d(out_ch),
        shortcut,
    )


def r3d(
    *,
    layer_sizes: Sequence[int] = (1, 1, 1, 1),
    widths: Sequence[int] = (64, 128, 256, 512),
    conv: str = "3d",
    stem_kernel: int | Sequence[int] = (3, 7, 7),
    stem_pool: bool = False,
    in_channels: int = 3,
) -> Backbone:
    """Build a 3D ResNet with stages ``stem, layer1 … layerN``.

    Args:
        layer_sizes: BasicBlocks per layer.
        widths: channels per layer (the stem has ``widths[0]``); the last is ``out_dim``.
        conv: "3d" for full 3D convs, "2plus1d" for factorised (2+1)D convs.
        stem_kernel: stem conv kernel (t, h, w); stride (1,2,2), "same" padding.
        stem_pool: add Hara's (1,3,3) stride (1,2,2) max-pool at the end of the stem.
        in_channels: input channels.

    Raises:
        ValueError: on an unknown ``conv`` kind or mismatched/invalid sizes.
    """
    make_conv = conv_factory(conv)
    if len(layer_sizes) != len(widths) or not layer_sizes:
        sizes = f"layer_sizes {tuple(layer_sizes)} and widths {tuple(widths)}"
        raise ValueError(f"{sizes} must be non-empty, of the same length")
    if min(layer_sizes) < 1 or min(widths) < 1:
        raise ValueError(f"layer_sizes {tuple(layer_sizes)} and widths {tuple(widths)} must be positive")
    k = _triple(stem_kernel)
    stem: list[nn.Module] = [
        make_conv(in_channels, widths[0], k, (1, 2, 2), (k[0] // 2, k[1] // 2, k[2] // 2)),
        nn.BatchNorm3d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    if stem_pool:
        stem.append(nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
    stages: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(*stem))]
    in_ch = widths[0]
    for i, (n_blocks, width) in enumerate(zip(layer_sizes, widths, strict=True)):
        stride = 1 if i == 0 else 2
        blocks = [basic_block(make_conv, in_ch, width, stride=stride)]
        blocks += [basic_block(make_conv, width, width) for _ in range(n_blocks - 1)]
        stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        in_ch = width
    model = Backbone(stages, out_dim=widths[-1], in_channels=in_channels)
    init_weights(model)
    return model


def r3d10(*, widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3) -> Backbone:
    """R3D-10 (VCOP/IIC): 3×7×7 stem, no max-pool, blocks (1,1,1,1), 512-d."""
    return r3d(layer_sizes=(1, 1, 1, 1), widths=widths, conv="3d", in_channels=in_channels)


def r21d10(*, widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3) -> Backbone:
    """R(2+1)D-10 (VCOP/IIC/DualVar): R3D-10 with every conv factorised into (2+1)D, 512-d."""
    return r3d(layer_sizes=(1, 1, 1, 1), widths=widths, conv="2plus1d", in_channels=in_channels)


def r3d18(*, widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3) -> Backbone:
    """R3D-18 (Hara; MLFO): 7³ stem + (1,3,3) max-pool, blocks (2,2,2,2), 512-d."""
    return r3d(
        layer_sizes=(2, 2, 2, 2),
        widths=widths,
        stem_kernel=(7, 7, 7),
        stem_pool=True,
        in_channels=in_channels,
    )


def tiny(*, width: int = 16, in_channels: int = 3) -> Backbone:
    """Tiny R3D for CPU demos: widths (w,2w,4w,8w), blocks (1,1,1,1), 3×7×7 stem; 128-d at w=16."""
    if width < 1:
        raise ValueError(f"tiny backbone width must be >= 1, got {width}")
    return r3d(widths=(width, 2 * width, 4 * width, 8 * width), in_channels=in_channels)
