"""Benchmark: what bit-exact H.264 encoding of MotionShapes costs against x264's and swscale's SIMD code.

`vidssl synth` encodes with x264's C code and a bitexact RGB->YUV conversion so that data/raw hashes the same
on every machine (vidssl.data.synth). The baseline is the same command with their SIMD paths (bytes then depend
on the CPU), measured in the same run on the same rendered videos; both single-threaded, as synth runs them.

    python bench/bench_synth.py [--videos 40] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from vidssl.data.synth import CLASSES, encode_args, render_video


def seconds(videos: list[np.ndarray], out: Path, bitexact: bool) -> float:
    """Wall time to encode every video once."""
    start = time.perf_counter()
    for video in videos:
        _, h, w, _ = video.shape
        args = encode_args(out, width=w, height=h, fps=25, bitexact=bitexact)
        subprocess.run(args, input=video.tobytes(), capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=40, help="videos rendered at the default 96 px x 40 frames")
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest counts")
    args = ap.parse_args()
    videos = [np.ascontiguousarray(render_video(CLASSES[i % len(CLASSES)], np.random.default_rng([0, i]), 96,
                                                40).video) for i in range(args.videos)]
    best = {True: float("inf"), False: float("inf")}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v.mp4"
        for _ in range(args.repeats):
            for exact in (False, True):  # interleaved, so drifting machine load hits both sides alike
                best[exact] = min(best[exact], seconds(videos, out, exact))
    print(f"{args.videos} MotionShapes videos, 96 px x 40 frames, one x264 thread")
    print("| SIMD (CPU-dependent bytes) | bit-exact (C code) | ratio |")
    print("|---|---|---|")
    print(f"| {best[False]:.2f} s | {best[True]:.2f} s | {best[True] / best[False]:.2f}x time |")


if __name__ == "__main__":
    main()
