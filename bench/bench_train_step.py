"""Benchmark: the cost of vidssl's training loop, and of the backbone's memory layout.

``--mode loop`` (default): vidssl's pretraining (``vidssl.engine.train.pretrain``: precision, non-finite guard,
resumable sampler, progress, telemetry, per-epoch checkpoints) against a bare PyTorch loop over the same method,
dataset, batch and loss (DataLoader, forward, backward, optimiser step), measured in the same run, epochs
interleaved. Prints seconds per step and the ratio vidssl / bare (target: at most 1.05).

``--mode layout``: one forward+backward of a backbone with channels-last-3d input vs the default contiguous
layout (the raw baseline). Prints times and the speed-up.

    python bench/bench_train_step.py [--method iic] [--videos 64] [--batch 16] [--epochs 4] [--rounds 2]
    python bench/bench_train_step.py --mode layout [--backbone tiny] [--width 8] [--batch 16] [--size 48]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

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


class _Plain(torch.nn.Module):
    def __init__(self, stages: torch.nn.Module) -> None:
        super().__init__()
        self.stages = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x.contiguous()).mean(dim=(2, 3, 4))


def layout(args: argparse.Namespace) -> None:
    from vidssl.models import build_backbone

    torch.manual_seed(0)
    kwargs = {"width": args.width} if args.backbone == "tiny" else {}
    model = build_backbone(args.backbone, **kwargs)
    x = torch.rand(args.batch, 3, args.frames, args.size, args.size)
    fast = step_seconds(model, x, args.repeats)  # Backbone converts its input to channels-last-3d
    raw = torch.nn.Sequential(*model.stages.values())  # the same stages on the default layout
    slow = step_seconds(_Plain(raw), x, args.repeats)
    print(f"{args.backbone} batch {args.batch}x3x{args.frames}x{args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, {torch.device('cuda' if torch.cuda.is_available() else 'cpu')}")
    print(f"contiguous (baseline): {slow:.3f} s/step")
    print(f"channels-last-3d:      {fast:.3f} s/step")
    print(f"speed-up: {slow / fast:.1f}x")


def _cfg(args: argparse.Namespace, epochs: int) -> object:
    from vidssl.config import parse_params

    return parse_params({
        "seed": 0, "model": {"backbone": args.backbone, "width": args.width},
        "clip": {"frames": args.frames, "stride": 1, "resize": args.size, "crop": args.size},
        "pretrain": {"method": args.method, "epochs": epochs, "batch_size": args.batch, "workers": args.workers,
                     "lr": 0.001, "milestones": [], "iic": {"nce_k": 16}},
        "train": {"precision": "fp32", "checkpoint_minutes": 0, "threads": torch.get_num_threads()},
    })


def _lists(folder: Path, args: argparse.Namespace) -> Path:
    from vidssl.engine.plan import _synthetic_lists

    cfg = _cfg(args, 1)
    records = _synthetic_lists(folder / "frames", cfg, args.videos)  # type: ignore[arg-type]
    lists = folder / "lists"
    lists.mkdir()
    with open(lists / "pretrain.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "frames_path", "n_frames", "label", "class_name", "split"])
        w.writerows([r.video_id, r.frames_path, r.n_frames, r.label, "c", "pretrain"] for r in records)
    return lists


def vidssl_epochs(args: argparse.Namespace, lists: Path, state: Path) -> list[float]:
    """Per-epoch seconds of vidssl's pretrain (the first epoch, with its warm-up, left out)."""
    from vidssl.engine.train import pretrain

    summary = pretrain(_cfg(args, args.epochs), lists, state, state / "out")  # type: ignore[arg-type]
    return [h["epoch_seconds"] for h in summary["history"][1:]]


def bare_epochs(args: argparse.Namespace, lists: Path) -> list[float]:
    """The same method, data, batch and loss in a plain loop: DataLoader, forward, backward, step."""
    from torch.utils.data import DataLoader

    from vidssl.data.clips import read_list
    from vidssl.engine.train import build_model_backbone, clip_spec, make_optimizer, move_batch
    from vidssl.methods.registry import build_method

    cfg = _cfg(args, args.epochs)
    torch.manual_seed(0)
    records = read_list(lists / "pretrain.csv")
    method = build_method(args.method, build_model_backbone(cfg), cfg, n_samples=len(records))  # type: ignore
    ds = method.make_dataset(records, clip_spec(cfg), cfg)  # type: ignore[arg-type]
    opt = make_optimizer([p for p in method.parameters() if p.requires_grad], cfg.pretrain)  # type: ignore
    times = []
    for epoch in range(args.epochs):
        method.train()
        t0 = time.perf_counter()
        loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.workers,
                            generator=torch.Generator().manual_seed(epoch))
        for batch in loader:
            loss, _ = method(move_batch(batch, torch.device("cpu")), epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            method.on_step_end()
        times.append(time.perf_counter() - t0)
    return times[1:]


def loop(args: argparse.Namespace) -> None:
    steps = args.videos // args.batch
    ours: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        lists = _lists(Path(tmp), args)
        for r in range(args.rounds):  # interleaved, so load changes on a shared machine hit both alike
            bare += bare_epochs(args, lists)
            ours += vidssl_epochs(args, lists, Path(tmp) / f"state{r}")
            print(f"round {r + 1}: bare {[round(t, 3) for t in bare]} s/epoch, vidssl {[round(t, 3) for t in ours]}",
                  flush=True)
    a, b = statistics.median(ours) / steps, statistics.median(bare) / steps
    print(f"{args.method} on {args.backbone} (width {args.width}), batch {args.batch}x3x{args.frames}x{args.size}"
          f"x{args.size}, {steps} steps/epoch, {len(ours)} timed epochs each, {torch.get_num_threads()} threads, "
          f"{args.workers} loader workers, cpu")
    print(f"bare PyTorch loop (baseline): {b:.4f} s/step")
    print(f"vidssl pretrain loop:         {a:.4f} s/step")
    print(f"ratio vidssl / bare: {a / b:.3f} (target <= 1.05)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["loop", "layout"], default="loop")
    ap.add_argument("--method", default="iic")
    ap.add_argument("--backbone", default="tiny")
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    (layout if args.mode == "layout" else loop)(args)


if __name__ == "__main__":
    main()
