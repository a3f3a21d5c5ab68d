"""Benchmark: the data stages at UCF101's size, through DVC, in a throwaway copy of this workspace.

MotionShapes videos (small and short) at UCF101's 13,320 videos (``--fraction`` for a share of it) go through the
real `dvc repro` stages synth -> extract -> lists -> validate; each stage's wall time and peak memory (its
process tree's largest resident set, from /usr/bin/time) are printed, then `dvc status` and a no-op `dvc repro
validate` on the finished workspace (both must stay under 30 s). MotionShapes has 12 classes, so the class count
is 12, not UCF101's 101.

    python bench/bench_scale.py [--fraction 1.0] [--keep /path/to/workspace]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
UCF101_VIDEOS = 13_320
COPY = ("dvc.yaml", "params.yaml", "presets", "stages", "vidssl", "flows", "pyproject.toml")


def workspace(dst: Path, per_class: int, size: int, frames: int) -> None:
    """A copy of the pipeline with a DVC repository of its own and params sized for the run."""
    for name in COPY:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["synth"].update(n_classes=12, videos_per_class=per_class, scale=1.0, size=size, frames=frames)
    params["extract"].update(short_side=32, workers=2)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=dst, check=True)


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
    per_class = max(4, round(UCF101_VIDEOS * args.fraction / 12))
    root = args.keep or Path(tempfile.mkdtemp(prefix="vidssl-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    workspace(root, per_class, args.size, args.frames)
    env_note = f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"
    print(f"workspace {root}: {12 * per_class} videos ({args.fraction:g} of UCF101's {UCF101_VIDEOS}), 12 classes, "
          f"{args.size} px x {args.frames} frames; {env_note}")
    rows = []
    for stage in ("synth", "extract", "lists", "validate"):
        wall, mib = timed(["dvc", "repro", "--single-item", stage], root)
        rows.append((f"dvc repro --single-item {stage}", wall, mib))
        print(f"{rows[-1][0]:<36} {wall:8.1f} s  {mib:8.0f} MiB peak", flush=True)
    for cmd in (["dvc", "status", "validate"], ["dvc", "repro", "validate"]):
        wall, mib = timed(cmd, root)
        rows.append((" ".join(cmd) + " (no-op)" * (cmd[1] == "repro"), wall, mib))
        print(f"{rows[-1][0]:<36} {wall:8.1f} s  {mib:8.0f} MiB peak  {'OK' if wall < 30 else 'OVER 30 s'}", flush=True)
    counts = json.loads((root / "data/lists/lists.json").read_text())["counts"]
    print(f"lists: {counts}; validation: {json.loads((root / 'reports/validation.json').read_text())['success']}")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
