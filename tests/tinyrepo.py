"""A throwaway git + DVC project running this repository's pipeline on the smallest config that still trains:
shared by the end-to-end, deployment and fault tests, which each start from it."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))

# 8 motion classes x 4 videos of 20 frames, a 4-wide tiny backbone, 2 pretraining epochs.
TINY: dict[str, Any] = {
    "synth": {"n_classes": 8, "videos_per_class": 4, "size": 32, "frames": 20},
    "extract": {"short_side": 32, "workers": 2},
    "model": {"backbone": "tiny", "width": 4},
    "clip": {"frames": 8, "stride": 2, "resize": 32, "crop": 28},
    "pretrain": {"epochs": 2, "milestones": [], "batch_size": 8, "workers": 0, "iic": {"nce_k": 16}},
    "finetune": {"epochs": 1, "batch_size": 8, "workers": 0, "test_clips": 2},
    "retrieve": {"clips": 2, "workers": 0},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s leaves written into it (nested dicts merged, not replaced); returns ``base``."""
    for key, value in over.items():
        if isinstance(value, dict):
            merge(base.setdefault(key, {}), value)
        else:
            base[key] = value
    return base


def tiny_params(**over: dict[str, Any]) -> dict[str, Any]:
    """The repository's params.yaml with :data:`TINY` and then ``over`` merged in."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    return merge(merge(params, copy.deepcopy(TINY)), over)


def tiny_repo(dest: Path, params: dict[str, Any] | None = None, files: tuple[str, ...] = (),
              folders: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Path:
    """``dest`` as a git + DVC project with the pipeline (dvc.yaml, stages/, vidssl/, presets/, plus ``files``
    and ``folders``) on ``params`` (default :func:`tiny_params`); nothing committed, nothing run."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".gitignore", *files):
        shutil.copy(ROOT / name, dest / name)
    for folder in ("stages", "vidssl", "presets", *folders):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "params.yaml").write_text(yaml.safe_dump(params or tiny_params(), sort_keys=False))
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env, capture_output=True)
    return dest
