"""Benchmark: what bit-exact frame extraction costs against ffmpeg's own (CPU-dependent) SIMD paths.

`vidssl extract` runs ffmpeg with a bit-exact scaler and the C integer DCT so that data/frames hashes the same
on every machine (vidssl.data.decode). The baseline is the same command with ffmpeg's defaults, measured in
the same run on the same clips; both single-threaded, as extraction runs them (one ffmpeg per video).

    python bench/bench_extract.py [--data /work/shared/data/real] [--repeats 3]

``--vs-cli`` measures instead the whole `vidssl extract` with ``extract.exact: false`` (its ffmpeg processes,
JPEG split and pack writing) against a plain ffmpeg command-line loop writing numbered JPEGs, with the same
number of videos in flight (``--workers``), at 128 px short side; ratio = plain loop time / extract time.

    python bench/bench_extract.py --vs-cli [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


def plain_cli(clips: list[Path], out: Path, workers: int, short_side: int = 128) -> float:
    """Wall time of ``ffmpeg -i clip -vf scale=-2:S -q:v 2 out/%06d.jpg`` over every clip, ``workers`` at once."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()

    def one(i_clip: tuple[int, Path]) -> None:
        folder = out / str(i_clip[0])
        folder.mkdir(parents=True)
        subprocess.run([exe, "-nostdin", "-v", "error", "-threads", "1", "-i", str(i_clip[1]), "-vf",
                        f"scale=-2:{short_side}", "-q:v", "2", "-fps_mode", "passthrough", str(folder / "%06d.jpg")],
                       check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, enumerate(clips)))
    return time.perf_counter() - start


def vs_cli(data: Path, workers: int, repeats: int) -> None:
    """`vidssl extract` (exact: false) against a plain ffmpeg loop, same clips and parallelism, fastest of N."""
    from vidssl.data.extract import extract_videos

    clips = sorted(p for p in data.rglob("*") if p.suffix.lower() in VIDEO_EXTS and "broken" not in p.parts)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for i, clip in enumerate(clips):  # extract's class-folder layout, the same bytes
            (src / "c").mkdir(parents=True, exist_ok=True)
            (src / "c" / f"{i:03d}{clip.suffix}").symlink_to(clip.resolve())
        best = {"cli": float("inf"), "extract": float("inf")}
        for _ in range(repeats):  # interleaved, so drifting machine load hits both sides alike
            shutil.rmtree(Path(tmp) / "cli", ignore_errors=True)
            best["cli"] = min(best["cli"], plain_cli(clips, Path(tmp) / "cli", workers))
            shutil.rmtree(Path(tmp) / "out", ignore_errors=True)
            start = time.perf_counter()
            extract_videos(src, Path(tmp) / "out", short_side=128, workers=workers, exact=False, progress=False)
            best["extract"] = min(best["extract"], time.perf_counter() - start)
        frames = sum(1 for _ in (Path(tmp) / "cli").rglob("*.jpg"))
    print(f"{len(clips)} clips, {frames} frames, {workers} videos at once, 128 px, fastest of {repeats}")
    print("| plain ffmpeg loop | vidssl extract (exact: false) | ratio (loop time / extract time) |")
    print("|---|---|---|")
    print(f"| {best['cli']:.2f} s | {best['extract']:.2f} s | {best['cli'] / best['extract']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/real"), help="real sample clips")
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest counts")
    ap.add_argument("--vs-cli", action="store_true", help="whole extract vs a plain ffmpeg command-line loop")
    ap.add_argument("--workers", type=int, default=2, help="videos in flight (--vs-cli)")
    args = ap.parse_args()
    if args.vs_cli:
        return vs_cli(args.data, args.workers, args.repeats)
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
