"""Shared test setup: telemetry off, small thread pools, and tiny frame-store fixtures."""

from __future__ import annotations

import os

for _key, _value in {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false",
                     "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}.items():
    os.environ.setdefault(_key, _value)

import csv  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vidssl.data.store import write_pack  # noqa: E402


def moving_square_video(n_frames: int, size: int, direction: int, rng: np.random.Generator) -> np.ndarray:
    """A bright square moving right (direction=+1) or left (-1) over a random static background."""
    bg = rng.integers(0, 120, size=(size, size, 3), dtype=np.uint8)
    video = np.repeat(bg[None], n_frames, axis=0)
    side = size // 4
    for t in range(n_frames):
        x = (size // 2 + direction * (t - n_frames // 2)) % (size - side)
        video[t, size // 3 : size // 3 + side, x : x + side] = 255
    return video


@pytest.fixture
def tiny_lists(tmp_path: Path) -> Path:
    """A lists dir over real packs: 2 classes (right/left squares), 6 train and 4 test videos, 24 frames, 40 px."""
    rng = np.random.default_rng(0)
    lists = tmp_path / "lists"
    lists.mkdir()
    header = ["video_id", "frames_path", "n_frames", "label", "class_name", "split"]
    rows: dict[str, list[list]] = {"pretrain": [], "train": [], "val": [], "test": []}
    for label, name in enumerate(("Right", "Left")):
        for v in range(5):
            vid = f"v_{name}_g{v + 1:02d}_c01"
            path = tmp_path / "frames" / name / f"{vid}.zip"
            n = write_pack(path, list(moving_square_video(24, 40, 1 if label == 0 else -1, rng)))
            split = "test" if v < 2 else "train"
            rows[split].append([vid, str(path), n, label, name, split])
            if split == "train":
                rows["pretrain"].append([vid, str(path), n, label, name, "pretrain"])
    for name, body in rows.items():
        with open(lists / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(body)
    (lists / "classes.csv").write_text("label,class_name\n0,Right\n1,Left\n")
    return lists


# The files that take longest on a 2-core machine (--durations), longest first. scripts/test.sh runs the files
# on several processes (pytest-xdist, whole files to one process, in collection order): starting these first
# keeps one long file from running alone at the end. Only the order of the files changes; tests in a file keep
# theirs.
_LONGEST_FIRST = ("faults/test_sigkill.py", "test_pipeline_e2e.py", "test_ui_browser.py", "test_deploy_e2e.py",
                  "test_flows.py", "test_splits.py", "test_train.py", "test_ddp.py", "test_tracking.py",
                  "test_extract.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((k for k, name in enumerate(_LONGEST_FIRST) if path.endswith("tests/" + name)),
                    len(_LONGEST_FIRST))

    items.sort(key=rank)  # stable: every file keeps its own order
