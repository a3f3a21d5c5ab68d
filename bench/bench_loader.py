"""Benchmark: a pretraining epoch's data loading, workers started per epoch vs kept alive across epochs.

``vidssl.engine.train`` builds a fresh DataLoader every epoch (seeded by the epoch, so a resumed run draws the same
clips), which starts its worker processes again each time. This measures what that costs against
``persistent_workers=True`` on the same dataset, in the same run: loading only, no model, so the difference is
the whole saving an epoch could get. Needs the pipeline's lists (``dvc repro`` first).

    python bench/bench_loader.py [--methods iic,mlfo] [--epochs 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from torch.utils.data import DataLoader

from vidssl.config import load_params, with_overrides
from vidssl.data.clips import read_list
from vidssl.methods.registry import build_method
from vidssl.engine.train import build_model_backbone, clip_spec, make_loader


def epoch_times(batches_of_epoch, epochs: int) -> list[float]:
    """Seconds to draw every batch of each epoch; ``batches_of_epoch(e)`` returns that epoch's iterable."""
    times = []
    for e in range(epochs):
        start = time.perf_counter()
        for _ in batches_of_epoch(e):
            pass
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="iic,mlfo")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--lists", default="data/lists")
    args = ap.parse_args()
    base = load_params(args.params)
    records = read_list(Path(args.lists) / "pretrain.csv")
    print(f"{len(records)} videos, {args.workers} workers, "
          f"median of epochs 2-{args.epochs} (epoch 1 warms caches)")
    print("| method | fresh loader per epoch (baseline) s | persistent workers s | speed-up |")
    print("|---|---|---|---|")
    for name in args.methods.split(","):
        cfg = with_overrides(base, base.report.overrides.get(name, {}), "report.overrides")
        cfg = with_overrides(cfg, {"pretrain": {"method": name}}, "bench")
        method = build_method(name, build_model_backbone(cfg), cfg, n_samples=len(records))
        ds = method.make_dataset(records, clip_spec(cfg), cfg)
        bs = cfg.pretrain.batch_size

        def fresh_loader(e: int, ds=ds, bs=bs) -> DataLoader:
            return make_loader(ds, batch_size=bs, workers=args.workers, shuffle=True, seed=e, drop_last=True)

        fresh = epoch_times(fresh_loader, args.epochs)
        kept = DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=args.workers,
                          persistent_workers=True)
        alive = epoch_times(lambda e, kept=kept: kept, args.epochs)
        f, a = statistics.median(fresh[1:]), statistics.median(alive[1:])
        print(f"| {name} | {f:.3f} | {a:.3f} | {f / a:.2f}x |")


if __name__ == "__main__":
    main()
