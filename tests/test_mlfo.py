"""MLFO: ME-block math, sampler rule, each loss against a reference, epoch schedules, training behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidssl.config import ClipParams, Params
from vidssl.data.clips import ClipSpec, VideoRecord, read_list
from vidssl.data.store import write_pack
from vidssl.methods import mlfo as mlfo_module
from vidssl.methods.losses import sinkhorn
from vidssl.data.augment import AugmentSpec
from vidssl.methods.base import sample_views
from vidssl.methods.mlfo import (
    MLFO,
    MLFODataset,
    mlfo_augment,
    mlfo_augment_spec,
    clip_contrast,
    graph_loss,
    graph_target,
    mlfo_indices,
    reversal_accuracy,
    split_clips,
    swapped_prototype_loss,
    timestamp_matching_loss,
)
from vidssl.methods.mlfo_heads import LogitQueue, MEBlock
from vidssl.methods.params_mlfo import MLFOParams
from vidssl.models import build_backbone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These steps are many tiny ops: on a busy 2-core box, two OpenMP threads wait on each other (measured:
    # this file 9 s with one thread, up to 98 s with two under load). Restored after the module.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TERMS = {"loss", "clusters", "acc_rev_mid", "acc_rev_low",
         *(f"loss_{k}" for k in ("high", "fine", "mid", "fmid", "low", "flow", "sd"))}
GRAPH_TERMS = {"loss_graph", "loss_graph_high", "loss_graph_mid", "loss_graph_low"}


def batch(b: int = 4, t: int = 8, s: int = 32, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (*(torch.rand(b, 3, t, s, s, generator=g) for _ in range(3)), torch.zeros(b), torch.arange(b))


def make_mlfo(**kw: object) -> MLFO:
    torch.manual_seed(0)
    params = MLFOParams(**{"cluster": 8, "queue_size": 32, **kw})  # type: ignore[arg-type]
    return MLFO(build_backbone("tiny", width=8), params=params)


# ---------------------------------------------------------------- ME block


def me_reference(block: MEBlock, x: torch.Tensor) -> torch.Tensor:
    """The block written per frame with 2-D ops, as TEA/MLFO state it (train-mode batch norm)."""
    n, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(n * t, c, h, w)
    bn = lambda v, m: F.batch_norm(v, None, None, m.weight, m.bias, training=True, eps=m.eps)
    r = bn(F.conv2d(frames, block.squeeze.weight[:, :, 0]), block.squeeze_bn)
    rp = F.conv2d(r, block.shift.weight[:, :, 0], padding=1, groups=r.shape[1])
    r, rp = r.view(n, t, -1, h, w), rp.view(n, t, -1, h, w)
    motion = torch.cat([rp[:, 1:] - r[:, :-1], torch.zeros_like(r[:, :1])], dim=1)  # last step: no successor
    m = motion.reshape(n * t, -1, h, w).mean(dim=(2, 3), keepdim=True)
    gate = torch.sigmoid(bn(F.conv2d(m, block.expand.weight[:, :, 0]), block.expand_bn)) - 0.5
    out = frames + gate * frames
    return out.view(n, t, c, h, w).permute(0, 2, 1, 3, 4)


def test_me_block_matches_the_per_frame_reference() -> None:
    torch.manual_seed(0)
    block = MEBlock(32, reduction=8).train()
    for bn in (block.squeeze_bn, block.expand_bn):  # non-trivial affine parameters
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 32, 5, 6, 6)
    out = block(x)
    assert out.shape == x.shape
    assert torch.allclose(out, me_reference(block, x), atol=1e-5)
    # The gate depends on frame order: reversing the input does not just reverse the output.
    assert not torch.allclose(block(x.flip(2)), out.flip(2), atol=1e-3)


@pytest.mark.parametrize("train", [True, False])
def test_me_block_zero_motion_gives_zero_gate_and_identity(train: bool) -> None:
    torch.manual_seed(1)
    block = MEBlock(32, reduction=16).train(train)
    with torch.no_grad():  # identity depthwise filter: a static clip then has exactly zero motion
        block.shift.weight.zero_()
        block.shift.weight[..., 0, 1, 1] = 1.0
    static = torch.randn(3, 32, 1, 5, 5).expand(3, 32, 6, 5, 5).contiguous()
    gate = block.gate(static)
    assert gate.shape == (3, 32, 6, 1, 1) and gate.abs().max() < 1e-6  # exact up to conv-kernel rounding
    assert torch.allclose(block(static), static, atol=1e-6)
    moving = torch.randn(3, 32, 6, 5, 5)
    assert block.gate(moving).abs().max() > 0


# ---------------------------------------------------------------- sampler


def test_indices_follow_one_rate_from_a_uniform_start() -> None:
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        idx = np.array(mlfo_indices(300, 16, 3.0, rng))
        assert len(idx) == 32 and idx[-1] <= 299  # the span fits: no clamping on a long video
        rate = (idx[-1] - idx[0]) / 31
        start = idx[0]
        # Every index is start + r·i rounded, for the one r (estimate tolerates the endpoint rounding).
        assert np.abs(idx - (start + rate * np.arange(32))).max() <= 1.0
        rates.append(rate)
    assert 1.0 - 0.05 <= min(rates) < 1.3 and 2.7 < max(rates) <= 3.0 + 0.05


def test_short_videos_cap_the_rate_and_clamp() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):  # 24 frames, T=8: r <= 24/16 = 1.5
        idx = mlfo_indices(24, 8, 3.0, rng)
        assert len(idx) == 16 and max(idx) <= 23 and (idx[-1] - idx[0]) / 15 <= 1.5 + 1 / 15
    assert (
        mlfo_indices(10, 8, 3.0, rng) == list(range(10)) + [9] * 6
    )  # shorter than 2T: r=1, last frame repeats


def test_min_rate_raises_the_floor_and_yields_to_short_videos() -> None:
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(20):  # the default floor is MLFO's 1: the same draws as before the knob existed
        assert mlfo_indices(300, 16, 3.0, a) == mlfo_indices(300, 16, 3.0, b, min_rate=1.0)
    rng = np.random.default_rng(4)
    draws = [mlfo_indices(300, 16, 3.0, rng, min_rate=2.0) for _ in range(200)]
    rates = [(i[-1] - i[0]) / 31 for i in draws]
    assert 2.0 - 1 / 31 <= min(rates) < 2.2 and max(rates) <= 3.0 + 1 / 31
    for _ in range(20):  # 40 frames, T=8: the cap F / 2T = 2.5 wins over a floor of 4, so the rate is 2.5
        idx = mlfo_indices(40, 8, 3.0, rng, min_rate=4.0)
        assert max(idx) <= 39 and abs((idx[-1] - idx[0]) / 15 - 2.5) <= 1 / 15


def test_split_clips_relation() -> None:
    video = torch.arange(16).view(1, 16, 1, 1).expand(3, 16, 2, 2)
    c1, c2, g = split_clips(video, 8)
    assert c1[0, :, 0, 0].tolist() == list(range(8)) and c2[0, :, 0, 0].tolist() == list(range(8, 16))
    assert g[0, :, 0, 0].tolist() == list(range(0, 16, 2))
    assert torch.equal(g, torch.cat([c1[:, ::2], c2[:, ::2]], dim=1))  # global covers both clips at 2× rate


def test_dataset_yields_three_clips_with_the_index_rule(tmp_path) -> None:
    frames = [np.full((40, 40, 3), 8 * k, dtype=np.uint8) for k in range(24)]  # pixel value encodes the frame
    path = tmp_path / "v.zip"
    write_pack(path, frames)
    ds = MLFODataset([VideoRecord("v", str(path), 24, 3)], ClipSpec(frames=8, resize=40, crop=32))
    torch.manual_seed(0)
    video, label, index = ds[0]
    assert (label, index) == (3, 0) and video.dtype == torch.uint8 and video.shape == (3, 16, 40, 40)
    c1, c2, g, label, index = sample_views(mlfo_augment(mlfo_augment_spec(32)), (video, label, index),
                                           torch.Generator())
    assert (label, index) == (3, 0)
    for clip in (c1, c2, g):
        assert clip.dtype == torch.uint8 and clip.shape == (3, 8, 32, 32)
    plain = mlfo_augment(AugmentSpec(crop=32))  # crop only: the frames' values stay readable
    c1, c2, g, _, _ = sample_views(plain, ds[0], torch.Generator())
    ids = [torch.round(c[0, :, 16, 16].float() / 8).long() for c in (c1, c2, g)]
    assert torch.equal(ids[2], torch.cat([ids[0][::2], ids[1][::2]]))
    steps = torch.diff(torch.cat(ids[:2])).float()
    assert steps.min() >= 0 and steps.max() <= 2  # one rate r <= 1.5, rounded


@pytest.mark.parametrize("flip", [True, False])
def test_flip_param_mirrors_clips_or_never(tmp_path, flip: bool) -> None:
    # A left-dark, right-bright frame: a mirrored clip has its bright side on the left.
    frame = np.zeros((40, 40, 3), dtype=np.uint8)
    frame[:, 20:] = 200
    path = tmp_path / "v.zip"
    write_pack(path, [frame] * 24)
    spec = ClipSpec(frames=8, resize=40, crop=32)
    cfg = Params(pretrain={"mlfo": {"flip": flip}})
    ds = MLFO.make_dataset([VideoRecord("v", str(path), 24, 0)], spec, cfg)
    augment = make_mlfo().make_augment(spec, cfg)
    torch.manual_seed(0)
    mirrored = 0
    for _ in range(10):
        for clip in sample_views(augment, ds[0], torch.Generator().manual_seed(_))[:3]:
            x = clip.float().mean(dim=(0, 1, 2))  # column means over channels, frames and rows
            mirrored += int(x[:8].mean() > x[-8:].mean())
    assert (mirrored > 0) is flip


@pytest.mark.parametrize("colour", ["frame", "clip"])
def test_colour_param_draws_per_frame_or_once_per_clip(tmp_path, colour: str) -> None:
    # A still video: crop and flip are the same for every frame of a clip, so its frames can differ only by
    # colour drawn frame by frame (grey on some frames, jitter factors per frame).
    frame = np.random.default_rng(0).integers(30, 220, size=(40, 40, 3), dtype=np.uint8)
    path = tmp_path / "v.zip"
    write_pack(path, [frame] * 24)
    cfg = Params(pretrain={"mlfo": {"colour": colour}})
    spec = ClipSpec(frames=8, resize=40, crop=32)
    ds = MLFO.make_dataset([VideoRecord("v", str(path), 24, 0)], spec, cfg)
    augment, g = make_mlfo().make_augment(spec, cfg), torch.Generator()
    torch.manual_seed(0)
    clips = [clip for _ in range(4) for clip in sample_views(augment, ds[0], g)[:3]]
    still = [all(torch.equal(c[:, i], c[:, 0]) for i in range(1, c.shape[1])) for c in clips]
    assert all(still) is (colour == "clip") and any(still) is (colour == "clip")
    assert len({c.float().mean().item() for c in clips}) > 1  # per clip, the colour still changes between clips


def test_config_builds_method_and_dataset(tiny_lists) -> None:
    cfg = Params(clip=ClipParams(frames=8, resize=40, crop=32))
    records = read_list(tiny_lists / "pretrain.csv")
    ds = MLFO.make_dataset(records, ClipSpec(frames=8, resize=40, crop=32), cfg)
    assert len(ds) == len(records) and len(ds[0]) == 3 and ds[0][0].shape[1] == 16  # 2T frames
    m = MLFO.from_config(build_backbone("tiny", width=8), cfg, n_samples=len(records))
    assert m.p == MLFOParams() and m.prototype.weight.shape == (200, 128)
    assert m.me_low.expand.out_channels == 16 and m.me_mid.expand.out_channels == 32  # read from the stages


def test_seq_sets_the_pretraining_clip_length_only(tmp_path) -> None:
    path = tmp_path / "v.zip"
    write_pack(path, [np.zeros((40, 40, 3), dtype=np.uint8)] * 40)
    spec, rec = ClipSpec(frames=8, resize=40, crop=32), VideoRecord("v", str(path), 40, 0)
    for seq, frames in ((0, 8), (16, 16)):
        cfg = Params(clip=ClipParams(frames=8, resize=40, crop=32), pretrain={"mlfo": {"seq": seq}})
        m = MLFO.from_config(build_backbone("tiny", width=8), cfg, n_samples=1)
        clip1, clip2, glob = sample_views(m.make_augment(spec, cfg), MLFO.make_dataset([rec], spec, cfg)[0],
                                          torch.Generator())[:3]
        assert clip1.shape[1] == clip2.shape[1] == glob.shape[1] == frames
    assert spec.frames == 8  # the shared clip (retrieval, fine-tune) is untouched


def test_short_levels_names_the_terms_that_cannot_learn(caplog) -> None:
    m = make_mlfo()
    # tiny halves time at layer2, 3 and 4: 16 frames give 8 / 4 / 2 steps, exactly what the levels pool to.
    assert m.short_levels(16) == []
    problems = m.short_levels(8)  # 4 / 2 / 1 steps
    assert len(problems) == 3
    assert "layer4 has 1 time step(s)" in problems[0] and "L_fine cannot go below log(2)" in problems[0]
    assert "L_fmid cannot go below log(2)" in problems[1] and "L_flow cannot go below log(2)" in problems[2]
    assert all("pretrain.mlfo.seq: 16" in p for p in problems)
    cfg = Params(clip=ClipParams(frames=8, resize=40, crop=32), pretrain={"mlfo": {"cluster": 8}})
    mlfo_module._warned.clear()  # other tests may have built an 8-frame MLFO in this process already
    with caplog.at_level("WARNING", logger="vidssl.methods.mlfo"):
        MLFO.from_config(build_backbone("tiny", width=8), cfg, n_samples=4)
        MLFO.from_config(build_backbone("tiny", width=8), cfg, n_samples=4)  # once per process, not per build
    assert [r.getMessage() for r in caplog.records] == problems
    caplog.clear()
    cfg16 = Params(clip=ClipParams(frames=8, resize=40, crop=32),
                   pretrain={"mlfo": {"cluster": 8, "seq": 16}})
    with caplog.at_level("WARNING", logger="vidssl.methods.mlfo"):
        MLFO.from_config(build_backbone("tiny", width=8), cfg16, n_samples=4)
    assert not caplog.records


@pytest.mark.parametrize("steps", [1, 2])
def test_l_fine_cannot_go_below_log2_at_one_high_step(steps: int) -> None:
    # What short_levels warns about, shown on the loss itself: fit layer4 maps of 1 or 2 time steps (pooled to
    # the high level's 2) straight to L_fine. With one step the global clip's two steps are copies, so the
    # loss stops at log 2; with two it goes towards 0.
    torch.manual_seed(0)
    fmap = torch.randn(3 * 4, 16, steps, 2, 2, requires_grad=True)
    opt = torch.optim.Adam([fmap], lr=0.05)
    for _ in range(300):
        loss = timestamp_matching_loss(*F.adaptive_avg_pool3d(fmap, (2, 1, 1)).flatten(2).split(4), 0.07)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if steps == 1:
        assert math.log(2) - 1e-4 <= loss.item() < math.log(2) + 0.01
    else:
        assert loss.item() < 0.05


def test_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="no stage.*conv9.*layer2"):
        MLFO(build_backbone("tiny", width=8), params=MLFOParams(low_stage="conv9"))


# ---------------------------------------------------------------- losses


def test_timestamp_matching_matches_a_reference() -> None:
    torch.manual_seed(0)
    b, d, t, tau = 3, 5, 4, 0.07
    l1, l2, g = torch.randn(b, d, t), torch.randn(b, d, t), torch.randn(b, d, t)
    total = 0.0
    for i in range(b):
        pooled = [l1[i, :, 2 * k : 2 * k + 2].mean(1) for k in range(2)] + [
            l2[i, :, 2 * k : 2 * k + 2].mean(1) for k in range(2)
        ]
        loc = torch.stack([v / v.norm() for v in pooled])  # t×D
        glo = torch.stack([g[i, :, j] / g[i, :, j].norm() for j in range(t)])
        sim = loc @ glo.T / tau
        for j in range(t):
            total += -torch.log_softmax(sim[j], 0)[j] - torch.log_softmax(sim[:, j], 0)[j]
    expected = total / (2 * b * t)
    assert torch.allclose(timestamp_matching_loss(l1, l2, g, tau), expected, atol=1e-5)


def test_timestamp_matching_known_value_when_aligned() -> None:
    t, tau = 4, 0.5
    eye = torch.eye(t).unsqueeze(0)  # global step j = e_j
    local1 = eye[:, :, [0, 0, 1, 1]]  # pools to [e_0, e_1]
    local2 = eye[:, :, [2, 2, 3, 3]]  # pools to [e_2, e_3]
    expected = math.log(1 + (t - 1) * math.exp(-1 / tau))
    assert timestamp_matching_loss(local1, local2, eye, tau).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="even t"):
        timestamp_matching_loss(eye[..., :3], eye[..., :3], eye[..., :3], tau)


def test_reversed_clips_are_extra_negatives_of_their_own_video_only() -> None:
    torch.manual_seed(0)
    b, tau = 3, 0.1
    z1, z2, r1, r2 = (F.normalize(torch.randn(b, 4), dim=1) for _ in range(4))
    rows = [(z, i) for z in (z1, z2) for i in range(b)]
    total = 0.0
    for k, (q, i) in enumerate(rows):
        others = [z[j] for m, (z, j) in enumerate(rows) if m != k]  # every other clip (own partner included)
        partner = (z2 if q is z1 else z1)[i]
        denom = sum(torch.exp(q[i] @ o / tau) for o in [*others, r1[i], r2[i]])
        total += -torch.log(torch.exp(q[i] @ partner / tau) / denom)
    expected = total / (2 * b)
    assert torch.allclose(clip_contrast(z1, z2, tau, reversed_=(r1, r2)), expected, atol=1e-5)
    assert clip_contrast(z1, z2, tau, reversed_=(r1, r2)) > clip_contrast(z1, z2, tau)  # more negatives


def test_graph_target_hand_made_example() -> None:
    ins = torch.tensor([[0.03, 0.90, 0.07], [0.50, 0.46, 0.04], [0.20, 0.02, 0.78]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    g = graph_target(ins, labels, thres=0.05)
    # Row 0: 0.03 < thres but diagonal (kept); 0.07 zeroed by G_sem (other cluster). Row 1: 0.04 < thres.
    # Row 2: only itself in its cluster.
    expected = torch.tensor(
        [[0.03 / 0.93, 0.90 / 0.93, 0.0], [0.50 / 0.96, 0.46 / 0.96, 0.0], [0.0, 0.0, 1.0]]
    )
    assert torch.allclose(g, expected, atol=1e-6)
    assert not g.requires_grad and ins.grad is None  # stop-gradient target
    assert torch.equal(
        ins, torch.tensor([[0.03, 0.90, 0.07], [0.50, 0.46, 0.04], [0.20, 0.02, 0.78]])
    )  # untouched


def test_graph_loss_is_mean_over_all_pairs() -> None:
    torch.manual_seed(0)
    g1, g2 = F.normalize(torch.randn(5, 6), dim=1), F.normalize(torch.randn(5, 6), dim=1)
    ce = F.cross_entropy(g1 @ g2.T / 0.07, torch.arange(5))
    assert graph_loss(g1, g2, torch.eye(5), 0.07).item() == pytest.approx(ce.item() / 5, rel=1e-5)


def test_swapped_prototype_loss_with_hard_codes_is_swapped_cross_entropy() -> None:
    torch.manual_seed(0)
    l1, l2 = torch.randn(4, 6), torch.randn(4, 6)
    a, c = torch.tensor([0, 2, 5, 1]), torch.tensor([3, 3, 0, 4])
    q_s, q_t = F.one_hot(a, 6).float(), F.one_hot(c, 6).float()
    expected = 0.5 * (F.cross_entropy(l1 / 0.1, c) + F.cross_entropy(l2 / 0.1, a))
    assert swapped_prototype_loss(l1, l2, q_s, q_t, 0.1).item() == pytest.approx(expected.item(), rel=1e-5)


def test_logit_queue_reads_the_batch_or_the_filled_rows() -> None:
    torch.manual_seed(0)
    q = LogitQueue(size=6, clusters=3)
    batches = [(torch.randn(2, 3), torch.randn(2, 3)) for _ in range(4)]
    s, t = q.codes(*batches[0], use_queue=False)
    assert torch.allclose(s, sinkhorn(batches[0][0])) and torch.allclose(t, sinkhorn(batches[0][1]))
    s, _ = q.codes(*batches[1], use_queue=True)  # 4 rows pushed so far: only those are read
    assert torch.allclose(s, sinkhorn(torch.cat([batches[0][0], batches[1][0]]))[-2:])
    q.codes(*batches[2], use_queue=True)
    s, t = q.codes(*batches[3], use_queue=True)  # 8 pushed, 6 kept: the last three batches, oldest first
    assert torch.allclose(s, sinkhorn(torch.cat([b[0] for b in batches[1:]]))[-2:])
    assert torch.allclose(t, sinkhorn(torch.cat([b[1] for b in batches[1:]]))[-2:])
    assert int(q.count) == 8 and torch.equal(q.logits[-2:, 1], batches[3][1])


# ---------------------------------------------------------------- the method


def test_epoch_schedules_queue_prototypes_and_graph(monkeypatch) -> None:
    m = make_mlfo(queue_start=1, split=2)
    flags: list[bool] = []
    codes = LogitQueue.codes
    monkeypatch.setattr(
        LogitQueue, "codes", lambda self, *a, **kw: flags.append(kw["use_queue"]) or codes(self, *a, **kw)
    )
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    x = batch(b=2)
    with torch.no_grad():
        m.prototype.weight.mul_(3.0)
    for epoch in range(3):
        before = m.prototype.weight.detach().clone()
        loss, terms = m.training_step(x, epoch)
        rows = m.prototype.weight.norm(dim=1)
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-6)  # re-normalised at every step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if epoch == 0:  # frozen: no gradient, so Adam leaves the (normalised) rows exactly as they were
            assert m.prototype.weight.grad is None and torch.equal(
                m.prototype.weight, F.normalize(before, dim=1)
            )
        else:
            assert m.prototype.weight.grad.abs().sum() > 0
        assert set(terms) == (TERMS | GRAPH_TERMS if epoch >= 2 else TERMS)
    assert flags == [False, True, True]
    assert int(m.queue.count) == 6


def test_step_is_finite_logs_every_term_and_reaches_the_backbone() -> None:
    m = make_mlfo(split=0)
    loss, terms = m.training_step(batch(), epoch=1)
    assert set(terms) == TERMS | GRAPH_TERMS and all(math.isfinite(v) for v in terms.values())
    p = m.p
    total = (
        terms["loss_high"]
        + terms["loss_fine"]
        + p.w_mid * (terms["loss_mid"] + terms["loss_fmid"])
        + p.w_low * (terms["loss_low"] + terms["loss_flow"])
        + p.w_sd * terms["loss_sd"]
        + terms["loss_graph"]
    )
    assert terms["loss"] == pytest.approx(total, rel=1e-5)
    assert terms["loss_graph"] == pytest.approx(
        terms["loss_graph_high"] + 0.5 * terms["loss_graph_mid"] + 0.3 * terms["loss_graph_low"], rel=1e-5
    )
    loss.backward()
    for name in ("stem", "layer2", "layer3", "layer4"):
        grads = [q.grad for q in m.backbone.stages[name].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name
    heads = (m.me_low, m.me_mid, m.low.graph, m.mid.fine, m.high.project, m.project_global, m.prototype)
    for module in heads:
        assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in module.parameters())


def test_a_few_adam_steps_reduce_the_loss() -> None:
    m = make_mlfo()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3, weight_decay=1e-5)
    x = batch(seed=1)
    losses = []
    for _ in range(6):
        loss, _ = m.training_step(x, epoch=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses  # measured ≈ 0.5 over seeds 0-3


def test_reversal_accuracy_known_values() -> None:
    e = torch.eye(4)
    z1, z2 = e[[0, 1]], F.normalize(e[[0, 1]] + 0.1 * e[[2, 2]], dim=1)  # each clip near its video's other clip
    assert reversal_accuracy(z1, z2, e[[3, 3]], e[[3, 3]]) == 1.0  # reversed copies orthogonal: all right
    # an order-blind encoder maps a clip's reversal onto the clip itself: a tie with itself is never "nearer"
    assert reversal_accuracy(z1, z2, z1, z2) == 0.0
    # video 0's reversed clip sits on its clip1, video 1's are orthogonal: 2 of 4 clips right
    r1 = torch.stack([z1[0], e[3]])
    assert reversal_accuracy(z1, z2, r1, e[[3, 3]]) == 0.5
