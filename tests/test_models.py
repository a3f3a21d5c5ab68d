"""Tests for vidssl.models: every registered backbone, the R3D/R(2+1)D builder, and the heads."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vidssl.models import (
    BACKBONES,
    LinearHead,
    ProjectionHead,
    build_backbone,
    count_params,
    describe_backbones,
)
from vidssl.models.r3d import Conv2Plus1d, conv_factory, mid_channels, r3d

# Full-size backbones whose 112² forward+backward costs seconds on 2 CPU cores.
HEAVY = {"c3d", "r3d10", "r21d10", "r3d18", "i3d"}

# Stage output shapes (C, T, H, W) for a 16×112×112 clip, worked out by hand from the strides and pools.
STAGES_16x112 = {
    "tiny": [(16, 16, 56, 56), (16, 16, 56, 56), (32, 8, 28, 28), (64, 4, 14, 14), (128, 2, 7, 7)],
    "c3d": [(64, 16, 112, 112), (128, 16, 56, 56), (256, 8, 28, 28), (512, 4, 14, 14), (512, 2, 7, 7)],
    "r3d10": [(64, 16, 56, 56), (64, 16, 56, 56), (128, 8, 28, 28), (256, 4, 14, 14), (512, 2, 7, 7)],
    "r21d10": [(64, 16, 56, 56), (64, 16, 56, 56), (128, 8, 28, 28), (256, 4, 14, 14), (512, 2, 7, 7)],
    # Hara's stem max-pool halves H, W once more; layer4 gives ceil(7/2) = 4.
    "r3d18": [(64, 16, 28, 28), (64, 16, 28, 28), (128, 8, 14, 14), (256, 4, 7, 7), (512, 2, 4, 4)],
    "i3d": [(192, 8, 28, 28), (480, 8, 14, 14), (832, 4, 7, 7), (1024, 2, 4, 4)],
}


def _registry_params() -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in BACKBONES]


def test_registry_names():
    assert list(BACKBONES) == ["tiny", "c3d", "r3d10", "r21d10", "r3d18", "i3d"]
    assert set(STAGES_16x112) == set(BACKBONES)


@pytest.mark.parametrize("name", _registry_params())
@pytest.mark.parametrize("frames", [8, 16])
def test_forward_backward(name: str, frames: int):
    torch.manual_seed(0)
    model = build_backbone(name).train()
    batch = 1 if (name in HEAVY and frames == 16) else 2  # keeps the file fast on 2 cores
    x = torch.randn(batch, 3, frames, 112, 112)
    stages = model.forward_stages(x)
    assert tuple(stages) == model.stage_names
    expected = STAGES_16x112[name]
    for (stage, out), shape in zip(stages.items(), expected, strict=True):
        c, t, h, w = shape
        if frames == 8:  # only T changes: each temporal halving now starts from 8 (2 → 1 at the end)
            t = max(t // 2, 1)
        assert tuple(out.shape) == (batch, c, t, h, w), stage
    final = stages[model.stage_names[-1]]
    assert final.shape[1] == model.out_dim
    feat = final.mean(dim=(2, 3, 4))
    # A random linear read-out so every channel (hence every parameter) receives gradient.
    (feat * torch.randn_like(feat)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: all-zero gradient for {pname}"


@pytest.mark.parametrize("name", list(BACKBONES))
def test_forward_is_gap_of_map_and_last_stage(name: str):
    torch.manual_seed(0)
    model = build_backbone(name).eval()
    x = torch.randn(2, 3, 8, 48, 48)
    with torch.no_grad():
        stages = model.forward_stages(x)
        fmap = model.forward_map(x)
        feat = model(x)
    assert feat.shape == (2, model.out_dim)
    torch.testing.assert_close(stages[model.stage_names[-1]], fmap)
    torch.testing.assert_close(feat, fmap.mean(dim=(2, 3, 4)))
    # eval-mode BN makes samples independent: a clip's feature does not depend on its batch. Untrained nets
    # have large activations and batch-size-dependent conv kernels, so the tolerance is relative to the scale.
    with torch.no_grad():
        alone = model(x[1:])
    torch.testing.assert_close(alone, feat[1:], atol=1e-4 * feat.abs().max().item(), rtol=1e-4)


def test_c3d_iic_retrieval_feature_is_9216():
    # METHODS.md §1.2: IIC's retrieval feature is conv5 → MaxPool3d(1,2,2) → flatten = 9216 for 16×112².
    model = build_backbone("c3d").eval()
    with torch.no_grad():
        fmap = model.forward_map(torch.randn(1, 3, 16, 112, 112))
    assert nn.functional.max_pool3d(fmap, (1, 2, 2)).flatten(1).shape == (1, 9216)


def _bn(c: int) -> int:
    return 2 * c


def _r3d_param_reference(layer_sizes, widths, stem_k) -> int:
    """Hand count for a 3D-conv ResNet: convs have no bias, every BN has 2 params per channel."""
    total = 3 * widths[0] * math.prod(stem_k) + _bn(widths[0])
    cin = widths[0]
    for i, (n, w) in enumerate(zip(layer_sizes, widths)):
        for b in range(n):
            total += cin * w * 27 + _bn(w) + w * w * 27 + _bn(w)
            if b == 0 and (i > 0 or cin != w):
                total += cin * w + _bn(w)  # 1³ shortcut conv + BN
            cin = w
    return total


def _conv21_params(cin: int, cout: int, k) -> int:
    kt, kh, kw = k
    mid = mid_channels(cin, cout, k)
    return cin * mid * kh * kw + _bn(mid) + mid * cout * kt


def _r21d_param_reference(widths) -> int:
    total = _conv21_params(3, widths[0], (3, 7, 7)) + _bn(widths[0])
    cin = widths[0]
    for i, w in enumerate(widths):
        total += _conv21_params(cin, w, (3, 3, 3)) + _conv21_params(w, w, (3, 3, 3)) + 2 * _bn(w)
        if i > 0:
            total += _conv21_params(cin, w, (1, 1, 1)) + _bn(w)
        cin = w
    return total


def test_param_counts():
    with torch.device("meta"):  # shapes only: no memory, no init cost
        counts = {name: count_params(build_backbone(name)) for name in BACKBONES}
    assert counts["r3d10"] == _r3d_param_reference((1, 1, 1, 1), (64, 128, 256, 512), (3, 7, 7))
    assert counts["r3d18"] == _r3d_param_reference((2, 2, 2, 2), (64, 128, 256, 512), (7, 7, 7))
    assert counts["tiny"] == _r3d_param_reference((1, 1, 1, 1), (16, 32, 64, 128), (3, 7, 7))
    assert counts["r21d10"] == _r21d_param_reference((64, 128, 256, 512))
    # Published sizes: R(2+1)D-10 ≈ 14.4M (VCOP/IIC), R3D-18 ≈ 33.2M (Hara, no fc),
    # RGB I3D ≈ 12.29M (no logits).
    assert counts["r21d10"] == pytest.approx(14.4e6, rel=0.02)
    assert counts["r3d18"] == pytest.approx(33.2e6, rel=0.01)
    assert counts["i3d"] == pytest.approx(12.29e6, rel=0.005)
    # C3D with BN, bias-free convs: Σ cin·cout·27 + Σ 2·cout.
    convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    assert counts["c3d"] == sum(ci * co * 27 + _bn(co) for ci, co in convs)


def test_mid_channels_known_values():
    assert mid_channels(3, 64, (3, 7, 7)) == 83  # 28224 / 339 = 83.26
    assert mid_channels(64, 64, 3) == 144  # 110592 / 768, exact
    assert mid_channels(64, 128, 3) == 230  # 221184 / 960 = 230.4
    assert mid_channels(64, 128, 1) == 42  # 8192 / 192 = 42.67


@pytest.mark.parametrize("kind", ["3d", "2plus1d"])
def test_conv_receptive_field_is_the_kernel_box(kind: str):
    # With positive weights and eval BN nothing cancels, so an impulse spreads over exactly the kernel box.
    conv = conv_factory(kind)(1, 1, (3, 7, 7), (1, 1, 1), (1, 3, 3)).eval()
    for m in conv.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.ones_(m.weight)
    x = torch.zeros(1, 1, 9, 15, 15)
    x[0, 0, 4, 7, 7] = 1.0
    with torch.no_grad():
        support = conv(x)[0, 0] > 0
    box = torch.zeros_like(support)
    box[3:6, 4:11, 4:11] = True
    assert torch.equal(support, box)


def test_conv2plus1d_layout():
    conv = Conv2Plus1d(64, 128, (3, 3, 3), (2, 2, 2), (1, 1, 1))
    spatial, temporal = conv[0], conv[3]
    assert spatial.kernel_size == (1, 3, 3) and spatial.stride == (1, 2, 2) and spatial.out_channels == 230
    assert temporal.kernel_size == (3, 1, 1) and temporal.stride == (2, 1, 1) and temporal.out_channels == 128
    out = conv(torch.randn(1, 64, 8, 14, 14))
    assert out.shape == (1, 128, 4, 7, 7)


def test_init_is_kaiming_fan_out_and_bn_identity():
    model = build_backbone("r3d10")
    w = model.stages["layer4"][0].conv_b.weight  # 512→512, 3³: fan_out = 512·27
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 27)), rel=0.02)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_tiny_width_kwarg():
    model = build_backbone("tiny", width=8)
    assert model.out_dim == 64
    assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 64)


def test_unknown_backbone_error():
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet50'; choose from \['c3d', 'i3d'"):
        build_backbone("resnet50")


def test_bad_builder_kwarg_error():
    with pytest.raises(ValueError, match=r"backbone 'c3d' does not accept arguments \['width'\]"):
        build_backbone("c3d", width=8)


def test_builder_argument_errors():
    with pytest.raises(ValueError, match="unknown conv kind 'x'"):
        r3d(conv="x")
    with pytest.raises(ValueError, match="of the same length"):
        r3d(layer_sizes=(1, 1), widths=(8, 16, 32))
    with pytest.raises(ValueError, match="width must be >= 1"):
        build_backbone("tiny", width=0)


def test_input_layout_error_names_expected_shape():
    model = build_backbone("tiny")
    with pytest.raises(ValueError, match=r"B×3×T×H×W, got shape \(1, 8, 3, 32, 32\)"):
        model(torch.randn(1, 8, 3, 32, 32))


def test_describe_backbones_matches_real_models():
    rows = describe_backbones()
    assert [r["name"] for r in rows] == list(BACKBONES)
    by_name = {r["name"]: r for r in rows}
    tiny = build_backbone("tiny")
    assert by_name["tiny"]["params"] == count_params(tiny)
    assert by_name["tiny"]["stages"] == tiny.stage_names
    assert by_name["i3d"]["out_dim"] == 1024 and by_name["c3d"]["out_dim"] == 512
    assert all(r["description"] for r in rows)


# ---------------------------------------------------------------- heads


def test_projection_head_matches_manual_mlp_and_is_unit_norm():
    torch.manual_seed(0)
    head = ProjectionHead(32, 16, 8)
    x = torch.randn(5, 32)
    lin1, lin2 = head.mlp[0], head.mlp[2]
    manual = lin2(torch.relu(lin1(x)))
    z = head(x)
    assert z.shape == (5, 8)
    torch.testing.assert_close(z, manual / manual.norm(dim=1, keepdim=True))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    raw = ProjectionHead(32, 16, 8, normalize=False)
    assert not torch.allclose(raw(x).norm(dim=1), torch.ones(5))


def test_projection_head_bn_variant():
    head = ProjectionHead(32, 16, 8, bn=True)
    assert isinstance(head.mlp[1], nn.BatchNorm1d) and head.mlp[0].bias is None
    z = head.train()(torch.randn(6, 32))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(6))


def test_linear_head_init_dropout_and_shapes():
    torch.manual_seed(0)
    head = LinearHead(512, 101, init_std=0.01, dropout=0.5)
    assert head.fc.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert torch.all(head.fc.bias == 0)
    x = torch.randn(4, 512)
    head.eval()
    torch.testing.assert_close(head(x), x @ head.fc.weight.T)  # dropout is off in eval
    head.train()
    assert not torch.allclose(head(x), x @ head.fc.weight.T)
    assert head(x).shape == (4, 101)


def test_head_argument_and_shape_errors():
    with pytest.raises(ValueError, match="dimensions must be positive"):
        ProjectionHead(0, 16, 8)
    with pytest.raises(ValueError, match="dropout must be in"):
        LinearHead(8, 2, dropout=1.0)
    with pytest.raises(ValueError, match=r"expects pooled features of shape B×8"):
        LinearHead(8, 2)(torch.randn(2, 8, 1, 1, 1))
