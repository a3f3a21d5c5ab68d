"""Benchmark: a pretraining epoch's data loading, workers started per epoch vs kept alive across epochs.

``vidssl.engine.train`` builds a fresh DataLoader every epoch (seeded by the epoch, so a resumed run draws the same
clips), which starts its worker processes again each time. This measures what that costs against
``persistent_workers=True`` on the same dataset, in the same run: loading only, no model, so the difference is
the whole saving an epoch could get. Needs the pipeline's lists (``dvc repro`` first).

    python bench/bench_loader.py [--methods iic,mlfo] [--epochs 6] [--workers 2]

``--vs-decode PACKS`` measures instead the training loader's clips/s (ClipDataset as training builds it: 16
frames at 128 px, uncropped uint8, stacked by its collate; the crop happens on the device) against decoding the
very same JPEG frames alone (same packs, same frame indices, same number of workers, same DataLoader), and
clips/s per worker core, to size a GPU box's CPU. The training loader is vidssl's PooledLoader (workers reuse
their batch buffers); also in the table: the same dataset through a plain DataLoader (a fresh shared-memory
segment a batch), decoding and shipping a 16x112x112 block, and the dataset cropping in the worker.
PACKS is a frame store extracted at 128 px short side (e.g. `vidssl extract CLIPS PACKS --short-side 128`).

    python bench/bench_loader.py --vs-decode PACKS [--workers 2] [--clips 400]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from torch.utils.data import DataLoader

from vidssl.config import load_params, with_overrides
from vidssl.data.clips import read_list
from vidssl.data.pool import PooledLoader
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


class _DecodeOnly:
    """The baseline: the same packs and frame indices as ClipDataset draws, JPEG decode only (no resize/crop)."""

    def __init__(self, ds, ship: bool = False) -> None:
        self.ds, self.ship = ds, ship

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int):
        import numpy as np
        import torch

        from vidssl.data.clips import _sample_rng, looped, random_clip

        rec, s = self.ds.records[index], self.ds.spec
        idx = random_clip(rec.n_frames, s.frames, s.stride, _sample_rng())
        frames = self.ds.packs[index].read([looped(i, self.ds.frames[index]) for i in idx])
        if self.ship:  # the decoded frames go back to the main process, as a clip would
            return torch.from_numpy(np.ascontiguousarray(frames[:, :112, :112]))
        return torch.from_numpy(np.ascontiguousarray(frames[:, :1, :1]))  # decoded; a token goes back


def vs_decode(packs: Path, workers: int, n_clips: int, repeats: int = 3) -> None:
    import os

    from vidssl.data.clips import ClipDataset, ClipSpec, VideoRecord
    from vidssl.data.store import count_frames

    paths = sorted(packs.rglob("*.zip"))
    base = [VideoRecord(p.stem, str(p), count_frames(p), 0) for p in paths]
    records = (base * (n_clips // len(base) + 1))[:n_clips]
    spec = ClipSpec(frames=16, stride=1, resize=128, crop=112)
    cropped, train = ClipDataset(records, spec), ClipDataset(records, spec, crop=False)
    ways = {  # name: (loader class, dataset, collate)
        "decode": (DataLoader, _DecodeOnly(cropped), None),
        "ship": (DataLoader, _DecodeOnly(cropped, ship=True), None),
        "crop in worker": (DataLoader, cropped, None),
        "training, plain DataLoader": (DataLoader, train, train.collate),
        "training": (PooledLoader, train, train.collate),
    }
    best = dict.fromkeys(ways, 0.0)
    for _ in range(repeats):  # interleaved, fastest counts
        for name, (kind, dataset, collate) in ways.items():
            loader = kind(dataset, batch_size=8, num_workers=workers, shuffle=True, collate_fn=collate)
            start = time.perf_counter()
            n = sum(len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch) for batch in loader)
            best[name] = max(best[name], n / (time.perf_counter() - start))
    cores = max(1, min(workers, os.cpu_count() or 1))
    print(f"{len(paths)} packs, {n_clips} clips of 16 frames at 128 px a pass, {workers} workers, batch 8, best of "
          f"{repeats} (worker start-up included)")
    print("| loader | what reaches the main process | clips/s | ratio to decode only | clips/s per core |")
    print("|---|---|---|---|---|")
    what = {"decode": "a token", "ship": "16×112×112 crop (T×H×W×3)",
            "crop in worker": "16×112×112 crop, contiguous",
            "training, plain DataLoader": "16×128×W clip, a fresh shared segment a batch",
            "training": "16×128×W clip, in a reused slot (vidssl.data.pool)"}
    for name, rate in best.items():
        print(f"| {name} | {what[name]} | {rate:.1f} | {rate / best['decode']:.2f} | {rate / cores:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="iic,mlfo")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--lists", default="data/lists")
    ap.add_argument("--vs-decode", type=Path, help="frame store at 128 px: loader vs JPEG decode alone")
    ap.add_argument("--clips", type=int, default=400, help="clips a pass (--vs-decode)")
    args = ap.parse_args()
    if args.vs_decode:
        return vs_decode(args.vs_decode, args.workers, args.clips)
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
        kept = PooledLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=args.workers,
                          persistent_workers=True, collate_fn=getattr(ds, "collate", None))
        alive = epoch_times(lambda e, kept=kept: kept, args.epochs)
        f, a = statistics.median(fresh[1:]), statistics.median(alive[1:])
        print(f"| {name} | {f:.3f} | {a:.3f} | {f / a:.2f}x |")


if __name__ == "__main__":
    main()
