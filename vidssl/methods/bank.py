"""CMC memory bank as used by IIC (METHODS.md §2): unit-norm rows, momentum update, uniform noise indices."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.methods.distributed import all_gather_cat
from vidssl.methods.losses import nce_softmax_loss

__all__ = ["MemoryBank", "bank_logits", "nce_softmax_loss"]


class MemoryBank(nn.Module):
    """CMC memory bank: N×D rows kept unit-norm, momentum-updated (IIC/CMC, METHODS.md §2).

    Rows start uniform in ±1/sqrt(D/3) (variance 1/D, so norms ≈ 1) like CMC/IIC, and become exactly
    unit-norm once written by `update`. The table is the registered buffer ``memory``, so it is checkpointed
    with the model.
    """

    def __init__(self, size: int, dim: int, *, momentum: float = 0.5, seed: int | None = None) -> None:
        """Build an N×D bank.

        Args:
            size: number of rows N (the training-set size; row i belongs to sample i).
            dim: embedding dimension D.
            momentum: weight m of the old row in the update (IIC uses 0.5).
            seed: seed of the initial uniform draw; None uses torch's global RNG.

        Raises:
            ValueError: on a non-positive size/dim or a momentum outside [0, 1].
        """
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"MemoryBank size and dim must be positive, got size={size}, dim={dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"MemoryBank momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound = 1.0 / math.sqrt(dim / 3.0)
        self.register_buffer("memory", (torch.rand(size, dim, generator=gen) * 2 - 1) * bound)

    @property
    def size(self) -> int:
        """Number of rows N."""
        return self.memory.shape[0]

    @property
    def dim(self) -> int:
        """Row dimension D."""
        return self.memory.shape[1]

    def sample(self, idx: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw K noise rows per sample, uniform over [0, N), with the sample itself in column 0.

        Args:
            idx: (B,) long dataset indices of the batch.
            k: number of noise indices per sample.
            generator: optional RNG (must live on the device it draws on).

        Returns:
            (B, K+1) long indices on ``idx.device``; column 0 equals ``idx``.
        """
        device = generator.device if generator is not None else idx.device
        noise = torch.randint(0, self.size, (idx.shape[0], k), generator=generator, device=device)
        return torch.cat([idx.view(-1, 1).long(), noise.to(idx.device)], dim=1)

    def rows(self, indices: Tensor) -> Tensor:
        """Gather rows: (B, K+1) indices -> (B, K+1, D), detached (the bank takes no gradient)."""
        flat = self.memory.index_select(0, indices.reshape(-1).to(self.memory.device))
        return flat.view(*indices.shape, self.dim).detach()

    @torch.no_grad()
    def update(self, idx: Tensor, feats: Tensor) -> None:
        """Momentum update ``row <- normalize(m*row + (1-m)*feat)`` for each sample of the batch (of every
        rank's batch when torch.distributed is initialised).

        Args:
            idx: (B,) long dataset indices.
            feats: (B, D) new features (detached here; any scale, they are mixed then normalised).

        Raises:
            ValueError: if the shapes do not match the bank.
        """
        if feats.dim() != 2 or feats.shape != (idx.shape[0], self.dim):
            raise ValueError(
                f"MemoryBank.update: feats must be ({idx.shape[0]}, {self.dim}), got {tuple(feats.shape)}"
            )
        # Under data parallelism every rank writes the whole global batch, so the banks stay identical.
        idx, feats = all_gather_cat(idx.to(self.memory.device).long()), all_gather_cat(feats.detach())
        old = self.memory.index_select(0, idx)
        new = old * self.momentum + feats.to(old) * (1.0 - self.momentum)
        self.memory.index_copy_(0, idx, F.normalize(new, dim=1))


def bank_logits(query: Tensor, rows: Tensor, temperature: float) -> Tensor:
    """Scores of each query against its own bank rows: (B, D), (B, K+1, D) -> (B, K+1) = <row, q> / τ."""
    return torch.bmm(rows.to(query.dtype), query.unsqueeze(2)).squeeze(2) / temperature
