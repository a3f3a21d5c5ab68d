"""Benchmark: one training step (forward + backward) of a backbone with channels-last-3d input vs the default
contiguous layout (the raw baseline), measured in the same run. Prints times and the speed-up ratio.

    python bench/bench_train_step.py [--backbone tiny] [--width 8] [--batch 16] [--frames 16] [--size 48]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def step_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()
        if i:  # the first call builds the kernels
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from vidssl.models import build_backbone

    torch.manual_seed(0)
    kwargs = {"width": args.width} if args.backbone == "tiny" else {}
    model = build_backbone(args.backbone, **kwargs)
    x = torch.rand(args.batch, 3, args.frames, args.size, args.size)
    fast = step_seconds(model, x, args.repeats)  # Backbone converts its input to channels-last-3d
    # Raw baseline: the same stages called directly on the default (contiguous) layout.
    raw = torch.nn.Sequential(*model.stages.values())
    slow = step_seconds(_Plain(raw), x, args.repeats)
    print(f"{args.backbone} batch {args.batch}x3x{args.frames}x{args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, {torch.device('cuda' if torch.cuda.is_available() else 'cpu')}")
    print(f"contiguous (baseline): {slow:.3f} s/step")
    print(f"channels-last-3d:      {fast:.3f} s/step")
    print(f"speed-up: {slow / fast:.1f}x")


class _Plain(torch.nn.Module):
    def __init__(self, stages: torch.nn.Module) -> None:
        super().__init__()
        self.stages = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x.contiguous()).mean(dim=(2, 3, 4))


if __name__ == "__main__":
    main()
