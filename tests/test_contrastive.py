"""SimCLR / MoCo / CMC cores with the BE and intra-negative add-ons (vidssl.methods.contrastive)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidssl.config import Params
from vidssl.data.clips import ClipSpec, VideoRecord
from vidssl.data.store import write_pack
from vidssl.methods.base import sample_views
from vidssl.methods.contrastive import CMC, Contrastive, MoCo, SimCLR, TwoClipDataset, nt_xent_extra
from vidssl.methods.losses import nt_xent
from vidssl.methods.params_contrastive import ContrastiveParams
from vidssl.models import build_backbone

B, T, S = 4, 8, 32


def make(core: str, **kw) -> Contrastive:
    torch.manual_seed(0)
    kw.setdefault("queue_size", 32)
    kw.setdefault("nce_k", 8)
    return Contrastive(build_backbone("tiny", width=4), n_samples=16, core=core, seed=0, **kw)


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x1 = torch.rand(B, 3, T, S, S, generator=g)
    x2 = 0.6 * x1 + 0.4 * torch.rand(B, 3, T, S, S, generator=g)
    return x1, x2, torch.zeros(B, dtype=torch.long), torch.arange(B)


def test_nt_xent_extra_matches_a_loop_reference() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2, n = (F.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=1) for _ in range(3))
    z, ext, t = torch.cat([z1, z2]), torch.cat([n, n]), 0.2
    total = 0.0
    for i in range(6):
        pos = (i + 3) % 6
        logits = [float(z[i] @ z[j]) / t for j in range(6) if j != i] + [float(z[i] @ ext[i]) / t]
        total += -(float(z[i] @ z[pos]) / t - np.log(np.sum(np.exp(logits))))
    assert torch.isclose(nt_xent_extra(z1, z2, n, t), torch.tensor(total / 6, dtype=torch.float64))


def test_simclr_loss_is_losses_nt_xent_of_the_embeddings() -> None:
    m = make("simclr")
    x1, x2, y, idx = batch()
    with torch.no_grad():
        ref = nt_xent(m.head(m.backbone(x1)), m.head(m.backbone(x2)), 0.07)
        loss, terms = m.training_step((x1, x2, y, idx), 0)
    assert torch.isclose(loss, ref, atol=1e-6) and terms["loss_nce"] == pytest.approx(float(ref), abs=1e-6)


def test_moco_loss_is_reference_infonce_over_queue_and_queue_advances() -> None:
    m = make("moco")
    x1, x2, y, idx = batch()
    queue0 = m.queue.queue.clone()
    with torch.no_grad():
        q = m.head(m.backbone(x1))
        k = m.key_head(m.key_backbone(x2))
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue0.T], dim=1) / 0.07
        ref = -torch.log_softmax(logits, dim=1)[:, 0].mean()
        loss, _ = m.training_step((x1, x2, y, idx), 0)
    assert torch.isclose(loss, ref, atol=1e-5)
    assert int(m.queue.ptr) == B and torch.allclose(m.queue.queue[:B], k, atol=1e-6)
    assert torch.equal(m.queue.queue[B:], queue0[B:])


COMBOS = [
    (core, be, neg)
    for core in ("simclr", "moco", "cmc")
    for be in (False, True)
    for neg in ("none", "repeat", "shuffle")
]


@pytest.mark.parametrize(("core", "be", "intra_neg"), COMBOS)
def test_every_core_and_addon_trains(core: str, be: bool, intra_neg: str) -> None:
    m = make(core, be=be, intra_neg=intra_neg)
    loss, terms = m.training_step(batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in m.backbone.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    expected = {"loss", "loss_view1", "loss_view2"} if core == "cmc" else {"loss", "loss_nce"}
    assert set(terms) == expected | ({"be_lambda"} if be else set())
    assert terms["loss"] == pytest.approx(loss.item(), rel=1e-6)
    if be:
        assert 0.0 <= terms["be_lambda"] <= 0.3


def test_intra_negative_adds_a_logit_that_raises_the_loss() -> None:
    # Same weights and inputs: appending a negative to every softmax can only raise the cross-entropy.
    x = batch()
    for core in ("simclr", "moco", "cmc"):
        base, _ = make(core).training_step(x, 0)
        more, _ = make(core, intra_neg="repeat").training_step(x, 0)
        assert more.item() > base.item()


def test_moco_key_encoder_is_frozen_and_follows_ema() -> None:
    m = make("moco", key_momentum=0.9)
    key0 = [p.clone() for p in m.key_backbone.parameters()]
    assert all(not p.requires_grad for p in m.key_backbone.parameters())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    loss, _ = m.training_step(batch(), 0)
    loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(key0, m.key_backbone.parameters()))
    online = [p.detach().clone() for p in m.backbone.parameters()]
    m.on_step_end()
    moved = False
    for k0, k1, o in zip(key0, m.key_backbone.parameters(), online):
        assert torch.allclose(k1, 0.9 * k0 + 0.1 * o, atol=1e-6)
        moved |= not torch.equal(k0, k1)
    assert moved


def test_cmc_updates_bank_rows_of_the_batch_only() -> None:
    m = make("cmc")
    before = m.bank1.memory.clone()
    m.training_step(batch(), 0)
    assert not torch.equal(m.bank1.memory[:B], before[:B]) and torch.equal(m.bank1.memory[B:], before[B:])
    assert torch.allclose(m.bank1.memory[:B].norm(dim=1), torch.ones(B), atol=1e-5)


@pytest.mark.parametrize("core", ["simclr", "moco", "cmc"])
def test_a_few_steps_reduce_the_loss(core: str) -> None:
    m = make(core, intra_neg="repeat", queue_size=8)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    x = batch()
    queue0 = m.queue.queue.clone() if core == "moco" else None
    losses = []
    for _ in range(8):
        if queue0 is not None:
            # A repeated batch would enqueue its own keys as negatives; hold the negatives fixed instead.
            m.queue.queue.copy_(queue0)
            m.queue.ptr.zero_()
        loss, _ = m.training_step(x, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.on_step_end()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.7 * losses[0]


def test_config_sections_and_core_check() -> None:
    cfg = Params()
    for cls, core in ((SimCLR, "simclr"), (MoCo, "moco"), (CMC, "cmc")):
        m = cls.from_config(build_backbone("tiny", width=4), cfg, n_samples=8)
        assert m.core == core and m.name == core
    # A section that leaves core unset (as params.yaml would) takes the method's own core.
    ok = SimpleNamespace(
        seed=0, pretrain=SimpleNamespace(moco=ContrastiveParams.model_validate({"queue_size": 64}))
    )
    m = MoCo.from_config(build_backbone("tiny", width=4), ok, n_samples=8)
    assert m.core == "moco" and m.queue.queue.shape == (64, 128)
    bad = SimpleNamespace(seed=0, pretrain=SimpleNamespace(moco=ContrastiveParams(core="simclr")))
    with pytest.raises(ValueError, match="pretrain.moco.core is 'simclr'"):
        MoCo.from_config(build_backbone("tiny", width=4), bad, n_samples=8)
    with pytest.raises(ValueError, match="unknown contrastive core"):
        make("byol")
    with pytest.raises(ValueError, match="unknown intra_neg"):
        make("simclr", intra_neg="reverse")


def test_two_clip_dataset(tmp_path) -> None:
    recs = []
    for i in range(2):
        frames = np.random.default_rng(i).integers(0, 256, (24, 40, 40, 3), dtype=np.uint8)
        path = tmp_path / f"v{i}.zip"
        write_pack(path, frames)
        recs.append(VideoRecord(f"v{i}", str(path), 24, i))
    cfg = SimpleNamespace(seed=0, pretrain=SimpleNamespace(simclr=ContrastiveParams(jitter=None, blur_p=0.0)))
    spec = ClipSpec(frames=T, stride=1, resize=40, crop=S)
    ds = SimCLR.make_dataset(recs, spec, cfg)
    assert isinstance(ds, TwoClipDataset)
    torch.manual_seed(0)
    x1, x2, label, index = ds[1]
    assert x1.shape == x2.shape == (3, T, 40, 40) and x1.dtype == torch.uint8  # frames only, uncropped
    augment = SimCLR.from_config(build_backbone("tiny", width=4), cfg, n_samples=2).make_augment(spec, cfg)
    v1, v2, label, index = sample_views(augment, (x1, x2, label, index), torch.Generator())
    assert v1.shape == v2.shape == (3, T, S, S) and v1.dtype == torch.uint8
    assert (label, index) == (1, 1) and not torch.equal(v1, v2)
