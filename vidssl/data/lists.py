"""CSV lists (pretrain/train/val/test + class index) from official split files and the frame store.

Parses the official UCF101 (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``, CRLF) and HMDB51
(``testTrainMulti_7030_splits/<class>_test_split<N>.txt``) formats. The synthetic MotionShapes set is
written in the UCF101 format. Split entries are matched to store packs case-insensitively on
(folder, stem), ignoring the extension, because UCF101 names its ``HandstandPushups`` videos
``v_HandStandPushups_*`` and the split files say ``.avi`` where the store has ``.zip``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vidssl.data.store import PACK_SUFFIX, count_frames
from vidssl.io import write_json, write_text

log = logging.getLogger(__name__)

COLUMNS = ("video_id", "frames_path", "n_frames", "label", "class_name", "split")
FORMATS = ("ucf101", "synthetic", "hmdb51")  # synthetic = MotionShapes, written in the UCF101 format
LISTS = ("pretrain", "train", "val", "test")
_HMDB_SUBSETS = {"1": "train", "2": "test", "0": "unused"}


class SplitEntry(NamedTuple):
    """One video of an official split: class ``folder``, file ``stem`` (no extension), 0-based ``label``,
    ``subset`` ("train" or "test")."""

    folder: str
    stem: str
    label: int
    subset: str


def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a split file with 1-based line numbers; CRLF and trailing spaces stripped."""
    text = path.read_text(encoding="utf-8-sig")
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _malformed(path: Path, lineno: int, line: str, expected: str) -> ValueError:
    return ValueError(f"{path}:{lineno}: malformed line {line!r}; expected {expected}")


def _split_path(path: Path, lineno: int, line: str, video: str) -> tuple[str, str]:
    """``Folder/v_name.avi`` -> (folder, stem)."""
    parts = video.split("/")
    if len(parts) != 2 or not all(parts):
        raise _malformed(path, lineno, line, "'<ClassFolder>/<video file>'")
    return parts[0], parts[1].rsplit(".", 1)[0]


def _ucf_dir(split_dir: Path) -> Path:
    """Accept the split folder itself or its parent holding ``ucfTrainTestlist/``."""
    nested = split_dir / "ucfTrainTestlist"
    return nested if not (split_dir / "classInd.txt").exists() and nested.is_dir() else split_dir


def read_ucf101_split(split_dir: Path, split: int = 1) -> tuple[list[str], list[SplitEntry]]:
    """Read UCF101-format split files: class names in label order and the train then test entries.

    Raises:
        FileNotFoundError: a split file is missing (names the path and the files expected).
        ValueError: a malformed line, or a label/class not in ``classInd.txt``.
    """
    split_dir = _ucf_dir(Path(split_dir))
    names = ("classInd.txt", f"trainlist{split:02d}.txt", f"testlist{split:02d}.txt")
    for name in names:
        if not (split_dir / name).is_file():
            raise FileNotFoundError(
                f"{split_dir / name} not found; a UCF101-format split folder holds {names}"
            )
    classes: list[str] = []
    for lineno, line in _lines(split_dir / names[0]):
        m = re.fullmatch(r"(\d+)\s+(\S+)", line)
        if not m or int(m[1]) != len(classes) + 1:
            raise _malformed(split_dir / names[0], lineno, line, f"'{len(classes) + 1} <ClassName>'")
        classes.append(m[2])
    by_folder = {c.lower(): i for i, c in enumerate(classes)}
    entries = []
    for subset, name in (("train", names[1]), ("test", names[2])):
        path = split_dir / name
        for lineno, line in _lines(path):
            fields = line.split()
            if len(fields) != (2 if subset == "train" else 1) or (
                subset == "train" and not fields[1].isdigit()
            ):
                raise _malformed(
                    path,
                    lineno,
                    line,
                    "'<Class>/<video> <label>'" if subset == "train" else "'<Class>/<video>'",
                )
            folder, stem = _split_path(path, lineno, line, fields[0])
            if folder.lower() not in by_folder:
                raise ValueError(f"{path}:{lineno}: class folder {folder!r} is not in {split_dir / names[0]}")
            label = by_folder[folder.lower()]
            if subset == "train" and int(fields[1]) != label + 1:
                raise ValueError(
                    f"{path}:{lineno}: label {fields[1]} does not match class {folder!r} (label "
                    f"{label + 1}) in {split_dir / names[0]} (1..{len(classes)})"
                )
            entries.append(SplitEntry(folder, stem, label, subset))
    return classes, entries


def read_hmdb51_split(split_dir: Path, split: int = 1) -> tuple[list[str], list[SplitEntry]]:
    """Read HMDB51 ``<class>_test_split<N>.txt`` files (1 = train, 2 = test, 0 = unused and skipped).

    Labels follow the alphabetical order of class names; TSN's ``class_list.txt`` is ignored.

    Raises:
        FileNotFoundError: no split files for ``split`` (names the folder and the pattern expected).
        ValueError: a malformed line.
    """
    split_dir = Path(split_dir)
    if (split_dir / "testTrainMulti_7030_splits").is_dir():
        split_dir = split_dir / "testTrainMulti_7030_splits"
    suffix = f"_test_split{split}.txt"
    files = sorted(split_dir.glob(f"*{suffix}")) if split_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"{split_dir} has no '<class>{suffix}' files; expected the official HMDB51 "
            "testTrainMulti_7030_splits folder"
        )
    classes = sorted(f.name[: -len(suffix)] for f in files)
    entries = []
    for label, folder in enumerate(classes):
        path = split_dir / f"{folder}{suffix}"
        for lineno, line in _lines(path):
            fields = line.split()
            if len(fields) != 2 or fields[1] not in _HMDB_SUBSETS:
                raise _malformed(path, lineno, line, "'<video>.avi <0|1|2>'")
            if _HMDB_SUBSETS[fields[1]] != "unused":
                entries.append(
                    SplitEntry(folder, fields[0].rsplit(".", 1)[0], label, _HMDB_SUBSETS[fields[1]])
                )
    return classes, entries


