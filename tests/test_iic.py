"""IIC: view and negative generators, the loss against a hand-written reference, and training behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidssl.methods.iic import IIC
from vidssl.methods.views import repeat_frame, residual, shuffle_chunks
from vidssl.models import build_backbone


def clips(b: int = 4, t: int = 8, s: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, t, s, s, generator=torch.Generator().manual_seed(seed))


def test_residual_is_the_wrapped_frame_difference() -> None:
    x = clips()
    r = residual(x)
    for t in range(x.shape[2]):
        assert torch.allclose(r[:, :, t], (x[:, :, t] - x[:, :, t - 1] + 1) / 2)  # t-1 = -1 wraps at t=0
    static = x[:, :, :1].expand_as(x)
    assert torch.allclose(residual(static), torch.full_like(x, 0.5))  # no motion, no signal


def test_repeat_frame_tiles_one_frame_of_each_clip() -> None:
    x = clips()
    neg = repeat_frame(x, torch.Generator().manual_seed(3))
    for i in range(x.shape[0]):
        frame = neg[i, :, 0]
        assert all(torch.equal(neg[i, :, t], frame) for t in range(x.shape[2]))
        assert any(torch.equal(frame, x[i, :, t]) for t in range(x.shape[2]))


def test_shuffle_chunks_swaps_exactly_two_chunks() -> None:
    x = clips(b=6, t=8)
    out = shuffle_chunks(x, 4, torch.Generator().manual_seed(5))
    for i in range(x.shape[0]):
        src = [x[i, :, 2 * c : 2 * c + 2] for c in range(4)]
        dst = [out[i, :, 2 * c : 2 * c + 2] for c in range(4)]
        moved = [c for c in range(4) if not torch.equal(src[c], dst[c])]
        assert len(moved) == 2
        a, b = moved
        assert torch.equal(dst[a], src[b]) and torch.equal(dst[b], src[a])
    with pytest.raises(ValueError, match="divisible"):
        shuffle_chunks(clips(t=6), 4)


def make_iic(**kw: object) -> IIC:
    torch.manual_seed(0)
    return IIC(build_backbone("tiny", width=4), n_samples=12, nce_k=6, **kw)  # type: ignore[arg-type]


def test_loss_matches_a_reference_written_out() -> None:
    m = make_iic()
    q = torch.randn(4, m.backbone.out_dim)
    idx = m.bank1.sample(torch.arange(4), 6)
    pos_rows, neg_rows = m.bank2.rows(idx), m.bank_neg.rows(idx)
    logits = torch.cat([torch.einsum("bkd,bd->bk", pos_rows, q), torch.einsum("bkd,bd->bk", neg_rows, q)], 1) / 0.07
    expected = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))  # positive: the sample's own M2 row
    assert torch.allclose(m._view_loss(q, m.bank2, idx), expected, atol=1e-5)
    assert logits.shape == (4, 14)  # 2K+2 logits per query


def test_training_step_updates_banks_and_reaches_the_backbone() -> None:
    m = make_iic()
    x, index = clips(), torch.tensor([0, 3, 5, 7])
    before = {n: getattr(m, n).memory.clone() for n in ("bank1", "bank2", "bank_neg")}
    bn = next(mod for mod in m.backbone.modules() if isinstance(mod, torch.nn.BatchNorm3d))
    loss, terms = m.training_step((x, torch.zeros(4), index), epoch=0)
    assert torch.isfinite(loss) and set(terms) == {"loss", "loss_view1", "loss_view2"}
    assert terms["loss"] == pytest.approx(terms["loss_view1"] + terms["loss_view2"], rel=1e-5)
    loss.backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    for name, old in before.items():
        new = getattr(m, name).memory
        changed = (new != old).any(dim=1).nonzero().flatten().tolist()
        assert changed == index.tolist(), name  # exactly the batch's rows move
        assert torch.allclose(new[index].norm(dim=1), torch.ones(4), atol=1e-5)
    assert int(bn.num_batches_tracked) == 3  # view 1, residual view and the negative all pass BN


def test_plain_cmc_and_rgb_view_variants() -> None:
    cmc = make_iic(intra_neg="none")
    assert cmc.bank_neg is None
    loss, _ = cmc.training_step((clips(), None, torch.arange(4)), epoch=0)
    assert torch.isfinite(loss)
    rgb = make_iic(view2="rgb")
    _, terms = rgb.training_step((clips(), None, torch.arange(4)), epoch=0)
    assert torch.isfinite(torch.tensor(terms["loss"]))
    with pytest.raises(ValueError, match="intra_neg"):
        make_iic(intra_neg="reverse")


def test_merged_views_concatenate_rgb_and_residual_features() -> None:
    m = make_iic().eval()
    x = clips(t=8)
    single = m.embed(x, feature="gap")
    merged = m.embed(x, feature="gap", merged=True)
    assert merged.shape[1] == 2 * single.shape[1]
    assert torch.allclose(merged[:, : single.shape[1]], single)


def test_sgd_on_a_fixed_batch_lowers_the_loss() -> None:
    m = make_iic(normalize=True)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    x, index = clips(b=8), torch.arange(8)
    losses = []
    for _ in range(15):
        loss, _ = m.training_step((x, None, index), epoch=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
