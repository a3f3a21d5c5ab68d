"""Tests for vidssl.methods.dualvar: three-clip sampler, segment shuffle, series head, L_tc, both cores."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from vidssl.config import Params
from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipSpec, VideoRecord
from vidssl.data.store import write_pack
from vidssl.methods.base import sample_views
from vidssl.methods.dualvar import (
    DualVar,
    DualVarDataset,
    dualvar_augment,
    SeriesHead,
    centred_indices,
    resolve_rank_clamp,
    sample_clip_indices,
    shuffle_segments,
    tc_loss_in_batch,
    tc_loss_queue,
    unshuffle_slots,
)
from vidssl.methods.losses import rank_margins, shuffle_rank_loss
from vidssl.methods.params_dualvar import DualVarParams
from vidssl.models import build_backbone


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _pack(tmp_path: Path, n: int = 24, size: int = 40) -> VideoRecord:
    # Frame i is a flat grey of value 10·i, so a clip's frame indices can be read back from its pixels.
    frames = [np.full((size, size, 3), 10 * i, dtype=np.uint8) for i in range(n)]
    path = tmp_path / "v.zip"
    write_pack(path, frames)
    return VideoRecord("v", str(path), n, 3)


def _frame_ids(clip: torch.Tensor, channel: int = 1) -> list[int]:
    return [round(v / 10) for v in clip[channel].float().mean(dim=(1, 2)).tolist()]


# ---------------------------------------------------------------- sampler and dataset


def test_centred_indices_rule_and_boundary_clamp() -> None:
    assert centred_indices(50, 16, 4, 100) == [50 + (k - 8) * 4 for k in range(16)]
    assert centred_indices(2, 4, 4, 100) == [0, 0, 2, 6]  # 2-8, 2-4 clamp to frame 0
    assert centred_indices(98, 4, 4, 100) == [90, 94, 98, 99]  # 102 clamps to the last frame
    assert centred_indices(0, 3, 1, 1) == [0, 0, 0]


def test_sample_clip_indices_flip_reverses_a_and_b_together() -> None:
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(400):
        a, b = sample_clip_indices(1000, 16, 4, rng, rand_flip=True)
        down_a, down_b = a[0] > a[-1], b[0] > b[-1]  # a 61-frame span is never constant in 1000 frames
        assert down_a == down_b
        fwd = a[::-1] if down_a else a
        centre = fwd[8] if fwd[8] - fwd[7] == 4 else None  # unclamped middle: index 8 is the centre
        if centre is not None:
            assert fwd == centred_indices(centre, 16, 4, 1000)
        flips += down_a
    assert 150 < flips < 250
    a, b = sample_clip_indices(1000, 16, 4, rng, rand_flip=False)
    assert a == sorted(a) and b == sorted(b)


def _dataset(tmp_path: Path, rand_flip: bool = True) -> DualVarDataset:
    spec = ClipSpec(frames=8, stride=3, resize=40, crop=32)
    return DualVarDataset([_pack(tmp_path)], spec, stride=3, rand_flip=rand_flip)


def test_dataset_clips_follow_sampler_and_c_equals_a(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ds = _dataset(tmp_path)
    # Without colour the views keep the 10·i greys, so every clip's frame indices can be read off its pixels.
    augment, g = dualvar_augment(AugmentSpec(crop=32), crop_only_p=0.2), torch.Generator().manual_seed(0)
    flipped = 0
    for _ in range(60):
        a, b, label, index = ds[0]
        assert a.shape == b.shape == (3, 8, 40, 40) and a.dtype == torch.uint8  # frames only, uncropped
        assert (label, index) == (3, 0)
        a, b, c, label, index = sample_views(augment, (a, b, label, index), g)
        assert a.shape == b.shape == c.shape == (3, 8, 32, 32) and (label, index) == (3, 0)
        ids_a, ids_b = _frame_ids(a), _frame_ids(b)
        assert ids_a == _frame_ids(c)
        for ids in (ids_a, ids_b):
            fwd = sorted(ids)
            assert any(fwd == centred_indices(m, 8, 3, 24) for m in range(24)), ids
        flipped += int(ids_a[0] > ids_a[-1] or ids_b[0] > ids_b[-1])
    assert 15 <= flipped <= 45


def test_a_gets_the_crop_only_transform_with_its_probability(tmp_path: Path) -> None:
    # Flat grey frames: a crop leaves a clip as it was read; the full transform here rescales its brightness
    # (factor in [0.5, 1.5]), which leaves it unchanged only where the factor rounds away on every level.
    torch.manual_seed(0)
    ds = _dataset(tmp_path)
    full = AugmentSpec(crop=32, jitter=(0.5, 0, 0, 0), jitter_p=1.0)
    augment, g = dualvar_augment(full, crop_only_p=0.2), torch.Generator().manual_seed(0)
    unchanged = np.zeros(3, dtype=int)
    for _ in range(60):
        a_in, b_in, label, index = ds[0]
        a, b, c, _, _ = sample_views(augment, (a_in, b_in, label, index), g)
        same = [torch.equal(x, src[..., :32, :32]) for x, src in ((a, a_in), (b, b_in), (c, a_in))]
        unchanged += same
        am, cm = a[1].float().mean(dim=(1, 2)), c[1].float().mean(dim=(1, 2))
        keep = (am > 0) & (am < 160)  # frames no factor clamps at 255
        if same[0] and keep.any():  # C is A's frames, times one factor
            r = float(cm[keep].sum() / am[keep].sum())
            assert 0.45 < r < 1.55 and (cm[keep] - r * am[keep]).abs().max() <= 1.0
    assert 3 <= unchanged[0] <= 25  # p = 0.2 of 60
    assert unchanged[1] <= 2 and unchanged[2] <= 2  # B and C always get the full transform


def test_c_is_a_with_its_own_draw() -> None:
    # Without colour, A (crop-only or not) and C are two crops of the same frames, each its own window.
    a = torch.randint(0, 256, (4, 3, 8, 40, 40), dtype=torch.uint8).float() / 255
    b = torch.rand(4, 3, 8, 40, 40)
    out = dualvar_augment(AugmentSpec(crop=32), 0.2)((a, b, "label", "index"), torch.Generator().manual_seed(0))
    va, vb, vc = out[:3]
    assert out[3:] == ("label", "index")

    def window_of(view: torch.Tensor, src: torch.Tensor) -> tuple[int, int] | None:
        hits = [(i, j) for i in range(9) for j in range(9) if torch.equal(view, src[..., i : i + 32, j : j + 32])]
        return hits[0] if hits else None

    wa = [window_of(va[k], a[k]) for k in range(4)]
    wc = [window_of(vc[k], a[k]) for k in range(4)]
    assert all(w is not None for w in wa + wc) and wa != wc
    assert all(window_of(vb[k], b[k]) is not None for k in range(4))


def test_make_dataset_defaults(tmp_path: Path) -> None:
    torch.manual_seed(1)
    spec = ClipSpec(frames=8, stride=1, resize=40, crop=32)
    ds = DualVar.make_dataset([_pack(tmp_path)], spec, Params())
    a, b, c, _, _ = sample_views(DualVar(build_backbone("tiny", width=4)).make_augment(spec, Params()), ds[0],
                                 torch.Generator())
    assert a.shape == b.shape == c.shape == (3, 8, 32, 32)
    assert ds.stride == 4 and ds.rand_flip


def test_colour_params_reach_the_full_transform(tmp_path: Path) -> None:
    # Flat grey frames stay grey under a crop; jitter always on (brightness 0.5) must change them in B and C,
    # jitter off must leave every clip exactly grey.
    rec = _pack(tmp_path)
    spec = ClipSpec(frames=8, stride=1, resize=40, crop=32)

    method, g = DualVar(build_backbone("tiny", width=4)), torch.Generator()

    def views(**dv: object):
        cfg = Params(pretrain={"dualvar": {"crop_only_p": 0.0, **dv}})
        return sample_views(method.make_augment(spec, cfg), DualVar.make_dataset([rec], spec, cfg)[0], g)

    torch.manual_seed(0)
    for _ in range(5):
        for clip in views(jitter=[0, 0, 0, 0], jitter_p=0.0, blur_p=0.0)[:3]:
            assert all(v % 10 == 0 for v in clip.flatten().unique().tolist())  # still 10·frame greys
        _, b, c, _, _ = views(jitter=[0.5, 0, 0, 0], jitter_p=1.0, blur_p=0.0)
        assert not all(v % 10 == 0 for v in torch.cat([b, c]).flatten().unique().tolist())


# ---------------------------------------------------------------- segment shuffle and series head


def test_shuffle_segments_moves_whole_segments() -> None:
    x = torch.arange(12.0).view(1, 1, 12, 1, 1).expand(2, 3, 12, 2, 2).contiguous()
    perm = torch.tensor([[2, 0, 1], [0, 1, 2]])
    out = shuffle_segments(x, perm)
    assert out[0, 0, :, 0, 0].tolist() == [8, 9, 10, 11, 0, 1, 2, 3, 4, 5, 6, 7]
    assert torch.equal(out[1], x[1])
    with pytest.raises(ValueError, match="multiple of 3"):
        shuffle_segments(x[:, :, :10], perm)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_shuffle_then_unshuffle_gives_slot_order(s: int) -> None:
    # A backbone-free "series encoder": slot j = per-channel mean of segment j (sees only segment content).
    def series(x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape[:3]
        return x.reshape(b, c, s, t // s, -1).mean(dim=(3, 4)).transpose(1, 2)  # B×S×C

    x = torch.randn(6, 3, 4 * s, 5, 5, generator=torch.Generator().manual_seed(s))
    perm = torch.rand(6, s, generator=torch.Generator().manual_seed(1)).argsort(dim=1)
    shuffled = series(shuffle_segments(x, perm))
    assert not torch.allclose(shuffled, series(x))  # some sample was really permuted
    torch.testing.assert_close(unshuffle_slots(shuffled, perm), series(x))


def test_series_head_shapes_and_norms() -> None:
    head = SeriesHead(32, 3, 16)
    out = head(torch.randn(5, 32))
    assert out.shape == (5, 3, 16)
    torch.testing.assert_close(out.norm(dim=2), torch.ones(5, 3))
    method = DualVar(build_backbone("tiny", width=4), n_series=2, series_dim=64)
    assert method.series_head.proj.in_dim == 32 and method.clip_head.in_dim == 32  # backbone.out_dim, not 512


# ---------------------------------------------------------------- L_tc against loop references


def _avg_sim(u: torch.Tensor, v: torch.Tensor) -> float:
    pairs = [(p, q) for p in range(u.shape[0]) for q in range(v.shape[0])]
    return sum(float(u[p] @ v[q]) for p, q in pairs) / len(pairs)


@pytest.mark.parametrize(("b", "tau"), [(1, 0.07), (3, 0.1), (5, 0.5)])
def test_tc_loss_in_batch_matches_loop_reference(b: int, tau: float) -> None:
    s1, s2 = _unit(b, 2, 8, seed=1), _unit(b, 2, 8, seed=2)
    rows = list(s1) + list(s2)
    total = 0.0
    for i, r in enumerate(rows):
        logits = {j: _avg_sim(r, o) / tau for j, o in enumerate(rows) if j != i}
        total -= logits[(i + b) % (2 * b)] - math.log(sum(math.exp(v) for v in logits.values()))
    assert tc_loss_in_batch(s1, s2, tau).item() == pytest.approx(total / (2 * b), rel=1e-9)


def test_tc_loss_queue_matches_loop_reference() -> None:
    q, k, queue = _unit(3, 2, 8, seed=3), _unit(3, 2, 8, seed=4), _unit(7, 2, 8, seed=5)
    total = 0.0
    for i in range(3):
        logits = [_avg_sim(q[i], k[i]) / 0.2] + [_avg_sim(q[i], n) / 0.2 for n in queue]
        total -= logits[0] - math.log(sum(math.exp(v) for v in logits))
    assert tc_loss_queue(q, k, queue.flatten(1), 0.2).item() == pytest.approx(total / 3, rel=1e-9)


# ---------------------------------------------------------------- the method, both cores


def _batch(n: int = 4, t: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    clips = tuple(torch.rand(n, 3, t, 32, 32, generator=g) for _ in range(3))
    return (*clips, torch.zeros(n), torch.arange(n))


def _method(core: str, **kw: object) -> DualVar:
    torch.manual_seed(0)
    return DualVar(build_backbone("tiny", width=4), core=core, queue_size=32, **kw)


@pytest.mark.parametrize("use_tc", [True, False])
@pytest.mark.parametrize("core", ["simclr", "moco"])
def test_total_is_weighted_sum_of_logged_terms(core: str, use_tc: bool) -> None:
    loss, terms = _method(core, use_tc=use_tc, rank_weight=0.5).training_step(_batch(), epoch=0)
    rank = terms["loss_rank_a"] + terms["loss_rank_c"]
    expected = terms["loss_clip"] + 0.5 * rank + terms.get("loss_tc", 0)
    assert ("loss_tc" in terms) == use_tc
    assert terms["loss"] == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_rank_margins_known_values_and_loss() -> None:
    e = torch.eye(3, dtype=torch.float64)
    a = torch.stack([e[0], e[1]]).unsqueeze(0)  # S = 2 orthogonal series vectors
    # C in the right order: every row's partner is itself (1), every other entry 0 -> margin -1 everywhere
    right = rank_margins(a, a.clone())
    assert right.shape == (1, 4, 2) and torch.equal(right, -torch.ones(1, 4, 2, dtype=torch.float64))
    # C's slots swapped: row a_0 now meets its partner (0) and the wrong slot c_1 = e_0 (1) -> margins 0, 1
    wrong = rank_margins(a, a.flip(1))
    assert torch.equal(wrong[0, 0].sort().values, torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert not bool((wrong < 0).any())
    a2, c2 = _unit(5, 2, 8), _unit(5, 2, 8, seed=1)
    torch.testing.assert_close(shuffle_rank_loss(a2, c2, 0.05), F.softplus(rank_margins(a2, c2) / 0.05).mean())


def test_rank_accuracy_is_logged_over_shuffled_samples_only() -> None:
    def swapped_with(seed: int) -> torch.Tensor:
        return torch.rand(4, 2, generator=torch.Generator().manual_seed(seed)).argsort(dim=1)[:, 0] != 0

    mixed = next(s for s in range(100) if 0 < int(swapped_with(s).sum()) < 4)
    none = next(s for s in range(100) if not swapped_with(s).any())
    method = _method("simclr")
    method.generator.manual_seed(mixed)  # training_step draws its permutations from this generator
    _, terms = method.training_step(_batch(), epoch=0)
    # 2 views × 2S rows × (2S-2) others = 16 comparisons per shuffled sample; unshuffled ones are not counted
    count = terms["acc_rank"] * 16 * int(swapped_with(mixed).sum())
    assert 0.0 <= terms["acc_rank"] <= 1.0 and count == pytest.approx(round(count), abs=1e-6)
    method.generator.manual_seed(none)
    assert "acc_rank" not in method.training_step(_batch(), epoch=0)[1]


@pytest.mark.parametrize("core", ["simclr", "moco"])
def test_core_step_grads_ema_and_queues(core: str) -> None:
    method = _method(core)
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    loss, terms = method.training_step(_batch(), epoch=0)
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in terms.values())
    loss.backward()
    for module in (method.backbone, method.clip_head, method.series_head):
        assert all(p.grad is not None for p in module.parameters())
        assert sum(float(p.grad.abs().sum()) for p in module.parameters()) > 0
    if core == "simclr":
        assert not hasattr(method, "key_backbone")
        return
    keys = [method.key_backbone, method.key_clip_head, method.key_series_head]
    assert not any(id(p) in trainable or p.requires_grad for m in keys for p in m.parameters())
    assert int(method.clip_queue.ptr) == 4 and int(method.series_queue.ptr) == 4
    old_key = method.key_clip_head.mlp[0].weight.clone()
    opt.step()
    method.on_step_end()
    online = method.clip_head.mlp[0].weight
    torch.testing.assert_close(method.key_clip_head.mlp[0].weight, 0.999 * old_key + 0.001 * online)
    before = method.series_queue.queue.clone()
    method.training_step(_batch(seed=1), epoch=0)
    assert int(method.series_queue.ptr) == 8 and not torch.equal(before[4:8], method.series_queue.queue[4:8])
    torch.testing.assert_close(method.series_queue.queue.view(32, 2, 64).norm(dim=2), torch.ones(32, 2))


def test_simclr_sgd_steps_reduce_loss_on_fixed_batch() -> None:
    method, batch = _method("simclr"), _batch()
    opt = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)

    def step() -> float:
        method.generator.manual_seed(0)  # the same segment permutations every time
        loss, _ = method.training_step(batch, epoch=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    losses = [step() for _ in range(5)]
    assert losses[-1] < losses[0] - 0.1, losses


def test_from_config_reads_section_or_defaults() -> None:
    backbone = build_backbone("tiny", width=4)
    default = DualVar.from_config(backbone, Params(), n_samples=10)
    assert default.core == "simclr" and default.rank_clamp == 5.0 and default.use_tc
    cfg = SimpleNamespace(seed=1, pretrain=SimpleNamespace(dualvar=DualVarParams(core="moco", queue_size=16)))
    moco = DualVar.from_config(build_backbone("tiny", width=4), cfg, n_samples=10)
    assert moco.rank_clamp is None and moco.clip_queue.queue.shape == (16, 128)
    with pytest.raises(ValueError, match="unknown core"):
        DualVar(backbone, core="byol")


def test_rank_clamp_follows_core_unless_set() -> None:
    assert resolve_rank_clamp("core", "simclr") == 5.0  # SimCLR code: .clip(max=5.0)
    assert resolve_rank_clamp("core", "moco") is None  # MoCo code: no clip
    assert resolve_rank_clamp("off", "simclr") is None
    assert resolve_rank_clamp(3, "moco") == 3.0
    with pytest.raises(ValueError, match="rank_clamp 'sometimes'"):
        resolve_rank_clamp("sometimes", "simclr")
    cfg = SimpleNamespace(seed=1, pretrain=SimpleNamespace(dualvar=DualVarParams(rank_clamp="off")))
    assert DualVar.from_config(build_backbone("tiny", width=4), cfg, n_samples=10).rank_clamp is None
    with pytest.raises(ValidationError):
        DualVarParams(rank_clamp="sometimes")


def test_clipped_rank_argument_passes_no_gradient() -> None:
    # Slots swapped: the shuffled copy was not recognised, so c_1 beats the positive c_0 by 0.9 for row a_0.
    # With a sharp θ every other entry is far below its positive; the clipped loss then has no gradient at
    # all, the unclipped one a large one (the reason `rank_clamp: off` exists).
    c = F.normalize(torch.tensor([[[0.1, 1.0], [1.0, 0.1]]]), dim=2)
    grads = {}
    for clamp in (5.0, None):
        a = torch.eye(2).unsqueeze(0).requires_grad_(True)
        shuffle_rank_loss(a, c, 0.001, clamp).backward()
        grads[clamp] = a.grad.abs().sum().item()
    assert grads[5.0] < 1e-12 and grads[None] > 1.0, grads
