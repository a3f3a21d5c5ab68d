"""MLFO's modules: the motion-excitation block, the per-level 1-D heads and the prototype logit queue.

METHODS.md §5(b). The motion-excitation (ME) block is TEA's: per frame, squeeze channels to C/r, compare a
depthwise-filtered step t+1 with step t, pool that difference over space and turn it into a per-channel gate
in (-0.5, 0.5) that rescales the input (out = x + gate·x). Because the gate depends on frame order, a
time-reversed feature map gives a different embedding, which lets MLFO use reversed clips as negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.methods.losses import sinkhorn


class MEBlock(nn.Module):
    """Motion excitation over a B×C×T×H×W map; output has the input's shape.

    The official block runs 2-D convs on the B·T frames; the (1,1,1)/(1,3,3) Conv3d and BatchNorm3d used here
    compute the same thing (BatchNorm3d pools statistics over B, T, H, W exactly as BatchNorm2d does over
    B·T frames) without reshaping.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        """Build the block.

        Args:
            channels: C of the input map.
            reduction: squeeze ratio r; the motion branch has max(1, C // r) channels.
        """
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"MEBlock: channels and reduction must be >= 1, got {channels}, {reduction}")
        mid = max(1, channels // reduction)
        self.squeeze = nn.Conv3d(channels, mid, 1, bias=False)
        self.squeeze_bn = nn.BatchNorm3d(mid)
        self.shift = nn.Conv3d(mid, mid, (1, 3, 3), padding=(0, 1, 1), groups=mid, bias=False)
        self.expand = nn.Conv3d(mid, channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm3d(channels)

    def gate(self, x: Tensor) -> Tensor:
        """Per-(sample, channel, step) gate sigmoid(m) - 0.5, shape B×C×T×1×1."""
        r = self.squeeze_bn(self.squeeze(x))
        # motion(t) = depthwise(r)(t+1) - r(t); the last step has no successor and gets zero motion.
        motion = self.shift(r)[:, :, 1:] - r[:, :, :-1]
        motion = F.pad(motion, (0, 0, 0, 0, 0, 1))
        m = self.expand_bn(self.expand(motion.mean(dim=(3, 4), keepdim=True)))
        return torch.sigmoid(m) - 0.5

    def forward(self, x: Tensor) -> Tensor:
        """Return x + gate(x)·x."""
        return x + self.gate(x) * x


def conv1d_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """MLFO's per-step projection: 1×1 Conv1d in→in, ReLU, 1×1 Conv1d in→out, over B×C×S sequences."""
    return nn.Sequential(nn.Conv1d(in_dim, in_dim, 1), nn.ReLU(inplace=True), nn.Conv1d(in_dim, out_dim, 1))


class LevelHeads(nn.Module):
    """The trio of heads one feature level carries: ``project`` (instance contrast), ``fine`` (timestamp
    matching) and ``graph`` (graph constraint), each a :func:`conv1d_head` from ``in_dim`` to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.project = conv1d_head(in_dim, out_dim)
        self.fine = conv1d_head(in_dim, out_dim)
        self.graph = conv1d_head(in_dim, out_dim)


def pool_steps(fmap: Tensor, steps: int) -> Tensor:
    """B×C×T×H×W map -> B×C×steps: adaptive average over time, global average over space.

    With fewer than ``steps`` time steps (short clips) adaptive pooling repeats steps, so every level keeps
    the step count its heads and losses expect; in training that caps timestamp matching
    (``MLFO.short_levels``).
    """
    return F.adaptive_avg_pool3d(fmap, (steps, 1, 1)).flatten(2)


@torch.no_grad()
def stage_shapes(
    backbone: nn.Module, names: list[str], *, frames: int = 16, size: int = 32
) -> dict[str, tuple[int, int]]:
    """(channels, time steps) of the named stage outputs for ``frames``-frame clips, read from one small probe
    forward pass (eval mode, no grad).

    Probing instead of hard-coding 128/256/512 makes MLFO work over any backbone with ``forward_stages``
    (the tiny backbone has 32/64/128). Batch-norm statistics are untouched (eval mode) and the mode restored.

    Raises:
        ValueError: if a name is not one of the backbone's stages.
    """
    known = tuple(getattr(backbone, "stage_names", ()))
    missing = [n for n in names if n not in known]
    if missing:
        raise ValueError(
            f"MLFO: backbone has no stage(s) {missing}; its stages are {list(known)}; set "
            "pretrain.mlfo.low_stage / mid_stage to intermediate stages of this backbone"
        )
    param = next(backbone.parameters())
    was_training = backbone.training
    backbone.eval()
    try:
        probe = torch.zeros(1, getattr(backbone, "in_channels", 3), frames, size, size, device=param.device)
        outs = backbone.forward_stages(probe.to(param.dtype))
    finally:
        backbone.train(was_training)
    return {n: (int(outs[n].shape[1]), int(outs[n].shape[2])) for n in names}


def stage_channels(backbone: nn.Module, names: list[str]) -> dict[str, int]:
    """Channels of the named stage outputs (see :func:`stage_shapes`)."""
    return {n: c for n, (c, _) in stage_shapes(backbone, names).items()}


class LogitQueue(nn.Module):
    """FIFO of the last ``size`` gathered prototype logits of both clips, for Sinkhorn over more samples.

    Stored as a buffer ``logits`` (size×2×K, newest rows last) plus a ``count`` of rows ever pushed, so it is
    checkpointed with the method. MLFO fills it with randn and reads it whole from epoch 10; here only rows
    actually pushed are read, which is the same once the queue is full (always, at paper scale) and keeps
    placeholder noise out of the codes on small datasets.
    """

    def __init__(self, size: int, clusters: int) -> None:
        super().__init__()
        if size < 1 or clusters < 1:
            raise ValueError(f"LogitQueue: size and clusters must be >= 1, got {size}, {clusters}")
        self.register_buffer("logits", torch.zeros(size, 2, clusters))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, logits: Tensor) -> None:
        """Append B×2×K logits (detached), dropping the oldest rows."""
        size = self.logits.shape[0]
        self.logits.copy_(torch.cat([self.logits, logits.detach().to(self.logits)])[-size:])
        self.count += logits.shape[0]

    @torch.no_grad()
    def codes(
        self, l1: Tensor, l2: Tensor, *, use_queue: bool, epsilon: float = 0.05, iterations: int = 3
    ) -> tuple[Tensor, Tensor]:
        """Push this batch, then return its Sinkhorn codes (q_s for clip 1, q_t for clip 2), each B×K.

        Args:
            l1: B×K logits of clip 1 (gathered over processes).
            l2: B×K logits of clip 2.
            use_queue: run Sinkhorn over the queued rows (this batch included, last) instead of the batch.
            epsilon: Sinkhorn ε.
            iterations: Sinkhorn rounds.
        """
        b = l1.shape[0]
        self.push(torch.stack([l1, l2], dim=1))
        filled = int(min(int(self.count), self.logits.shape[0]))
        # A batch larger than the queue cannot sit inside it; fall back to the batch alone.
        rows = self.logits[-filled:] if use_queue and b <= filled else torch.stack([l1, l2], dim=1).float()
        q_s = sinkhorn(rows[:, 0], epsilon, iterations)[-b:]
        q_t = sinkhorn(rows[:, 1], epsilon, iterations)[-b:]
        return q_s.to(l1.dtype), q_t.to(l2.dtype)
