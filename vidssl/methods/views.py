"""View and negative generators that act on a batch of clips (B×3×T×H×W), on whatever device it lives.

Each takes an explicit ``torch.Generator`` where it is random, so runs repeat exactly for a seed.
"""

from __future__ import annotations

import torch


def residual(x: torch.Tensor) -> torch.Tensor:
    """IIC's residual view ((x - roll_T(x, 1)) + 1) / 2; the roll wraps, so frame 0 is x0 - x_{T-1}.

    IIC's README writes shift - x; its code (and this) uses x - shift (METHODS.md §2(a)).
    """
    return (x - torch.roll(x, shifts=1, dims=2) + 1) / 2


def repeat_frame(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Intra-negative: one random frame per clip tiled over time (no motion, same appearance)."""
    b, _, t = x.shape[:3]
    pick = torch.randint(0, t, (b,), generator=generator).to(x.device)
    frames = x[torch.arange(b, device=x.device), :, pick]  # B×3×H×W
    return frames.unsqueeze(2).expand(-1, -1, t, -1, -1).contiguous()


def shuffle_chunks(x: torch.Tensor, chunks: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Intra-negative: cut T into ``chunks`` equal chunks and swap two distinct ones chosen at random."""
    b, _, t = x.shape[:3]
    if t % chunks:
        raise ValueError(f"clip length {t} is not divisible into {chunks} chunks; use a multiple of {chunks}")
    size = t // chunks
    out = x.clone()
    for i in range(b):
        a, c = torch.randperm(chunks, generator=generator)[:2].tolist()
        out[i, :, a * size : (a + 1) * size] = x[i, :, c * size : (c + 1) * size]
        out[i, :, c * size : (c + 1) * size] = x[i, :, a * size : (a + 1) * size]
    return out


def be_mix(x: torch.Tensor, lam: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """BE's background-erasing blend x̃_t = (1-λ)·x_t + λ·x_r for every t (METHODS.md §4(a)).

    r is one random frame index per clip, so the same static frame is added to every frame: a static
    background stays static while the motion is kept; the method draws λ ~ U(0, λmax) once per batch.

    Args:
        x: B×C×T×H×W float clips.
        lam: the blend weight λ of the static frame (0 returns ``x`` unchanged).
        generator: RNG for the frame indices (CPU generator; indices are moved to ``x``'s device).

    Returns:
        Mixed clips, same shape and dtype as ``x``.
    """
    b, _, t = x.shape[:3]
    pick = torch.randint(0, t, (b,), generator=generator).to(x.device)
    static = x[torch.arange(b, device=x.device), :, pick].unsqueeze(2)  # B×C×1×H×W
    return (1.0 - lam) * x + lam * static
