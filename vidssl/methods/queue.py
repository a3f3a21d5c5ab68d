"""MoCo pieces: FIFO feature queue, EMA key-encoder update, queue logits (DualVar-MoCo §3, BE §4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.methods.losses import info_nce_logits


class FeatureQueue(nn.Module):
    """FIFO ring buffer of K×D keys (buffers ``queue`` and ``ptr``, so it is checkpointed)."""

    def __init__(self, size: int, dim: int, *, normalize_init: bool = True) -> None:
        """Build a queue filled with random keys.

        Args:
            size: number of keys K.
            dim: key dimension D.
            normalize_init: True gives random unit rows (MoCo); False gives uniform ±1/sqrt(D/3), not
                normalised, as BE initialises its queue.

        Raises:
            ValueError: on a non-positive size or dim.
        """
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"FeatureQueue size and dim must be positive, got size={size}, dim={dim}")
        if normalize_init:
            init = F.normalize(torch.randn(size, dim), dim=1)
        else:
            init = (torch.rand(size, dim) * 2 - 1) / math.sqrt(dim / 3.0)
        self.register_buffer("queue", init)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def items(self) -> Tensor:
        """(K, D) snapshot of the keys in storage order (a detached copy: a later `enqueue` writes in place
        and must not change tensors autograd saved for this step's backward)."""
        return self.queue.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (B, D) over the oldest entries, wrapping around the end.

        Any B is accepted: the result equals enqueuing the rows one by one, so when B ≥ K only the last K keys
        remain. Keys are stored detached, in the queue's dtype.

        Raises:
            ValueError: if keys is not (B, D).
        """
        size, dim = self.queue.shape
        if keys.dim() != 2 or keys.shape[1] != dim:
            raise ValueError(f"FeatureQueue.enqueue: keys must be (B, {dim}), got {tuple(keys.shape)}")
        b = keys.shape[0]
        n = min(b, size)
        start = self.ptr + (b - n)  # the first b-n keys would be overwritten anyway
        slots = (start + torch.arange(n, device=self.queue.device)) % size
        self.queue.index_copy_(0, slots, keys[b - n :].detach().to(self.queue))
        self.ptr.copy_((self.ptr + b) % size)


@torch.no_grad()
def copy_params(online: nn.Module, target: nn.Module) -> None:
    """Initialise the key encoder: copy parameters and buffers from ``online``; target params get no grad."""
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.copy_(p_o)
        p_t.requires_grad_(False)
    for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
        b_t.copy_(b_o)


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """MoCo key-encoder update: θ_t <- m·θ_t + (1-m)·θ_o for parameters; buffers (BN statistics) are copied.

    Raises:
        ValueError: if momentum is outside [0, 1].
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update momentum must be in [0, 1], got {momentum}")
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.mul_(momentum).add_(p_o.detach(), alpha=1.0 - momentum)
    for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
        b_t.copy_(b_o)


def moco_logits(
    q: Tensor, k: Tensor, queue_items: Tensor, temperature: float, extra_negatives: Tensor | None = None
) -> Tensor:
    """MoCo logits [<q,k>, <q,Q_1..Q_K>, (<q,n>)] / τ, positive at column 0.

    Args:
        q: (B, D) queries.
        k: (B, D) keys from the momentum encoder (detach them; this function does not).
        queue_items: (K, D) queued negatives, e.g. `FeatureQueue.items`.
        temperature: τ.
        extra_negatives: optional (B, D) per-sample negative appended as the last column (BE's intra-video
            temporal negative).

    Returns:
        (B, 1+K) logits, or (B, 2+K) with the extra column.
    """
    logits = info_nce_logits(q, k, queue_items, temperature)
    if extra_negatives is None:
        return logits
    extra = (q * extra_negatives).sum(dim=1, keepdim=True) / temperature
    return torch.cat([logits, extra], dim=1)