def index_store(frames_root: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """Map (folder, stem) lower-cased -> (folder, stem) as spelled in the store, for every pack."""
    root = Path(frames_root)
    if not root.is_dir():
        return {}
    return {
        (p.parent.name.lower(), p.stem.lower()): (p.parent.name, p.stem)
        for p in root.glob(f"*/*{PACK_SUFFIX}")
        if p.is_file()
    }


def _rows(entries: list[SplitEntry], store: dict, frames_root: Path, classes: list[str]) -> list[dict]:
    """One CSV row (without ``split``) per entry present in the store, sorted by (label, video_id)."""
    rows = []
    for e in entries:
        folder, stem = store[(e.folder.lower(), e.stem.lower())]
        path = frames_root / folder / (stem + PACK_SUFFIX)
        rows.append(
            {
                "video_id": f"{folder}/{stem}",
                "frames_path": str(path),
                "n_frames": count_frames(path),
                "label": e.label,
                "class_name": classes[e.label],
            }
        )
    return sorted(rows, key=lambda r: (r["label"], r["video_id"]))


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _split_val(train: list[dict], val_videos: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold ``val_videos`` random train videos out (seeded); return (train, val), both sorted."""
    if val_videos >= len(train):
        raise ValueError(
            f"val_videos={val_videos} leaves no train videos ({len(train)} present); lower lists.val_videos"
        )
    picked = set(np.random.default_rng(seed).choice(len(train), size=val_videos, replace=False).tolist())
    return [r for i, r in enumerate(train) if i not in picked], [
        r for i, r in enumerate(train) if i in picked
    ]


def write_lists(
    frames_root: Path,
    split_dir: Path,
    out_dir: Path,
    *,
    split: int = 1,
    fmt: str = "ucf101",
    val_videos: int = 0,
    seed: int = 0,
) -> dict:
    """Write ``pretrain/train/val/test/classes.csv`` and ``lists.json`` to ``out_dir``; return the summary.

    pretrain holds every train-split video (self-supervised pretraining uses the train split, as IIC
    does); val holds ``val_videos`` random train videos and train the rest; test the test split. Split
    entries without a pack in the store are skipped and reported, since real datasets miss videos.

    Raises:
        ValueError: unknown ``fmt``, bad split files, or a train/test list with no video in the store.
        FileNotFoundError: split files missing.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: unknown split format; choose from {FORMATS}")
    if val_videos < 0:
        raise ValueError(f"val_videos={val_videos}: must be >= 0")
    frames_root, out_dir = Path(frames_root), Path(out_dir)
    reader = read_hmdb51_split if fmt == "hmdb51" else read_ucf101_split
    classes, entries = reader(Path(split_dir), split)
    keys = [(e.folder.lower(), e.stem.lower()) for e in entries]
    if len(set(keys)) != len(keys):
        counts = Counter(keys)
        dup = next(e for e, k in zip(entries, keys, strict=True) if counts[k] > 1)
        raise ValueError(
            f"{split_dir}: video {dup.folder}/{dup.stem} is listed twice in split {split} "
            "(train and test?); fix the split files"
        )
    store = index_store(frames_root)
    present = [e for e in entries if (e.folder.lower(), e.stem.lower()) in store]
    missing = [e for e in entries if (e.folder.lower(), e.stem.lower()) not in store]
    if missing:
        log.warning(
            "%d of %d split entries have no pack under %s (e.g. %s/%s); skipped",
            len(missing),
            len(entries),
            frames_root,
            missing[0].folder,
            missing[0].stem,
        )
    pretrain = _rows([e for e in present if e.subset == "train"], store, frames_root, classes)
    test = _rows([e for e in present if e.subset == "test"], store, frames_root, classes)
    for name, rows in (("train", pretrain), ("test", test)):
        if not rows:
            raise ValueError(
                f"the {name} list of split {split} in {split_dir} has no video in the frame store "
                f"{frames_root}; run extract first (vidssl extract / dvc repro extract)"
            )
    train, val = _split_val(pretrain, val_videos, seed)
    lists = {"pretrain": pretrain, "train": train, "val": val, "test": test}
    for name, rows in lists.items():
        write_text(out_dir / f"{name}.csv", _csv([{**r, "split": name} for r in rows], COLUMNS))
    write_text(
        out_dir / "classes.csv",
        _csv([{"label": i, "class_name": c} for i, c in enumerate(classes)], ("label", "class_name")),
    )
    listed = {(e.folder.lower(), e.stem.lower()) for e in entries}
    summary = {
        "counts": {name: len(rows) for name, rows in lists.items()},
        "n_classes": len(classes),
        "n_split_entries": len(entries),
        "missing": {
            "count": len(missing),
            "train": sum(e.subset == "train" for e in missing),
            "test": sum(e.subset == "test" for e in missing),
            "first": [f"{e.folder}/{e.stem}" for e in missing[:20]],
        },
        "store_not_in_split": sum(key not in listed for key in store),
        "params": {
            "frames_root": str(frames_root),
            "split_dir": str(split_dir),
            "split": split,
            "fmt": fmt,
            "val_videos": val_videos,
            "seed": seed,
        },
    }
    write_json(out_dir / "lists.json", summary)
    return summary
