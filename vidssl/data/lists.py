"""CSV lists (pretrain/train/val/test + class index) from official split files and the frame store.

One adapter per ``data.dataset`` turns a dataset's own split files into (class names, split entries):

- ``ucf101`` (and ``synthetic``, written in its format): ``classInd.txt``, ``trainlist0N.txt``,
  ``testlist0N.txt`` (CRLF), splits 1-3.
- ``hmdb51``: ``testTrainMulti_7030_splits/<class>_test_split<N>.txt`` (1 train, 2 test, 0 unused).
- ``kinetics400``: the official CSV annotations (``train.csv`` and ``validate.csv``/``val.csv`` with
  label, youtube_id, time_start, time_end, split; val is the test list), videos named
  ``<youtube_id>_<start:06d>_<end:06d>`` or ``<youtube_id>`` under class folders; without the CSVs, the
  class folders alone as ``folders`` does.
- ``diving48``: ``Diving48[_V2]_{train,test}.json`` (``vid_name``, ``label``; names from ``Diving48_vocab.json``),
  videos in one folder (e.g. ``rgb/``), matched by name alone.
- ``folders``: class sub-folders of the store; ``train.txt``/``test.txt`` (lines ``<class>/<video>``) if
  present, else a stable ``lists.test_fraction`` of each class (by a hash of the video name) is the test list.

Split entries are matched to store packs case-insensitively on (folder, stem), ignoring the extension,
because UCF101 names its ``HandstandPushups`` videos ``v_HandStandPushups_*`` and the split files say
``.avi`` where the store has ``.zip``; folder names match with spaces and underscores taken as one.
Entries without a pack are listed in ``lists.json``; above ``max_missing`` of them the stage stops.
"""

from __future__ import annotations

import csv
import hashlib
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
FORMATS = ("ucf101", "synthetic", "hmdb51", "kinetics400", "diving48", "folders")  # synthetic: UCF101 format
LISTS = ("pretrain", "train", "val", "test")
_HMDB_SUBSETS = {"1": "train", "2": "test", "0": "unused"}


class SplitEntry(NamedTuple):
    """One video of an official split: class ``folder``, file ``stem`` (no extension), 0-based ``label``,
    ``subset`` ("train" or "test"), ``where`` it is listed ("file:line") and ``alts``, other stems the same
    video goes by (Kinetics: with or without its time range). An empty ``folder`` matches by stem alone."""

    folder: str
    stem: str
    label: int
    subset: str
    where: str = ""
    alts: tuple[str, ...] = ()


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
            entries.append(SplitEntry(folder, stem, label, subset, f"{path}:{lineno}"))
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
                entries.append(SplitEntry(folder, fields[0].rsplit(".", 1)[0], label, _HMDB_SUBSETS[fields[1]],
                                          f"{path}:{lineno}"))
    return classes, entries


def folder_key(name: str) -> str:
    """A class folder name as matched: case, spaces and underscores do not matter ("arm wrestling" ==
    "Arm_Wrestling"), as Kinetics downloads spell class folders either way."""
    return re.sub(r"[\s_]+", "_", name.strip()).lower()


_K400_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
_K400_FILES = {"train": ("train.csv",), "test": ("validate.csv", "val.csv")}


def _k400_files(split_dir: Path) -> dict[str, Path]:
    found = {}
    for subset, names in _K400_FILES.items():
        for name in names:
            if (split_dir / name).is_file():
                found[subset] = split_dir / name
                break
    return found


def read_kinetics400(split_dir: Path) -> tuple[list[str], list[SplitEntry]]:
    """Read the official Kinetics-400 CSV annotations: classes are the train labels sorted; val is the test list.

    Raises:
        FileNotFoundError: no train or val CSV in ``split_dir``.
        ValueError: a missing column, a bad time, or a val label that no train row has (file and line named).
    """
    split_dir = Path(split_dir)
    files = _k400_files(split_dir)
    if set(files) != {"train", "test"}:
        raise FileNotFoundError(
            f"{split_dir}: Kinetics-400 annotations need train.csv and validate.csv (or val.csv) with columns "
            f"{', '.join(_K400_COLUMNS)}; or leave them out to use the class folders (data.dataset: folders)")
    tables: dict[str, list[tuple[int, dict]]] = {}
    for subset, path in files.items():
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _K400_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}:1: missing column(s) {missing}; expected {', '.join(_K400_COLUMNS)}")
            tables[subset] = [(n, row) for n, row in enumerate(reader, start=2)]
    classes = sorted({row["label"].strip() for _, row in tables["train"]})
    by_name = {c: i for i, c in enumerate(classes)}
    entries = []
    for subset, rows in tables.items():
        for lineno, row in rows:
            where = f"{files[subset]}:{lineno}"
            label, yid = row["label"].strip(), row["youtube_id"].strip()
            if label not in by_name:
                raise ValueError(f"{where}: label {label!r} is in no row of {files['train']}; fix the annotations")
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            except ValueError:
                raise ValueError(f"{where}: time_start/time_end {row['time_start']!r}/{row['time_end']!r} "
                                 "are not numbers") from None
            if not yid:
                raise ValueError(f"{where}: empty youtube_id")
            entries.append(SplitEntry(label, f"{yid}_{start:06d}_{end:06d}", by_name[label], subset, where, (yid,)))
    return classes, entries


