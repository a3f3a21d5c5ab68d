"""Tests for vidssl.methods.queue: FIFO ring buffer, EMA key encoder, MoCo logits."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.methods.losses import nce_softmax_loss
from vidssl.methods.queue import FeatureQueue, copy_params, ema_update, moco_logits


def _keys(start: int, n: int, dim: int = 3) -> torch.Tensor:
    """Row i is filled with the value start+i, so positions are easy to read."""
    return torch.arange(start, start + n, dtype=torch.float32).view(-1, 1).repeat(1, dim)


def test_init_normalized_or_uniform() -> None:
    unit = FeatureQueue(100, 16)
    torch.testing.assert_close(unit.queue.norm(dim=1), torch.ones(100))
    raw = FeatureQueue(100, 16, normalize_init=False)
    assert raw.queue.abs().max() <= 1 / math.sqrt(16 / 3)
    assert not torch.allclose(raw.queue.norm(dim=1), torch.ones(100))
    assert {"queue", "ptr"} <= set(raw.state_dict())


def test_enqueue_is_fifo_with_wraparound() -> None:
    q = FeatureQueue(5, 3)
    q.enqueue(_keys(0, 3))
    assert int(q.ptr) == 3
    torch.testing.assert_close(q.queue[:3], _keys(0, 3))
    q.enqueue(_keys(3, 3))  # slots 3, 4, then wraps to 0
    assert int(q.ptr) == 1
    torch.testing.assert_close(q.queue[:, 0], torch.tensor([5.0, 1, 2, 3, 4]))
    # reading from ptr gives oldest-to-newest order
    ordered = torch.roll(q.queue[:, 0], -int(q.ptr))
    torch.testing.assert_close(ordered, torch.tensor([1.0, 2, 3, 4, 5]))


def test_enqueue_larger_than_queue_keeps_last_keys_like_sequential() -> None:
    big = FeatureQueue(4, 3)
    big.enqueue(_keys(0, 1))
    big.enqueue(_keys(100, 11))
    seq = FeatureQueue(4, 3)
    seq.enqueue(_keys(0, 1))
    for i in range(11):
        seq.enqueue(_keys(100 + i, 1))
    assert torch.equal(big.queue, seq.queue) and int(big.ptr) == int(seq.ptr) == 0
    assert sorted(big.queue[:, 0].tolist()) == [107.0, 108.0, 109.0, 110.0]


def test_enqueue_detaches_and_checks_shape() -> None:
    q = FeatureQueue(4, 3)
    q.enqueue(torch.randn(2, 3, requires_grad=True))
    assert not q.queue.requires_grad
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        q.enqueue(torch.randn(2, 4))


def test_items_is_a_snapshot_safe_for_backward() -> None:
    q = FeatureQueue(6, 4)
    query = torch.randn(2, 4, requires_grad=True)
    logits = moco_logits(query, torch.randn(2, 4), q.items, 0.1)
    q.enqueue(torch.randn(2, 4))  # in-place write before backward must not break autograd
    nce_softmax_loss(logits).backward()
    assert query.grad is not None


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.data.normal_()
    online(torch.randn(8, 4))  # moves online's BN running stats
    return online, target


def test_ema_update_math() -> None:
    online, target = _pair()
    old = [p.clone() for p in target.parameters()]
    ema_update(online, target, 0.9)
    for p_t, p_o, p_old in zip(target.parameters(), online.parameters(), old, strict=True):
        torch.testing.assert_close(p_t, 0.9 * p_old + 0.1 * p_o)
    for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
        assert torch.equal(b_t, b_o)


def test_ema_update_extremes_and_copy_params() -> None:
    online, target = _pair()
    old = [p.clone() for p in target.parameters()]
    ema_update(online, target, 1.0)
    assert all(torch.equal(p, o) for p, o in zip(target.parameters(), old, strict=True))
    ema_update(online, target, 0.0)
    assert all(torch.equal(p, o) for p, o in zip(target.parameters(), online.parameters(), strict=True))
    online, target = _pair()
    copy_params(online, target)
    assert all(torch.equal(p, o) for p, o in zip(target.parameters(), online.parameters(), strict=True))
    assert all(torch.equal(b, o) for b, o in zip(target.buffers(), online.buffers(), strict=True))
    assert not any(p.requires_grad for p in target.parameters())
    with pytest.raises(ValueError, match="momentum"):
        ema_update(online, target, 1.2)


def test_moco_logits_positive_first_and_extra_column() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, extra = (torch.randn(3, 5, generator=gen) for _ in range(3))
    queue = torch.randn(7, 5, generator=gen)
    tau = 0.07
    logits = moco_logits(q, k, queue, tau)
    assert logits.shape == (3, 8)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / tau)
    torch.testing.assert_close(logits[:, 1:], q @ queue.T / tau)
    with_extra = moco_logits(q, k, queue, tau, extra_negatives=extra)
    assert with_extra.shape == (3, 9)
    torch.testing.assert_close(with_extra[:, :8], logits)
    torch.testing.assert_close(with_extra[:, 8], (q * extra).sum(1) / tau)


def test_moco_training_reduces_loss() -> None:
    """20 SGD steps of MoCo (EMA key encoder, queue, BE-style extra negative) lower the loss."""
    torch.manual_seed(0)
    n, d_in, d = 64, 16, 8
    x = torch.randn(n, d_in)
    enc = nn.Linear(d_in, d)
    key_enc = nn.Linear(d_in, d)
    copy_params(enc, key_enc)
    queue = FeatureQueue(32, d)
    with torch.no_grad():  # start from real keys: random ones are easier negatives than trained keys
        queue.enqueue(F.normalize(key_enc(x[:32]), dim=1))
    opt = torch.optim.SGD(enc.parameters(), lr=0.5)
    losses = []
    for _ in range(20):
        x_q = x + 0.1 * torch.randn_like(x)
        x_k = x + 0.1 * torch.randn_like(x)
        q = F.normalize(enc(x_q), dim=1)
        with torch.no_grad():
            k = F.normalize(key_enc(x_k), dim=1)
        neg = F.normalize(enc(torch.roll(x, 1, 0)), dim=1)
        loss = nce_softmax_loss(moco_logits(q, k, queue.items, 0.2, extra_negatives=neg))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(enc, key_enc, 0.9)
        queue.enqueue(k)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
