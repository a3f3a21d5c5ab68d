"""Benchmark: what bit-exact frame extraction costs against ffmpeg's own (CPU-dependent) SIMD paths.

`vidssl extract` runs ffmpeg with a bit-exact scaler and the C integer DCT so that data/frames hashes the same
on every machine (vidssl.data.decode). The baseline is the same command with ffmpeg's defaults, measured in
the same run on the same clips; both single-threaded, as extraction runs them (one ffmpeg per video).

    python bench/bench_extract.py [--data /work/shared/data/real] [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from vidssl.data.decode import ffmpeg_args
from vidssl.data.extract import VIDEO_EXTS


def seconds(clips: list[Path], short_side: int, bitexact: bool) -> float:
    """Wall time to turn every clip into JPEG frames once."""
    start = time.perf_counter()
    for clip in clips:
        args = ffmpeg_args(clip, short_side=short_side, fps=0, quality=90, bitexact=bitexact)
        subprocess.run(args, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/real"), help="real sample clips")
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest counts")
    args = ap.parse_args()
    clips = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in VIDEO_EXTS)
    if not clips:
        raise SystemExit(f"no videos under {args.data}; pass --data <folder of .avi/.mp4 clips>")
    print(f"{len(clips)} clips from {args.data}")
    print("| short side | ffmpeg defaults (SIMD) | bit-exact | ratio |")
    print("|---|---|---|---|")
    for short_side in (128, 32):
        # interleaved, so drifting machine load hits both sides alike
        best = {True: float("inf"), False: float("inf")}
        for _ in range(args.repeats):
            for exact in (False, True):
                best[exact] = min(best[exact], seconds(clips, short_side, exact))
        print(f"| {short_side} | {best[False]:.2f} s | {best[True]:.2f} s | {best[True] / best[False]:.2f}x time |")


if __name__ == "__main__":
    main()