def read_diving48(split_dir: Path) -> tuple[list[str], list[SplitEntry]]:
    """Read Diving48's JSON annotations (V2 preferred): a list of ``{"vid_name", "label", ...}`` per subset.

    Class names come from ``Diving48_vocab.json`` (takeoff, somersault, twist, flight) when present.

    Raises:
        FileNotFoundError: no train/test JSON pair in ``split_dir``.
        ValueError: a malformed item or a label outside 0..47 (file and item named).
    """
    import json

    split_dir = Path(split_dir)
    for prefix in ("Diving48_V2", "Diving48"):
        files = {t: split_dir / f"{prefix}_{t}.json" for t in ("train", "test")}
        if all(f.is_file() for f in files.values()):
            break
    else:
        raise FileNotFoundError(f"{split_dir}: no Diving48_V2_train.json + Diving48_V2_test.json (or Diving48_*)")
    vocab_path = split_dir / "Diving48_vocab.json"
    vocab = json.loads(vocab_path.read_text(encoding="utf-8")) if vocab_path.is_file() else None
    n = len(vocab) if vocab else 48
    classes = [" ".join(map(str, vocab[i])) if vocab else f"class_{i:02d}" for i in range(n)]
    entries = []
    for subset, path in files.items():
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        for k, item in enumerate(items if isinstance(items, list) else []):
            where = f"{path}: item {k}"
            if not isinstance(item, dict) or not isinstance(item.get("vid_name"), str) or \
                    not isinstance(item.get("label"), int):
                raise ValueError(f"{where}: expected {{'vid_name': str, 'label': int, ...}}, got {item!r:.80}")
            if not 0 <= item["label"] < n:
                raise ValueError(f"{where}: label {item['label']} outside 0..{n - 1}")
            entries.append(SplitEntry("", item["vid_name"], item["label"], subset, where))
    return classes, entries


