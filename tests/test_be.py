"""BE: be_mix maths, the temporal-negative rule, the MoCo and triplet variants, and the MSE consistency wrapper."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidssl.data.augment import AugmentSpec
from vidssl.data.clips import ClipSpec, VideoRecord
from vidssl.data.store import write_pack
from vidssl.methods import registry
from vidssl.methods.base import sample_views
from vidssl.methods.be import (
    BE,
    BEConsistency,
    BEMoCo,
    BETripletDataset,
    be_augment_spec,
    triplet_augment,
    first_clips,
    temporal_negative_start,
    looped_indices,
    start_range,
)
from vidssl.methods.contrastive import SimCLR, TwoClipDataset
from vidssl.methods.params_be import BEParams
from vidssl.methods.views import be_mix
from vidssl.models import build_backbone

B, T, S = 4, 8, 32


def clips(seed: int = 0) -> torch.Tensor:
    return torch.rand(B, 3, T, S, S, generator=torch.Generator().manual_seed(seed))


def triplet_batch() -> tuple[torch.Tensor, ...]:
    anchor = clips(0)
    positive = (0.7 * anchor + 0.3 * clips(1)).requires_grad_()
    negative = anchor.roll(3, dims=2).clone().requires_grad_()  # another time of the "same video"
    return anchor.requires_grad_(), positive, negative, torch.zeros(B, dtype=torch.long), torch.arange(B)


def make(variant: str = "moco", **kw) -> BE:
    torch.manual_seed(0)
    return BE(build_backbone("tiny", width=4), variant=variant, queue_size=kw.pop("queue_size", 16), **kw)


# ---------------------------------------------------------------- be_mix


def test_be_mix_zero_lambda_is_identity() -> None:
    x = clips()
    assert torch.equal(be_mix(x, 0.0, torch.Generator().manual_seed(0)), x)


def test_be_mix_exact_blend_with_a_fixed_generator() -> None:
    x, lam = clips(), 0.25
    out = be_mix(x, lam, torch.Generator().manual_seed(3))
    pick = torch.randint(0, T, (B,), generator=torch.Generator().manual_seed(3))
    for i in range(B):
        for t in range(T):
            assert torch.allclose(
                out[i, :, t], (1 - lam) * x[i, :, t] + lam * x[i, :, int(pick[i])], atol=1e-6
            )
    # The added background is one frame per sample, identical for every t.
    added = out - (1 - lam) * x
    assert torch.allclose(added, added[:, :, :1].expand_as(added), atol=1e-6)


def test_be_mix_leaves_a_static_clip_unchanged() -> None:
    static = clips()[:, :, :1].expand(-1, -1, T, -1, -1)
    assert torch.allclose(be_mix(static, 0.3, torch.Generator().manual_seed(0)), static, atol=1e-6)


# ---------------------------------------------------------------- temporal negative


def test_temporal_negative_start_rule() -> None:
    n = 24  # shift n // 3 = 8
    assert temporal_negative_start(10, 10, n) == 18
    assert temporal_negative_start(10, 11, n) == 19
    assert temporal_negative_start(10, 9, n) == 17
    assert temporal_negative_start(10, 12, n) == 12  # |Δ| = 2 is not closer than thresh=2
    assert temporal_negative_start(20, 21, n) == 5  # wraps around the video
    assert temporal_negative_start(10, 10, n, thresh=0) == 10


def test_looped_indices_go_back_to_the_first_frame() -> None:
    # BE's loader steps while the next frame exists and otherwise restarts at the first frame (not modulo)
    assert looped_indices(20, 4, 2, 24) == [20, 22, 0, 2]
    assert looped_indices(21, 4, 2, 24) == [21, 23, 0, 2]  # modulo would give 21, 23, 1, 3
    assert looped_indices(13, 8, 4, 40) == [13, 17, 21, 25, 29, 33, 37, 0]
    assert looped_indices(0, 3, 5, 40) == [0, 5, 10]


def test_start_range_follows_bes_sampler_default() -> None:
    # _sample_indices(new_length=32): starts in [0, N - 32·stride]; pinned to the first frame on shorter videos
    assert start_range(186, 16, 4, 32) == 186 - 128
    assert start_range(100, 16, 4, 32) == 0 and start_range(40, 8, 4, 32) == 0
    assert start_range(40, 8, 4, 0) == 40 - 29  # window 0: every start where the clip fits
    assert start_range(20, 8, 4, 0) == 0


def _triplet_starts(tmp_path, window: int) -> list[tuple[list[int], list[int]]]:
    """(anchor, negative) frame indices of 12 draws from a 24-frame video whose frame t has value 10·t."""
    n_frames, frames, stride = 24, 4, 2
    video = np.stack([np.full((40, 40, 3), 10 * t, dtype=np.uint8) for t in range(n_frames)])
    write_pack(tmp_path / "v.zip", video)
    ds = BETripletDataset(
        [VideoRecord("v", str(tmp_path / "v.zip"), n_frames, 3)],
        ClipSpec(frames=frames, stride=stride, resize=40, crop=40),
        window=window,
    )
    out = []
    for seed in range(12):
        torch.manual_seed(seed)
        sample = ds[0]
        assert len(sample) == 4  # (clip, other, label, index): the positive is the anchor's frames again
        anchor, positive, negative, label, index = sample_views(triplet_augment(AugmentSpec(crop=40)), sample,
                                                                torch.Generator())
        assert (label, index) == (3, 0) and anchor.shape == (3, frames, 40, 40)
        assert torch.equal(anchor, positive)  # same frames; this spec has no random augmentation
        a_idx = [round(float(anchor[0, i].float().mean()) / 10) for i in range(frames)]
        n_idx = [round(float(negative[0, i].float().mean()) / 10) for i in range(frames)]
        assert a_idx == looped_indices(a_idx[0], frames, stride, n_frames)
        assert n_idx == looped_indices(n_idx[0], frames, stride, n_frames)
        assert abs(n_idx[0] - a_idx[0]) >= 2
        out.append((a_idx, n_idx))
    return out


def test_triplet_dataset_pins_short_videos_as_bes_code_does(tmp_path) -> None:
    # 24 frames < 32·2: every anchor starts at frame 0, so every drawn negative (also 0) moves 24 // 3 = 8 on
    draws = _triplet_starts(tmp_path, window=32)
    assert all(a == [0, 2, 4, 6] and n == [8, 10, 12, 14] for a, n in draws)


def test_triplet_dataset_window_zero_draws_every_start(tmp_path) -> None:
    draws = _triplet_starts(tmp_path, window=0)
    starts = {a[0] for a, _ in draws}
    assert len(starts) > 3 and max(starts) <= 24 - 7


def test_make_dataset_uses_be_stride_and_augmentation(tmp_path) -> None:
    write_pack(tmp_path / "v.zip", np.zeros((40, 40, 40, 3), dtype=np.uint8))
    cfg = SimpleNamespace(seed=0, pretrain=SimpleNamespace(be=BEParams()))
    spec = ClipSpec(8, 1, 40, 32)
    ds = BE.make_dataset([VideoRecord("v", str(tmp_path / "v.zip"), 40, 0)], spec, cfg)
    assert isinstance(ds, BETripletDataset) and ds.spec.stride == 4
    aug = be_augment_spec(cfg.pretrain.be, 32)
    assert aug.rotate == 10.0 and aug.jitter == (0.5, 0.5, 0.25, 0.5) and aug.jitter_p == 1.0
    views = sample_views(BE.from_config(build_backbone("tiny", width=4), cfg, n_samples=1).make_augment(spec, cfg),
                         ds[0], torch.Generator())
    assert all(x.shape == (3, 8, 32, 32) for x in views[:3])


# ---------------------------------------------------------------- BE (moco / triplet)


def test_moco_variant_loss_matches_reference_and_negative_gets_gradient() -> None:
    m = make("moco", be_lambda=0.0)
    a, p, n, y, idx = triplet_batch()
    queue0 = m.queue.queue.clone()
    assert not torch.allclose(queue0.norm(dim=1), torch.ones(16), atol=1e-3)  # BE: not normalised
    with torch.no_grad():
        q, k, e = m.project(a), m.project_key(p), m.project(n)
        logits = (
            torch.cat([(q * k).sum(1, keepdim=True), q @ queue0.T, (q * e).sum(1, keepdim=True)], 1) / 0.07
        )
        ref = F.cross_entropy(logits, torch.zeros(B, dtype=torch.long))
    loss, terms = m.training_step((a, p, n, y, idx), 0)
    assert torch.isclose(loss, ref, atol=1e-5)
    assert set(terms) == {"loss", "loss_nce", "pos_prob", "acc_temporal", "be_lambda"}
    assert terms["be_lambda"] == 0.0
    # the probe: the positive outscores the own-video, other-time negative (the last logit)
    assert terms["acc_temporal"] == pytest.approx(((q * k).sum(1) > (q * e).sum(1)).float().mean().item())
    loss.backward()
    assert n.grad is not None and n.grad.abs().sum() > 0  # online encoder on the temporal negative
    assert a.grad.abs().sum() > 0 and p.grad is None  # the positive only feeds the EMA encoder
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in m.backbone.parameters())
    assert int(m.queue.ptr) == B and torch.allclose(m.queue.queue[:B], k, atol=1e-6)


def test_moco_variant_ema_and_a_few_steps() -> None:
    m = make("moco", key_momentum=0.9)
    key0 = [q.clone() for q in m.key_backbone.parameters()]
    opt = torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=0.05, momentum=0.9)
    batch = [t.detach() for t in triplet_batch()]
    queue0, losses = m.queue.queue.clone(), []
    for step in range(8):
        m.queue.queue.copy_(queue0)  # hold negatives fixed: a repeated batch would enqueue its own keys
        m.queue.ptr.zero_()
        loss, _ = m.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            assert all(torch.equal(a, b) for a, b in zip(key0, m.key_backbone.parameters()))
            online = [q.detach().clone() for q in m.backbone.parameters()]
            m.on_step_end()
            assert all(
                torch.allclose(k1, 0.9 * k0 + 0.1 * o, atol=1e-6)
                for k0, k1, o in zip(key0, m.key_backbone.parameters(), online)
            )
        else:
            m.on_step_end()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


def test_triplet_variant_matches_reference() -> None:
    m = make("triplet", be_lambda=0.0)
    assert not hasattr(m, "key_backbone")
    a, p, n, y, idx = triplet_batch()
    with torch.no_grad():
        q, fp, fn = m.project(a), m.project(p), m.project(n)

        def tri(neg: torch.Tensor) -> torch.Tensor:
            return F.relu((q - fp).norm(dim=1) - (q - neg).norm(dim=1) + 0.5).mean()

        ref = tri(fn) + tri(fn.flip(0))
    loss, terms = m.training_step((a, p, n, y, idx), 0)
    assert torch.isclose(loss, ref, atol=1e-5)
    assert set(terms) == {"loss", "loss_intra", "loss_inter", "acc_temporal", "be_lambda"}
    assert terms["acc_temporal"] == pytest.approx(((q - fp).norm(dim=1) < (q - fn).norm(dim=1)).float().mean().item())
    loss.backward()
    assert p.grad.abs().sum() > 0 and n.grad.abs().sum() > 0


def test_bad_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="consistency' form wraps"):
        make("consistency")


# ---------------------------------------------------------------- BE's MoCo baseline


def test_moco_baseline_is_be_without_the_blend() -> None:
    # With the blend off, BEMoCo at λmax 0.3 computes exactly what BE computes at λmax 0 (same weights, batch)
    batch = triplet_batch()
    torch.manual_seed(0)
    baseline = BEMoCo(build_backbone("tiny", width=4), variant="moco", queue_size=16, be_lambda=0.3, mix=False)
    be_loss, be_terms = make(be_lambda=0.0).training_step(batch, 0)
    loss, terms = baseline.training_step(batch, 0)
    assert loss.item() == pytest.approx(be_loss.item(), rel=1e-6)
    assert terms["acc_other"] == be_terms["acc_temporal"] and terms["be_lambda"] == 0.0
    assert "acc_temporal" not in terms and BEMoCo.probes == {} and BE.baseline == "be_moco"


def test_moco_baseline_reads_its_negative_from_another_video(tmp_path) -> None:
    records = []
    for v in range(3):  # video v's frame t has value 50·v + 2·t
        video = np.stack([np.full((40, 40, 3), 50 * v + 2 * t, dtype=np.uint8) for t in range(24)])
        write_pack(tmp_path / f"v{v}.zip", video)
        records.append(VideoRecord(f"v{v}", str(tmp_path / f"v{v}.zip"), 24, v))
    ds = BETripletDataset(records, ClipSpec(4, 2, 40, 40), window=0, negative="other")
    seen = set()
    for seed in range(60):
        torch.manual_seed(seed)
        anchor, negative, _, index = ds[seed % 3]
        assert round(float(anchor[0, 0].float().mean())) // 50 == index
        other = round(float(negative[0, 0].float().mean())) // 50
        assert other != index
        seen.add((index, other))
    assert len(seen) == 6  # every ordered pair of distinct videos turns up
    with pytest.raises(ValueError, match="another video"):
        BETripletDataset(records[:1], ClipSpec(4, 2, 40, 40), negative="other")


def test_moco_baseline_config_reads_its_own_section_and_refuses_other_variants(tmp_path) -> None:
    write_pack(tmp_path / "v.zip", np.zeros((40, 40, 40, 3), dtype=np.uint8))
    recs = [VideoRecord(f"v{i}", str(tmp_path / "v.zip"), 40, 0) for i in range(2)]
    cfg = SimpleNamespace(seed=0, pretrain=SimpleNamespace(be_moco=BEParams(queue_size=8, stride=2)))
    method = BEMoCo.from_config(build_backbone("tiny", width=4), cfg, n_samples=2)
    assert not method.mix and method.queue.items.shape[0] == 8
    ds = BEMoCo.make_dataset(recs, ClipSpec(8, 1, 40, 32), cfg)
    assert ds.negative == "other" and ds.spec.stride == 2
    bad = SimpleNamespace(seed=0, pretrain=SimpleNamespace(be_moco=BEParams(variant="triplet")))
    with pytest.raises(ValueError, match="be_moco.variant"):
        BEMoCo.from_config(build_backbone("tiny", width=4), bad, n_samples=2)


# ---------------------------------------------------------------- consistency wrapper


def inner_simclr() -> SimCLR:
    torch.manual_seed(0)
    return SimCLR(build_backbone("tiny", width=4), n_samples=8, core="simclr", seed=0)


def simclr_batch() -> tuple[torch.Tensor, ...]:
    x1 = clips(0)
    return x1, 0.6 * x1 + 0.4 * clips(1), torch.zeros(B, dtype=torch.long), torch.arange(B)


def test_consistency_adds_weighted_mse_and_keeps_inner_terms() -> None:
    batch = simclr_batch()
    alone, _ = inner_simclr().training_step(batch, 0)
    wrapped = BEConsistency(inner_simclr(), weight=0.5, be_lambda=0.3, seed=0)
    loss, terms = wrapped.training_step(batch, 0)
    assert terms["loss_pretext"] == pytest.approx(alone.item(), rel=1e-5)
    assert terms["loss"] == pytest.approx(terms["loss_pretext"] + 0.5 * terms["loss_be_mse"], rel=1e-5)
    assert {"loss_nce", "loss_be_mse", "be_lambda"} <= set(terms) and terms["loss_be_mse"] > 0
    loss.backward()
    assert all(p.grad is not None for p in wrapped.backbone.parameters())
    # λ = 0: the mixed clip is the clip, so the MSE term vanishes exactly.
    _, terms0 = BEConsistency(inner_simclr(), be_lambda=0.0).training_step(batch, 0)
    assert terms0["loss_be_mse"] == 0.0


def test_consistency_is_the_squared_feature_distance() -> None:
    # BE's ‖F(x̃) − F(x)‖²: summed over the C feature channels, averaged over the batch (not a per-element mean)
    batch = simclr_batch()
    wrapped = BEConsistency(inner_simclr(), weight=1.0, be_lambda=0.3, seed=0)
    g = torch.Generator().manual_seed(7919)  # the wrapper's own draws: λ, then the mixed frame
    lam = float(torch.rand((), generator=g)) * 0.3
    mixed = be_mix(batch[0], lam, g)
    _, terms = wrapped.training_step(batch, 0)
    with torch.no_grad():
        f_mixed, f_x = wrapped.backbone(mixed), wrapped.backbone(batch[0])
    want = sum(float(((f_mixed[i] - f_x[i]) ** 2).sum()) for i in range(B)) / B
    assert terms["be_lambda"] == pytest.approx(lam)
    assert terms["loss_be_mse"] == pytest.approx(want, rel=1e-4)
    assert terms["loss_be_mse"] == pytest.approx(f_x.shape[1] * float(F.mse_loss(f_mixed, f_x)), rel=1e-4)


def test_first_clips_flattens_stacked_clips() -> None:
    x = torch.zeros(2, 3, 3, T, S, S)  # VCOP-style B×N×C×T×H×W
    assert first_clips((x, torch.tensor([0, 1]))).shape == (6, 3, T, S, S)
    assert first_clips(([clips()], torch.zeros(4))).shape == (B, 3, T, S, S)
    with pytest.raises(ValueError, match="no clip tensor"):
        first_clips((torch.zeros(4), torch.zeros(4)))


def test_consistency_variant_built_from_config(monkeypatch) -> None:
    monkeypatch.setitem(registry.METHODS, "simclr", SimCLR)
    cfg = SimpleNamespace(
        seed=0, pretrain=SimpleNamespace(be=BEParams(variant="consistency", pretext="simclr"))
    )
    m = BE.from_config(build_backbone("tiny", width=4), cfg, n_samples=8)
    assert isinstance(m, BEConsistency) and isinstance(m.inner, SimCLR) and m.backbone is m.inner.backbone
    # The training loop asks the built method for its dataset: the wrapper hands out the pretext's.
    spec = ClipSpec(8, 1, 40, 32)
    assert isinstance(m.make_dataset([], spec, cfg), TwoClipDataset)
    assert isinstance(BE.make_dataset([], spec, cfg), TwoClipDataset)
    bad = SimpleNamespace(
        seed=0, pretrain=SimpleNamespace(be=BEParams(variant="consistency", pretext="nope"))
    )
    with pytest.raises(ValueError, match="pretrain.be.pretext is 'nope'"):
        BE.from_config(build_backbone("tiny", width=4), bad, n_samples=8)
