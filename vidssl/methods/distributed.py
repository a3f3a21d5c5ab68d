"""Thin torch.distributed helpers that degrade to single-process behaviour when it is not initialised."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes (1 without torch.distributed)."""
    return dist.get_world_size() if _active() else 1


def rank() -> int:
    """This process's global rank (0 without torch.distributed)."""
    return dist.get_rank() if _active() else 0


def is_main_process() -> bool:
    """True on rank 0 (and always in a single process)."""
    return rank() == 0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        # Each rank's loss may use every slice; summing over ranks gives this slice's full gradient, so that
        # DDP's gradient averaging then yields the gradient of the mean per-rank loss.
        g = torch.stack(grads)
        dist.all_reduce(g)
        return g[dist.get_rank()]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, keeping the gradient path to the local slice.

    Args:
        x: (B, ...) local tensor; B and the other dims must be equal on every rank.

    Returns:
        (world_size*B, ...) tensor in rank order; ``x`` itself when torch.distributed is not initialised.
    """
    if world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)


@torch.no_grad()
def all_gather_cat(x: Tensor) -> Tensor:
    """Concatenate ``x`` (any dtype, no gradient) from all ranks along dim 0; ``x`` itself in one process.

    For state every rank must keep identically, such as memory-bank rows written by the whole global batch.
    """
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