def _hold_out(video: str, fraction: float) -> bool:
    """A stable test/train draw per video (a hash of its name): adding videos never moves the others."""
    digest = hashlib.sha256(video.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def read_folders(split_dir: Path, frames_root: Path, test_fraction: float = 0.3) -> tuple[list[str], list[SplitEntry]]:
    """Classes from the store's class folders (sorted); the test list from ``split_dir/test.txt`` (and train
    from ``train.txt``) when present, lines ``<class>/<video>``; otherwise ``test_fraction`` of each class.

    Raises:
        ValueError: a split line naming a class folder the store does not have (file and line named).
    """
    split_dir, root = Path(split_dir), Path(frames_root)
    packs = sorted((p.parent.name, p.stem) for p in root.glob(f"*/*{PACK_SUFFIX}")) if root.is_dir() else []
    classes = sorted({f for f, _ in packs})
    label = {folder_key(c): i for i, c in enumerate(classes)}
    listed = {t: split_dir / f"{t}.txt" for t in ("train", "test")}
    if not any(f.is_file() for f in listed.values()):
        return classes, [SplitEntry(f, s, label[folder_key(f)], "test" if _hold_out(f"{f}/{s}", test_fraction)
                                    else "train", f"{root}/{f}") for f, s in packs]
    entries = []
    for subset, path in listed.items():
        if not path.is_file():
            continue
        for lineno, line in _lines(path):
            folder, stem = _split_path(path, lineno, line, line)  # the whole line: names may hold spaces
            if folder_key(folder) not in label:
                raise ValueError(f"{path}:{lineno}: class folder {folder!r} is not in the frame store {root}")
            entries.append(SplitEntry(folder, stem, label[folder_key(folder)], subset, f"{path}:{lineno}"))
    return classes, entries


def read_split(fmt: str, split_dir: Path, split: int, frames_root: Path,
               test_fraction: float = 0.3) -> tuple[list[str], list[SplitEntry]]:
    """(class names, split entries) of a dataset in format ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: unknown split format; choose from {FORMATS}")
    if fmt == "hmdb51":
        return read_hmdb51_split(split_dir, split)
    if fmt == "diving48":
        return read_diving48(split_dir)
    if fmt == "kinetics400" and _k400_files(Path(split_dir)):
        return read_kinetics400(split_dir)
    if fmt in ("kinetics400", "folders"):
        return read_folders(split_dir, frames_root, test_fraction)
    return read_ucf101_split(split_dir, split)


def index_store(frames_root: Path) -> dict[tuple[str, str], tuple[str, str]]:
    """Map (folder key, stem lower-cased) -> (folder, stem) as spelled in the store, for every pack; each stem
    is also indexed under folder "" when no other pack shares it (for datasets listed by name alone)."""
    root = Path(frames_root)
    if not root.is_dir():
        return {}
    packs = [(p.parent.name, p.stem) for p in root.glob(f"*/*{PACK_SUFFIX}") if p.is_file()]
    index = {(folder_key(f), s.lower()): (f, s) for f, s in packs}
    stems = Counter(s.lower() for _, s in packs)
    index.update({("", s.lower()): (f, s) for f, s in packs if stems[s.lower()] == 1})
    return index


def _match(e: SplitEntry, store: dict) -> tuple[str, str] | None:
    """The store's (folder, stem) for a split entry, or None if it has no pack."""
    for stem in (e.stem, *e.alts):
        hit = store.get((folder_key(e.folder), stem.lower()))
        if hit is not None:
            return hit
    return None


def _rows(entries: list[SplitEntry], store: dict, frames_root: Path, classes: list[str]) -> list[dict]:
    """One CSV row (without ``split``) per entry present in the store, sorted by (label, video_id)."""
    rows = []
    for e in entries:
        folder, stem = _match(e, store)
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


class MissingVideosError(ValueError):
    """More split entries lack a pack than ``max_missing`` allows; ``lists.json`` names them all."""


def write_lists(
    frames_root: Path,
    split_dir: Path,
    out_dir: Path,
    *,
    split: int = 1,
    fmt: str = "ucf101",
    val_videos: int = 0,
    seed: int = 0,
    max_missing: float = 1.0,
    test_fraction: float = 0.3,
) -> dict:
    """Write ``pretrain/train/val/test/classes.csv`` and ``lists.json`` to ``out_dir``; return the summary.

    pretrain holds every train-split video (self-supervised pretraining uses the train split, as IIC
    does); val holds ``val_videos`` random train videos and train the rest; test the test split. Split
    entries without a pack in the store are skipped and listed in ``lists.json``, since real datasets miss
    videos; when they are more than ``max_missing`` (a fraction of the entries; 0 asks for a complete
    dataset) the lists are not written and the stage stops.

    Raises:
        MissingVideosError: too many split entries have no pack (``lists.json`` is written, naming them).
        ValueError: unknown ``fmt``, bad split files (file and line named), a video listed twice, or a
            train/test list with no video in the store.
        FileNotFoundError: split files missing.
    """
    if val_videos < 0:
        raise ValueError(f"val_videos={val_videos}: must be >= 0")
    if not 0 <= max_missing <= 1:
        raise ValueError(f"max_missing={max_missing}: a fraction of the split entries, in [0, 1]")
    frames_root, out_dir = Path(frames_root), Path(out_dir)
    classes, entries = read_split(fmt, Path(split_dir), split, frames_root, test_fraction)
    seen: dict[tuple[str, str], SplitEntry] = {}
    for e in entries:
        key = (folder_key(e.folder), e.stem.lower())
        if key in seen:
            raise ValueError(
                f"{e.where}: video {e.folder + '/' if e.folder else ''}{e.stem} is listed twice in split {split} "
                f"(first at {seen[key].where}); fix the split files"
            )
        seen[key] = e
    store = index_store(frames_root)
    matched = [(e, _match(e, store)) for e in entries]
    present = [e for e, hit in matched if hit is not None]
    missing = [e for e, hit in matched if hit is None]
    listed = {hit for _, hit in matched if hit is not None}
    params = {"frames_root": str(frames_root), "split_dir": str(split_dir), "split": split, "fmt": fmt,
              "val_videos": val_videos, "seed": seed, "max_missing": max_missing}
    summary = {
        "n_classes": len(classes),
        "n_split_entries": len(entries),
        "missing": {
            "count": len(missing),
            "fraction": round(len(missing) / max(len(entries), 1), 6),
            "train": sum(e.subset == "train" for e in missing),
            "test": sum(e.subset == "test" for e in missing),
            "first": [f"{e.folder}/{e.stem}" for e in missing[:20]],
            "videos": [{"video": f"{e.folder}/{e.stem}", "subset": e.subset, "listed_at": e.where} for e in missing],
        },
        "store_not_in_split": sum(v not in listed for k, v in store.items() if k[0]),
        "params": params,
    }
    if missing:
        log.warning("%d of %d split entries have no pack under %s (e.g. %s/%s); skipped", len(missing), len(entries),
                    frames_root, missing[0].folder, missing[0].stem)
    if len(missing) > max_missing * len(entries):
        write_json(out_dir / "lists.json", {**summary, "counts": None})
        raise MissingVideosError(
            f"{len(missing)} of {len(entries)} videos named by the split files in {split_dir} "
            f"({100 * len(missing) / len(entries):.1f}%) have no pack under {frames_root}, more than "
            f"lists.max_missing={max_missing}; each is named in {out_dir / 'lists.json'}. Extract them, or raise "
            "lists.max_missing to accept an incomplete dataset")
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
    summary["counts"] = {name: len(rows) for name, rows in lists.items()}
    write_json(out_dir / "lists.json", summary)
    return summary
