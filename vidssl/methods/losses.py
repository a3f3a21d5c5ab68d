"""Pure contrastive losses on tensors (STYLE.md rule 1): no device or distributed assumptions.

Every function uses plain dot products of what it is given, so pass L2-normalised rows where the method wants
cosine similarity (all four methods do, except IIC's raw bank query). Shapes: B batch, D embedding dim,
S series length, K negatives or prototypes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def nce_softmax_loss(logits: Tensor) -> Tensor:
    """Cross-entropy with the positive at column 0, averaged over the batch.

    Args:
        logits: (B, 1+K) scores, column 0 the positive.

    Returns:
        Scalar loss.
    """
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def info_nce_logits(q: Tensor, k: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """Logits [<q,k>, <q,n_1>, ..., <q,n_K>] / τ with the positive at column 0.

    Args:
        q: (B, D) queries.
        k: (B, D) positive keys, one per query.
        negatives: (K, D) shared by all queries (a queue) or (B, K, D) per query.
        temperature: τ.

    Returns:
        (B, 1+K) logits.
    """
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ negatives.T if negatives.dim() == 2 else torch.einsum("bd,bkd->bk", q, negatives)
    return torch.cat([pos, neg], dim=1) / temperature


def info_nce(q: Tensor, k: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """InfoNCE: CE over `info_nce_logits` (shapes as there) with target 0; scalar, mean over the batch."""
    return nce_softmax_loss(info_nce_logits(q, k, negatives, temperature))


def nt_xent_from_similarity(sim: Tensor, temperature: float) -> Tensor:
    """NT-Xent from a 2N×2N similarity matrix whose rows i and i+N are the positive pairs.

    Each row is a softmax over the other 2N-1 entries (self excluded), target its partner; mean over 2N rows.

    Args:
        sim: (2N, 2N) similarities of the stacked views [view 1; view 2].
        temperature: τ.

    Returns:
        Scalar loss.

    Raises:
        ValueError: if sim is not square with an even side.
    """
    n2 = sim.shape[0]
    if sim.dim() != 2 or sim.shape[1] != n2 or n2 % 2:
        raise ValueError(f"nt_xent_from_similarity needs a square 2N×2N matrix, got {tuple(sim.shape)}")
    self_mask = torch.eye(n2, dtype=torch.bool, device=sim.device)
    logits = (sim / temperature).masked_fill(self_mask, float("-inf"))
    target = (torch.arange(n2, device=sim.device) + n2 // 2) % n2
    return F.cross_entropy(logits, target)


def nt_xent(
    z1: Tensor, z2: Tensor, temperature: float, gather: Callable[[Tensor], Tensor] | None = None
) -> Tensor:
    """SimCLR NT-Xent over the 2B embeddings of two views; (z1[i], z2[i]) are the positives.

    Args:
        z1: (B, D) view-1 embeddings.
        z2: (B, D) view-2 embeddings.
        temperature: τ.
        gather: optional all-gather with gradient (e.g. `distributed.gather_with_grad`) so negatives come from
            every process; identity by default.

    Returns:
        Scalar loss, mean over the (gathered) 2B rows.
    """
    if gather is not None:
        z1, z2 = gather(z1), gather(z2)
    z = torch.cat([z1, z2], dim=0)
    return nt_xent_from_similarity(z @ z.T, temperature)


def averaged_similarity(s_a: Tensor, s_b: Tensor) -> Tensor:
    """DualVar series similarity (1/S²) Σ_pq <s_p(a_i), s_q(b_j)>: (B, S, D), (B', S', D) -> (B, B').

    The double sum equals the dot product of the per-sample series means, which is how it is computed (and
    why a MoCo series queue can store means).
    """
    return s_a.mean(dim=1) @ s_b.mean(dim=1).T


def multi_positive_info_nce(
    z: Tensor, labels: Tensor, temperature: float, extra_negatives: Tensor | None = None
) -> Tensor:
    """MLFO multi-positive InfoNCE: L_i = -log(Σ_pos e^{s/τ} / Σ_all e^{s/τ}), self excluded everywhere.

    Args:
        z: (N, D) embeddings (e.g. both clips of every video, gathered).
        labels: (N,) group ids; rows with the same id are positives of each other.
        temperature: τ.
        extra_negatives: optional negatives added to the denominators: (M, D) shared by all rows, or (N, M, D)
            per row (MLFO L_mid/L_low: the row's own video's time-reversed clips).

    Returns:
        Scalar loss, mean over the N rows.

    Raises:
        ValueError: if some row has no positive (a label occurring once).
    """
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    pos_mask = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask
    if not bool(pos_mask.any(dim=1).all()):
        raise ValueError(
            "multi_positive_info_nce: every label must occur at least twice (each row needs a positive)"
        )
    logits = (z @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    if extra_negatives is not None:
        extra = (
            z @ extra_negatives.T
            if extra_negatives.dim() == 2
            else torch.einsum("nd,nmd->nm", z, extra_negatives)
        )
        logits = torch.cat([logits, extra / temperature], dim=1)
        pos_mask = F.pad(pos_mask, (0, extra.shape[1]), value=False)
    positives = logits.masked_fill(~pos_mask, float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(positives, dim=1)).mean()


def shuffle_rank_loss(a: Tensor, c: Tensor, theta: float, clamp: float | None = None) -> Tensor:
    """DualVar shuffle-rank loss L_rank (METHODS.md §3(c)).

    Per pair, the 2S vectors [a_0..a_{S-1}, c_0..c_{S-1}] give a 2S×2S similarity matrix. Row r's positive
    is the same-index vector of the other view; the other 2S-2 non-self entries must rank below it.

    Args:
        a: (B, S, D) L2-normalised series vectors of one view.
        c: (B, S, D) series vectors of the (re-indexed) shuffled view.
        theta: θ, the softness of the ranking margin.
        clamp: if set, the softplus argument is clamped from above (DualVar's SimCLR variant uses 5).

    Returns:
        Scalar: mean over pairs, rows and others of softplus((<r,o> - <r,pos>)/θ).
    """
    return rank_loss_from_margins(rank_margins(a, c), theta, clamp)


def rank_loss_from_margins(margins: Tensor, theta: float, clamp: float | None = None) -> Tensor:
    """Mean of softplus(margins / θ), the argument clamped from above when ``clamp`` is set."""
    arg = margins / theta
    if clamp is not None:
        arg = arg.clamp(max=clamp)
    return F.softplus(arg).mean()


def rank_margins(a: Tensor, c: Tensor) -> Tensor:
    """(B, 2S, 2S-2) margins <r,o> - <r,pos> of the shuffle-rank loss (shapes as there); < 0 is ranked right."""
    b, s, _ = a.shape
    v = torch.cat([a, c], dim=1)
    sim = v @ v.transpose(1, 2)
    rows = torch.arange(2 * s, device=a.device)
    partner = (rows + s) % (2 * s)
    pos = sim[:, rows, partner]
    other_mask = ~(torch.eye(2 * s, dtype=torch.bool, device=a.device) | F.one_hot(partner, 2 * s).bool())
    return sim[:, other_mask].view(b, 2 * s, 2 * s - 2) - pos.unsqueeze(2)


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV-style equipartitioned soft codes from prototype scores (no gradient).

    Args:
        scores: (B, K) sample-to-prototype scores.
        epsilon: entropic regularisation ε.
        iterations: alternating normalisation rounds.

    Returns:
        (B, K) codes; each row sums to 1 and each prototype gets ≈ B/K mass in total.
    """
    # Subtracting the global max leaves the result unchanged (it is rescaled away) but keeps exp finite.
    q = torch.exp((scores.float() - scores.max()) / epsilon).T
    q = q / q.sum()
    k, b = q.shape
    tiny = torch.finfo(q.dtype).tiny  # a prototype no sample reaches stays 0 instead of becoming NaN
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True).clamp_min(tiny) / k
        q = q / q.sum(dim=0, keepdim=True).clamp_min(tiny) / b
    return (q * b).T.to(scores.dtype)
