"""Benchmark: rendering the evaluation plots for a 10k-video run (target: under 30 s in all).

t-SNE of the video features (a stratified 1000-video sample, PCA to 50 dims, 300 iterations), the confusion
matrix of 101 classes over the test videos, the top-k curve (k = 1..50, two backbones) and the retrieval examples
grid (8 queries x top-5, 112 px frames). Synthetic features and frames: only the rendering is timed. Wall and
CPU seconds are both printed: on shared cores the wall time mostly measures the other jobs. The baseline is the
t-SNE of the whole set, which the sample replaces (measured on --full points only, as it takes minutes).

    python bench/bench_plots.py [--n 10000] [--full 3000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(name: str, fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    w, c = time.perf_counter() - w, time.process_time() - c
    print(f"  {name:22s} wall {w:7.2f} s   cpu {c:7.2f} s")
    return w, c


def main() -> None:
    from vidssl.evaluation.plots import (
        plot_confusion, plot_retrieval_examples, plot_topk_curve, plot_tsne,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--full", type=int, default=3000, help="points for the whole-set t-SNE baseline (0: skip)")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 101, a.n)
    feats = (rng.normal(size=(101, 512))[labels] + 3 * rng.normal(size=(a.n, 512))).astype(np.float32)
    names = [f"class{i:03d}" for i in range(101)]
    n_test = int(0.4 * a.n)
    pred = np.where(rng.random(n_test) < 0.5, labels[:n_test], rng.integers(0, 101, n_test))
    frames = [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(48)]
    curve = np.minimum(1, 0.3 + 0.2 * np.log(np.arange(1, 51)))
    out = Path(tempfile.mkdtemp())
    print(f"{a.n} videos, 101 classes")
    total_w = total_c = 0.0
    for name, fn in (
        ("t-SNE (1000 sampled)", lambda: plot_tsne(feats, labels, names, out / "tsne.png")),
        ("confusion 101x101", lambda: plot_confusion(labels[:n_test], pred, names, out / "conf.png")),
        ("top-k curve", lambda: plot_topk_curve({"random init": curve / 2, "pretrained": curve}, out / "k.png")),
        ("retrieval examples", lambda: plot_retrieval_examples(frames[:8], [frames[8 + 5 * i: 13 + 5 * i]
                                                                              for i in range(8)],
                                                                 rng.random((8, 5)) < 0.5, out / "ex.png")),
    ):
        w, c = timed(name, fn)
        total_w, total_c = total_w + w, total_c + c
    print(f"all plots: wall {total_w:.1f} s, cpu {total_c:.1f} s (target < 30 s)")
    if a.full:
        from vidssl.evaluation import plots

        plots.TSNE_POINTS, plots.TSNE_ITERS = a.full, 1000
        w, c = timed(f"baseline t-SNE {a.full}", lambda: plot_tsne(feats, labels, names, out / "full.png",
                                                                    max_points=a.full))
        print(f"whole-set t-SNE baseline at {a.full} points, 1000 iterations: cpu {c:.1f} s")


if __name__ == "__main__":
    main()
