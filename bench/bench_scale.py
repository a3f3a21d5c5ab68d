"""Benchmark: the data stages at UCF101's size, through DVC, in a throwaway copy of this workspace.

`vidssl synth` renders UCF101's 13,320 videos (``--fraction`` for a share) as small, short MotionShapes clips;
they are then filed as a UCF101-shaped dataset: 101 class folders, `v_<Class>_gGG_cCC` names in 25 groups, and
`classInd.txt` with the three official train/test splits (test groups 1-7, 8-14, 15-21), CRLF lines. The
pipeline reads it with `data.dataset: ucf101`, exactly as it reads UCF101, through the real `dvc repro` stages
synth (a no-op for real datasets) -> extract -> lists -> validate. Each step's wall time and peak memory (its
process tree's largest resident set, from /usr/bin/time) are printed, then `dvc status` and a no-op `dvc repro
validate` on the finished workspace (both must stay under 30 s).

The clips' content is MotionShapes' 12 motions spread over the 101 names: the data stages neither look at nor
depend on what a class shows, only at how many videos, classes, frames and split rows there are.

    python bench/bench_scale.py [--fraction 1.0] [--keep /path/to/workspace]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
UCF101_VIDEOS, UCF101_CLASSES, GROUPS, TEST_GROUPS = 13_320, 101, 25, 7
COPY = ("dvc.yaml", "params.yaml", "presets", "stages", "vidssl", "flows", "pyproject.toml")
RAW, SPLITS = Path("data/ucf101/UCF-101"), Path("data/ucf101/ucfTrainTestlist")


def workspace(dst: Path) -> None:
    """A copy of the pipeline with a DVC repository of its own, reading a UCF101-format dataset."""
    for name in COPY:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["data"].update(dataset="ucf101", raw_dir=str(RAW), split_dir=str(SPLITS), split=1)
    params["extract"].update(short_side=32, workers=2, exact=False)  # the real-data presets' extract mode
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=dst, check=True)


def synth_params(dst: Path, per_class: int, size: int, frames: int) -> Path:
    """A params file for `vidssl synth`: MotionShapes' 12 classes, ``per_class`` videos each."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synth"].update(n_classes=12, videos_per_class=per_class, scale=1.0, size=size, frames=frames)
    path = dst / "synth-params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def file_as_ucf101(videos: Path, dst: Path, n_videos: int) -> dict:
    """Move the first ``n_videos`` rendered videos into UCF101's layout under ``dst`` with three splits.

    Video i goes to class i mod 101; a class's n videos spread evenly over UCF101's 25 groups in order (the
    j-th in group 1 + 25 j // n), numbered by clip within their group (4-7 clips a group at full size).
    """
    files = sorted(videos.glob("*/*.mp4"))[:n_videos]
    names = [f"Class{c + 1:03d}" for c in range(UCF101_CLASSES)]
    per_class = [len(range(c, len(files), UCF101_CLASSES)) for c in range(UCF101_CLASSES)]
    rows: list[tuple[str, int, int]] = []  # (relative path, label, group)
    clips: dict[tuple[int, int], int] = {}
    for i, src in enumerate(files):
        c, j = i % UCF101_CLASSES, i // UCF101_CLASSES
        group = 1 + GROUPS * j // per_class[c]
        clip = clips[c, group] = clips.get((c, group), 0) + 1
        rel = f"{names[c]}/v_{names[c]}_g{group:02d}_c{clip:02d}.mp4"
        (dst / RAW / rel).parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst / RAW / rel)
        rows.append((rel, c, group))
    splits = dst / SPLITS
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "classInd.txt").write_text("".join(f"{c + 1} {n}\r\n" for c, n in enumerate(names)), newline="")
    for s in (1, 2, 3):
        test = range(TEST_GROUPS * (s - 1) + 1, TEST_GROUPS * s + 1)
        (splits / f"trainlist{s:02d}.txt").write_text(
            "".join(f"{r} {c + 1}\r\n" for r, c, g in rows if g not in test), newline="")
        (splits / f"testlist{s:02d}.txt").write_text("".join(f"{r}\r\n" for r, c, g in rows if g in test),
                                                     newline="")
    return {"videos": len(rows), "classes": len({c for _, c, _ in rows})}


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of ``cmd``; /usr/bin/time reports the largest process of its tree."""
    out = subprocess.run(["/usr/bin/time", "-f", "VIDSSL_TIME %e %M", *cmd], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    wall, kib = re.findall(r"VIDSSL_TIME ([\d.]+) (\d+)", out.stderr)[-1]
    return float(wall), int(kib) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fraction", type=float, default=1.0, help="share of UCF101's 13,320 videos")
    ap.add_argument("--size", type=int, default=48, help="MotionShapes frame size in pixels")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--keep", type=Path, help="workspace folder to use and keep (default: a temp folder)")
    args = ap.parse_args()
    n_videos = max(4 * UCF101_CLASSES, round(UCF101_VIDEOS * args.fraction))
    root = args.keep or Path(tempfile.mkdtemp(prefix="vidssl-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    workspace(root)
    print(f"workspace {root}: {n_videos} videos ({args.fraction:g} of UCF101's {UCF101_VIDEOS}) in "
          f"{UCF101_CLASSES} classes, {args.size} px x {args.frames} frames; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start", flush=True)
    rows = []

    def row(name: str, wall: float, mib: float, note: str = "") -> None:
        rows.append((name, wall, mib))
        print(f"{name:<40} {wall:8.1f} s  {mib:8.0f} MiB peak  {note}".rstrip(), flush=True)

    per_class = math.ceil(n_videos / 12)
    render = root / "render"
    row(f"vidssl synth ({12 * per_class} videos)",
        *timed(["vidssl", "synth", str(render), "-p", str(synth_params(root, per_class, args.size, args.frames))],
               root))
    filed = file_as_ucf101(render / "videos", root, n_videos)
    shutil.rmtree(render)
    print(f"filed as UCF101: {filed}", flush=True)
    for stage in ("synth", "extract", "lists", "validate"):
        row(f"dvc repro --single-item {stage}", *timed(["dvc", "repro", "--single-item", stage], root))
    for cmd in (["dvc", "status", "validate"], ["dvc", "repro", "validate"]):
        wall, mib = timed(cmd, root)
        row(" ".join(cmd) + " (no-op)" * (cmd[1] == "repro"), wall, mib, "OK" if wall < 30 else "OVER 30 s")
    counts = json.loads((root / "data/lists/lists.json").read_text())["counts"]
    print(f"lists: {counts}; validation: {json.loads((root / 'reports/validation.json').read_text())['success']}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
