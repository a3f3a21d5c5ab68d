"""Benchmark: JPEG decoding (simplejpeg vs PIL) and clip reads (ZIP pack vs folder of JPEG files).

Frames come from real clips extracted with ``vidssl.data.extract`` in this run. Ratios are against the
baseline measured in the same run (PIL for decoding, one-file-per-frame folders for clip reads). Files
are in the page cache for both sides, so this measures CPU cost, not disk seeks.

    python bench/bench_decode.py [--data /work/shared/data/real] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from vidssl.data.extract import extract_videos
from vidssl.data.store import FramePack

CLIP_LEN = 16


def rate(fn: Callable[[], int], seconds: float) -> float:
    """Items per second of ``fn`` (which returns how many items it handled), run for about ``seconds``."""
    fn()  # warm-up: imports, caches
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        n += fn()
    return n / elapsed


def decode_pil(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def decode_simplejpeg(data: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def pack_bytes(pack: Path) -> list[bytes]:
    with zipfile.ZipFile(pack) as zf:
        return [zf.read(n) for n in sorted(zf.namelist())]


def bench_decoders(packs: dict[int, Path], seconds: float) -> list[tuple[str, str, float]]:
    rows = []
    for pack in packs.values():
        frames = pack_bytes(pack)
        h, w = decode_simplejpeg(frames[0]).shape[:2]
        for name, fn in (("PIL (baseline)", decode_pil), ("simplejpeg", decode_simplejpeg)):
            fps = rate(lambda fn=fn, frames=frames: sum(1 for f in frames if fn(f) is not None), seconds)
            rows.append((f"decode {w}x{h}", name, fps))
    return rows


def bench_clip_reads(packs: list[Path], folders: list[Path], seconds: float) -> list[tuple[str, str, float]]:
    """Random 16-frame clips from random videos; ``decode`` False times the container alone."""
    rng = random.Random(0)
    files = [sorted(f.iterdir()) for f in folders]  # listed once, as a dataset would cache it
    kept = [FramePack(p) for p in packs]
    zips = [zipfile.ZipFile(p) for p in packs]
    names = [sorted(z.namelist()) for z in zips]

    def pick() -> tuple[int, int]:
        i = rng.randrange(len(packs))
        return i, rng.randrange(len(files[i]) - CLIP_LEN + 1)

    def folder(decode: bool) -> int:
        i, s = pick()
        data = [f.read_bytes() for f in files[i][s : s + CLIP_LEN]]
        if decode:
            np.stack([decode_simplejpeg(d) for d in data])
        return CLIP_LEN

    def pack_open() -> int:  # open the ZIP per clip: the worst case, e.g. many videos per worker
        i, s = pick()
        with FramePack(packs[i]) as fp:
            fp.read(range(s, s + CLIP_LEN))
        return CLIP_LEN

    def pack_kept(decode: bool) -> int:  # kept open across clips, as a dataset's FramePack does
        i, s = pick()
        if decode:
            kept[i].read(range(s, s + CLIP_LEN))
        else:
            [zips[i].read(n) for n in names[i][s : s + CLIP_LEN]]
        return CLIP_LEN

    task = f"{CLIP_LEN}-frame clip"
    rows = [(f"{task} read+decode", "JPEG folder (baseline)", rate(lambda: folder(True), seconds)),
            (f"{task} read+decode", "ZIP pack, open per clip", rate(pack_open, seconds)),
            (f"{task} read+decode", "ZIP pack, kept open", rate(lambda: pack_kept(True), seconds)),
            (f"{task} bytes only", "JPEG folder (baseline)", rate(lambda: folder(False), seconds)),
            (f"{task} bytes only", "ZIP pack, kept open", rate(lambda: pack_kept(False), seconds))]
    for obj in kept + zips:
        obj.close()
    return rows


def print_table(rows: list[tuple[str, str, float]]) -> None:
    print(f"{'task':<26} {'method':<26} {'frames/s':>10} {'vs baseline':>12}")
    base: dict[str, float] = {}
    for task, method, fps in rows:
        base.setdefault(task, fps)  # the first row of each task is its baseline
        print(f"{task:<26} {method:<26} {fps:>10.0f} {fps / base[task]:>11.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/real"), help="real sample clips")
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()
    clips = sorted((args.data / "ucf101/videos").glob("*/*.avi"))[:8]
    if not clips:
        raise FileNotFoundError(f"no UCF101 .avi clips under {args.data}/ucf101/videos; pass --data")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for clip in clips:
            (tmp / "src" / clip.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(clip, tmp / "src" / clip.parent.name / clip.name)
        start = time.perf_counter()
        reps = {s: extract_videos(tmp / "src", tmp / f"out{s}", short_side=s, workers=2, progress=False)
                for s in (128, 240)}
        n_frames = sum(v["n_frames"] for r in reps.values() for v in r["videos"])
        dt = time.perf_counter() - start
        n_videos = 2 * len(clips)
        print(f"extracted {n_videos} videos ({n_frames} frames) at short side 128 and 240 in {dt:.1f}s: "
              f"{n_videos / dt:.1f} videos/s, {n_frames / dt:.0f} frames/s (workers=2)\n")
        packs128 = sorted((tmp / "out128").glob("*/*.zip"))
        folders = []
        for pack in packs128:  # the same frames as one file per frame: the layout packs replace
            folder = tmp / "folders" / pack.parent.name / pack.stem
            with zipfile.ZipFile(pack) as zf:
                zf.extractall(folder)
            folders.append(folder)
        decode_packs = {s: sorted((tmp / f"out{s}").glob("*/*.zip"))[0] for s in (128, 240)}
        print_table(bench_decoders(decode_packs, args.seconds) +
                    bench_clip_reads(packs128, folders, args.seconds))


if __name__ == "__main__":
    main()
