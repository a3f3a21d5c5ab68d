"""Tests for vidssl.methods.losses and vidssl.methods.distributed: known values, loop references, training."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vidssl.methods import distributed
from vidssl.methods.losses import (
    averaged_similarity,
    info_nce,
    multi_positive_info_nce,
    nt_xent,
    nt_xent_from_similarity,
    shuffle_rank_loss,
    sinkhorn,
)

CASES = [(1, 3, 0.07), (4, 8, 0.1), (7, 16, 0.5), (16, 32, 1.0)]


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1
    )


# ---- loop-based references: one row at a time, explicit log-softmax --------------------------------------


def _ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    z = torch.cat([z1, z2]).tolist()
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        sims = {j: sum(a * b for a, b in zip(z[i], z[j], strict=True)) / tau for j in range(n2) if j != i}
        partner = (i + n2 // 2) % n2
        total += -(sims[partner] - math.log(sum(math.exp(s) for s in sims.values())))
    return total / n2


def _ref_multi_positive(z: torch.Tensor, labels: list[int], tau: float, extra: torch.Tensor | None) -> float:
    total = 0.0
    for i in range(len(labels)):
        num, den = 0.0, 0.0
        for j in range(len(labels)):
            if j == i:
                continue
            e = math.exp(float(z[i] @ z[j]) / tau)
            den += e
            num += e if labels[j] == labels[i] else 0.0
        if extra is not None:
            rows = extra if extra.dim() == 2 else extra[i]
            den += sum(math.exp(float(z[i] @ r) / tau) for r in rows)
        total += -math.log(num / den)
    return total / len(labels)


def _ref_shuffle_rank(a: torch.Tensor, c: torch.Tensor, theta: float, clamp: float | None) -> float:
    b, s, _ = a.shape
    terms = []
    for n in range(b):
        v = torch.cat([a[n], c[n]])
        for r in range(2 * s):
            pos = float(v[r] @ v[(r + s) % (2 * s)])
            for o in range(2 * s):
                if o in (r, (r + s) % (2 * s)):
                    continue
                arg = (float(v[r] @ v[o]) - pos) / theta
                arg = min(arg, clamp) if clamp is not None else arg
                terms.append(math.log1p(math.exp(arg)))
    return sum(terms) / len(terms)


# ---- NT-Xent ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("b", "d", "tau"), CASES)
def test_nt_xent_matches_loop_reference_and_is_symmetric(b: int, d: int, tau: float) -> None:
    z1, z2 = _unit(b, d, seed=1), _unit(b, d, seed=2)
    loss = nt_xent(z1, z2, tau)
    assert loss.item() == pytest.approx(_ref_nt_xent(z1, z2, tau), rel=1e-9)
    assert loss.item() == pytest.approx(nt_xent(z2, z1, tau).item(), rel=1e-12)


@pytest.mark.parametrize("b", [1, 3, 10])
def test_nt_xent_identical_embeddings_give_log_2b_minus_1(b: int) -> None:
    z = torch.ones(b, 4) / 2
    assert nt_xent(z, z.clone(), 0.1).item() == pytest.approx(math.log(2 * b - 1), rel=1e-6)


def test_nt_xent_separated_pairs_with_small_tau_is_near_zero() -> None:
    z = torch.eye(6)  # pair i is e_i in both views, orthogonal to every other pair
    assert nt_xent(z, z.clone(), 0.01).item() < 1e-30 + 1e-6
    assert nt_xent(z, z.clone(), 0.01).item() < nt_xent(z, z.clone(), 0.5).item()


def test_nt_xent_gather_hook_is_used() -> None:
    z1, z2 = _unit(3, 5, seed=1), _unit(3, 5, seed=2)
    doubled = nt_xent(z1, z2, 0.2, gather=lambda x: torch.cat([x, x.flip(0)]))
    assert doubled.item() == pytest.approx(
        nt_xent(torch.cat([z1, z1.flip(0)]), torch.cat([z2, z2.flip(0)]), 0.2).item()
    )


def test_nt_xent_from_similarity_rejects_odd_matrix() -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        nt_xent_from_similarity(torch.zeros(3, 3), 0.1)


# ---- InfoNCE and multi-positive --------------------------------------------------------------------------


@pytest.mark.parametrize(("b", "d", "tau"), CASES)
def test_info_nce_shared_and_per_sample_negatives(b: int, d: int, tau: float) -> None:
    q, k, neg = _unit(b, d, seed=1), _unit(b, d, seed=2), _unit(5, d, seed=3)
    ref = 0.0
    for i in range(b):
        logits = [float(q[i] @ k[i]) / tau] + [float(q[i] @ n) / tau for n in neg]
        ref += -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    assert info_nce(q, k, neg, tau).item() == pytest.approx(ref / b, rel=1e-9)
    per_sample = neg.unsqueeze(0).expand(b, -1, -1)
    assert info_nce(q, k, per_sample, tau).item() == pytest.approx(ref / b, rel=1e-9)


@pytest.mark.parametrize(("b", "d", "tau"), CASES)
def test_multi_positive_matches_loop_reference(b: int, d: int, tau: float) -> None:
    n_clips = 3
    z = _unit(b * n_clips, d, seed=4)
    labels = [i % b for i in range(b * n_clips)]
    lab = torch.tensor(labels)
    assert multi_positive_info_nce(z, lab, tau).item() == pytest.approx(
        _ref_multi_positive(z, labels, tau, None), rel=1e-9
    )
    shared, per_row = _unit(4, d, seed=5), _unit(b * n_clips, 2, d, seed=6)
    for extra in (shared, per_row):
        got = multi_positive_info_nce(z, lab, tau, extra_negatives=extra).item()
        assert got == pytest.approx(_ref_multi_positive(z, labels, tau, extra), rel=1e-9)


def test_multi_positive_with_pairs_equals_nt_xent() -> None:
    z1, z2 = _unit(5, 8, seed=1), _unit(5, 8, seed=2)
    labels = torch.arange(5).repeat(2)
    got = multi_positive_info_nce(torch.cat([z1, z2]), labels, 0.1).item()
    assert got == pytest.approx(nt_xent(z1, z2, 0.1).item(), rel=1e-12)


def test_multi_positive_requires_a_positive_per_row() -> None:
    with pytest.raises(ValueError, match="at least twice"):
        multi_positive_info_nce(_unit(3, 4), torch.tensor([0, 0, 1]), 0.1)


# ---- DualVar series losses -------------------------------------------------------------------------------


def test_averaged_similarity_matches_double_sum() -> None:
    s_a, s_b = _unit(3, 2, 5, seed=1), _unit(4, 2, 5, seed=2)
    sim = averaged_similarity(s_a, s_b)
    assert sim.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            ref = sum(float(s_a[i, p] @ s_b[j, q]) for p in range(2) for q in range(2)) / 4
            assert sim[i, j].item() == pytest.approx(ref, rel=1e-12)


def test_shuffle_rank_hand_computed_values_s2() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    a = torch.stack([e1, e2]).unsqueeze(0)
    ordered, swapped = a.clone(), a.flip(1)
    # ordered: every row has pos sim 1 and two others at 0 -> softplus(-1/θ)
    assert shuffle_rank_loss(a, ordered, 1.0).item() == pytest.approx(math.log1p(math.exp(-1)), rel=1e-6)
    # swapped: every row has pos sim 0 and others {0, 1} -> mean(softplus(0), softplus(1/θ))
    assert shuffle_rank_loss(a, swapped, 1.0).item() == pytest.approx(
        (math.log(2) + math.log1p(math.e)) / 2, rel=1e-6
    )
    # θ = 0.05 gives arg 20 for the violating entry; the SimCLR clamp caps it at 5
    clamped = shuffle_rank_loss(a, swapped, 0.05, clamp=5.0).item()
    assert clamped == pytest.approx((math.log(2) + math.log1p(math.exp(5))) / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("b", "s", "theta", "clamp"), [(2, 2, 0.05, None), (3, 2, 0.05, 5.0), (2, 4, 0.3, None)]
)
def test_shuffle_rank_matches_loop_reference(b: int, s: int, theta: float, clamp: float | None) -> None:
    a, c = _unit(b, s, 6, seed=1), _unit(b, s, 6, seed=2)
    assert shuffle_rank_loss(a, c, theta, clamp).item() == pytest.approx(
        _ref_shuffle_rank(a, c, theta, clamp), rel=1e-9
    )


def test_shuffle_rank_lower_when_order_respected() -> None:
    a = _unit(8, 2, 16, seed=1)
    c = F.normalize(a + 0.3 * _unit(8, 2, 16, seed=2), dim=-1)
    assert shuffle_rank_loss(a, c, 0.05).item() < shuffle_rank_loss(a, c.flip(1), 0.05).item()


# ---- Sinkhorn --------------------------------------------------------------------------------------------


def test_sinkhorn_marginals() -> None:
    b, k = 64, 8
    scores = _unit(b, 16, seed=1).float() @ _unit(k, 16, seed=2).float().T
    scores[:, 0] += 0.3  # one prototype attracts everything before balancing
    codes = sinkhorn(scores)
    assert codes.shape == (b, k) and (codes >= 0).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(b))
    # 3 rounds (MLFO's setting) only move prototype masses towards b/k; many rounds reach it
    raw_gap = (torch.softmax(scores / 0.05, dim=1).sum(0) - b / k).abs().max()
    assert (codes.sum(0) - b / k).abs().max() < 0.5 * raw_gap
    tight = sinkhorn(scores, iterations=100)
    torch.testing.assert_close(tight.sum(0), torch.full((k,), b / k), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(sinkhorn(scores + 7.0), codes)  # invariant to a constant shift


def test_sinkhorn_has_no_gradient() -> None:
    scores = torch.randn(4, 3, requires_grad=True)
    assert not sinkhorn(scores).requires_grad


# ---- training sanity (solo-learn style) ------------------------------------------------------------------


LOSSES = {
    "nt_xent": lambda e1, e2: nt_xent(e1, e2, 0.2),
    "info_nce": lambda e1, e2: info_nce(
        e1, e2, torch.stack([e2.roll(r, 0) for r in (1, 2, 3)], 1).detach(), 0.2
    ),
    "multi_positive": lambda e1, e2: multi_positive_info_nce(
        torch.cat([e1, e2]), torch.arange(len(e1)).repeat(2), 0.2
    ),
    "tc": lambda e1, e2: nt_xent_from_similarity(
        averaged_similarity(*(2 * [torch.cat([e1, e2]).view(-1, 2, e1.shape[1] // 2)])), 0.2
    ),
    "rank": lambda e1, e2: shuffle_rank_loss(e1.view(len(e1), 2, -1), e2.view(len(e2), 2, -1), 0.5),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_sgd_on_linear_encoder_reduces_loss(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 12)
    enc = torch.nn.Linear(12, 8)
    opt = torch.optim.SGD(enc.parameters(), lr=0.3)

    def embed(v: torch.Tensor) -> torch.Tensor:
        return F.normalize(enc(v).view(len(v), 2, 4), dim=-1).view(len(v), 8)  # two unit 4-d "series" halves

    noise = [0.2 * torch.randn(2, 16, 12) for _ in range(21)]
    losses = []
    for step in range(21):
        loss = LOSSES[name](embed(x + noise[step][0]), embed(x + noise[step][1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---- distributed helpers ---------------------------------------------------------------------------------


def test_distributed_helpers_without_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.gather_with_grad(x) is x
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()


def _gather_worker(rank: int, world: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    g = distributed.gather_with_grad(x)
    weights = torch.arange(g.numel(), dtype=torch.float32).view_as(g) * (
        rank + 1
    )  # a different loss per rank
    (g * weights).sum().backward()
    z1, z2 = _unit(4, 5, seed=10 + rank).float(), _unit(4, 5, seed=20 + rank).float()
    z1.requires_grad_(True)
    loss = nt_xent(z1, z2, 0.3, gather=distributed.gather_with_grad)
    loss.backward()
    info = {
        "rank": distributed.rank(),
        "world": distributed.world_size(),
        "main": distributed.is_main_process(),
    }
    torch.save(
        {"g": g.detach(), "grad": x.grad, "loss": loss.detach(), "z_grad": z1.grad, **info},
        f"{folder}/r{rank}.pt",
    )
    dist.destroy_process_group()


@pytest.mark.slow
def test_gather_with_grad_two_gloo_processes(tmp_path: Path) -> None:
    mp.spawn(_gather_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"r{r}.pt") for r in range(2)]
    expected_g = torch.cat([torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)])
    base = torch.arange(12, dtype=torch.float32).view(4, 3)
    for r, o in enumerate(out):
        assert (o["rank"], o["world"], o["main"]) == (r, 2, r == 0)
        torch.testing.assert_close(o["g"], expected_g)
        # the slice's gradient is summed over both ranks' losses (weights ×1 and ×2)
        torch.testing.assert_close(o["grad"], 3 * base[2 * r : 2 * r + 2])
    # gathered NT-Xent equals the single-process loss on the concatenated batch; each rank's gradient is the
    # world size times the single-process one, which DDP's averaging turns back into the true gradient
    z1 = torch.cat([_unit(4, 5, seed=10 + r).float() for r in range(2)]).requires_grad_(True)
    z2 = torch.cat([_unit(4, 5, seed=20 + r).float() for r in range(2)])
    ref = nt_xent(z1, z2, 0.3)
    ref.backward()
    for r, o in enumerate(out):
        torch.testing.assert_close(o["loss"], ref.detach())
        torch.testing.assert_close(o["z_grad"], 2 * z1.grad[4 * r : 4 * r + 4])
