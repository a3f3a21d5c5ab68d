"""Tests for vidssl.methods.bank: CMC memory bank sampling, gathering, momentum update and logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidssl.methods.bank import MemoryBank, bank_logits, nce_softmax_loss


def test_init_is_uniform_within_cmc_bounds_and_seeded() -> None:
    bank = MemoryBank(500, 64, seed=3)
    bound = 1.0 / math.sqrt(64 / 3)
    mem = bank.memory
    assert mem.shape == (500, 64)
    assert mem.abs().max() <= bound
    assert mem.max() > 0.95 * bound and mem.min() < -0.95 * bound  # fills the interval, not a narrower one
    # U(-a, a) has variance a²/3 = 1/D, so rows have norm ≈ 1 on average
    assert mem.pow(2).sum(1).mean().item() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(mem, MemoryBank(500, 64, seed=3).memory)
    assert not torch.equal(mem, MemoryBank(500, 64, seed=4).memory)
    assert "memory" in bank.state_dict()


def test_sample_puts_idx_in_column_zero_and_stays_in_range() -> None:
    bank = MemoryBank(50, 8, seed=0)
    idx = torch.tensor([0, 7, 49, 7])
    gen = torch.Generator().manual_seed(1)
    out = bank.sample(idx, 200, generator=gen)
    assert out.shape == (4, 201) and out.dtype == torch.long
    assert torch.equal(out[:, 0], idx)
    assert out.min() >= 0 and out.max() < 50
    assert len(out[:, 1:].unique()) == 50  # 800 uniform draws over 50 rows hit every row
    again = bank.sample(idx, 200, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)


def test_rows_gathers_and_is_detached() -> None:
    bank = MemoryBank(10, 4, seed=0)
    ind = torch.tensor([[3, 1, 1], [0, 9, 3]])
    rows = bank.rows(ind)
    assert rows.shape == (2, 3, 4) and not rows.requires_grad
    for b in range(2):
        for j in range(3):
            assert torch.equal(rows[b, j], bank.memory[ind[b, j]])


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9, 1.0])
def test_update_is_normalized_momentum_mix(momentum: float) -> None:
    bank = MemoryBank(20, 6, momentum=momentum, seed=0)
    before = bank.memory.clone()
    idx = torch.tensor([2, 11, 5])
    feats = torch.randn(3, 6, generator=torch.Generator().manual_seed(0)) * 3  # any scale
    bank.update(idx, feats)
    expected = F.normalize(momentum * before[idx] + (1 - momentum) * feats, dim=1)
    torch.testing.assert_close(bank.memory[idx], expected, rtol=0, atol=0)
    torch.testing.assert_close(bank.memory[idx].norm(dim=1), torch.ones(3))
    untouched = torch.ones(20, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(bank.memory[untouched], before[untouched])


def test_update_takes_no_gradient_and_checks_shape() -> None:
    bank = MemoryBank(8, 4)
    feats = torch.randn(2, 4, requires_grad=True)
    bank.update(torch.tensor([0, 1]), feats)
    assert not bank.memory.requires_grad
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        bank.update(torch.tensor([0, 1]), torch.randn(2, 5))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="momentum"):
        MemoryBank(4, 4, momentum=1.5)
    with pytest.raises(ValueError, match="size=0"):
        MemoryBank(0, 4)


def test_bank_logits_equal_dot_over_tau() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 5, generator=gen)
    rows = torch.randn(3, 7, 5, generator=gen)
    logits = bank_logits(q, rows, 0.07)
    ref = torch.tensor([[float(rows[b, j] @ q[b]) / 0.07 for j in range(7)] for b in range(3)])
    torch.testing.assert_close(logits, ref)


def test_nce_softmax_loss_matches_log_softmax_of_column_zero() -> None:
    logits = torch.randn(5, 9, generator=torch.Generator().manual_seed(2))
    ref = -torch.stack([logits[i, 0] - torch.logsumexp(logits[i], 0) for i in range(5)]).mean()
    torch.testing.assert_close(nce_softmax_loss(logits), ref)
    # uniform logits give log(K+1)
    assert nce_softmax_loss(torch.zeros(4, 10)).item() == pytest.approx(math.log(10))


def test_cmc_training_with_bank_reduces_loss() -> None:
    """IIC-style step: query vs the other view's bank; 20 SGD steps lower the loss."""
    torch.manual_seed(0)
    n, d_in, d = 32, 16, 8
    x1, x2 = torch.randn(n, d_in), torch.randn(n, d_in)
    enc = torch.nn.Linear(d_in, d)
    bank1, bank2 = MemoryBank(n, d, seed=0), MemoryBank(n, d, seed=1)
    opt = torch.optim.SGD(enc.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(21):
        idx = torch.arange(n)
        ind = bank1.sample(idx, 16, generator=gen)
        v1, v2 = enc(x1), enc(x2)
        loss = nce_softmax_loss(bank_logits(v1, bank2.rows(ind), 0.2))
        loss = loss + nce_softmax_loss(bank_logits(v2, bank1.rows(ind), 0.2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        bank1.update(idx, v1)
        bank2.update(idx, v2)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[1]  # from step 1 on, the banks hold real features
