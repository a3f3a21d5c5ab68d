"""Split parsers on the real UCF101/HMDB51 files, and CSV lists built against a fake frame store."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from vidssl.data.lists import COLUMNS, read_hmdb51_split, read_ucf101_split, write_lists
from vidssl.data.store import write_pack

REAL = Path("/work/shared/data/real")
UCF_SPLITS = REAL / "ucf101" / "ucfTrainTestlist"
HMDB_SPLITS = REAL / "hmdb51" / "testTrainMulti_7030_splits"
needs_real = pytest.mark.skipif(
    not UCF_SPLITS.is_dir() or not HMDB_SPLITS.is_dir(), reason="real split files absent"
)
# A test video whose file name spells the class differently from its folder (UCF101 quirk), and a train
# video stored with yet another casing: both must still match.
QUIRK_TEST = ("HandstandPushups", "v_HandStandPushups_g01_c01")
QUIRK_TRAIN_STORED = ("HandstandPushups", "v_HandstandPushups_g08_c01")


def _manifest(dataset: str) -> list[dict]:
    with open(REAL / "manifest.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["dataset"] == dataset]


def _fake_store(root: Path, videos: list[tuple[str, str]]) -> dict[str, int]:
    """Tiny packs (8x8 frames, a different count per video); returns video_id -> frame count."""
    counts = {}
    for i, (folder, stem) in enumerate(videos):
        counts[f"{folder}/{stem}"] = write_pack(
            root / folder / f"{stem}.zip", [np.full((8, 8, 3), i, np.uint8)] * (3 + i)
        )
    return counts


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@needs_real
@pytest.mark.parametrize("split, n_train, n_test", [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)])
def test_real_ucf101_split_sizes(split: int, n_train: int, n_test: int) -> None:
    classes, entries = read_ucf101_split(UCF_SPLITS, split)
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    assert sum(e.subset == "train" for e in entries) == n_train
    assert sum(e.subset == "test" for e in entries) == n_test
    assert {e.label for e in entries} == set(range(101))
    assert all(classes[e.label].lower() == e.folder.lower() and not e.stem.endswith(".avi") for e in entries)
    # The official files really are CRLF: the parser must not leave '\r' in names.
    raw = (UCF_SPLITS / f"trainlist{split:02d}.txt").read_bytes()
    assert raw.count(b"\r\n") == n_train == raw.count(b"\n")
    assert not any("\r" in e.stem or "\r" in e.folder for e in entries)


@needs_real
def test_handstand_pushups_quirk_maps_to_its_label() -> None:
    classes, entries = read_ucf101_split(UCF_SPLITS, 1)
    quirk = [e for e in entries if e.stem == QUIRK_TEST[1]]
    assert len(quirk) == 1 and quirk[0].folder == "HandstandPushups" and quirk[0].subset == "test"
    assert quirk[0].label == 36 == classes.index("HandstandPushups")  # classInd says "37 HandstandPushups"


@needs_real
def test_write_lists_against_a_fake_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = [(r["label"], Path(r["path"]).stem) for r in _manifest("ucf101")]
    extra = ("ApplyEyeMakeup", "v_ApplyEyeMakeup_g99_c01")  # in the store but in no split
    counts = _fake_store(tmp_path / "frames", [*real, QUIRK_TEST, QUIRK_TRAIN_STORED, extra])
    monkeypatch.chdir(tmp_path)  # a relative frames_root must give relative frames_path
    summary = write_lists(Path("frames"), UCF_SPLITS, Path("lists"), split=1)

    classes = [line.split(" ")[1] for line in (UCF_SPLITS / "classInd.txt").read_text().splitlines()]
    expect = {"train": {}, "test": {}}
    for r in _manifest("ucf101"):
        expect[r["split1"]][f"{r['label']}/{Path(r['path']).stem}"] = classes.index(r["label"])
    expect["test"]["/".join(QUIRK_TEST)] = expect["train"]["/".join(QUIRK_TRAIN_STORED)] = 36
    for name, want in (("pretrain", expect["train"]), ("train", expect["train"]), ("test", expect["test"])):
        assert (tmp_path / "lists" / f"{name}.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
        rows = _read_csv(tmp_path / "lists" / f"{name}.csv")
        assert {r["video_id"]: int(r["label"]) for r in rows} == want
        assert rows == sorted(rows, key=lambda r: (int(r["label"]), r["video_id"]))
        for r in rows:
            assert r["split"] == name and r["class_name"] == classes[int(r["label"])]
            assert r["frames_path"] == f"frames/{r['video_id']}.zip" and Path(r["frames_path"]).is_file()
            assert int(r["n_frames"]) == counts[r["video_id"]]
    assert _read_csv(tmp_path / "lists" / "val.csv") == []
    assert summary["counts"] == {
        "pretrain": len(expect["train"]),
        "train": len(expect["train"]),
        "val": 0,
        "test": len(expect["test"]),
    }
    n_present = len(expect["train"]) + len(expect["test"])
    assert summary["missing"]["count"] == 9537 + 3783 - n_present
    assert (
        summary["missing"]["train"] == 9537 - len(expect["train"]) and len(summary["missing"]["first"]) == 20
    )
    assert summary["store_not_in_split"] == 1
    assert json.loads((tmp_path / "lists" / "lists.json").read_text()) == summary
    class_rows = _read_csv(tmp_path / "lists" / "classes.csv")
    assert [(int(r["label"]), r["class_name"]) for r in class_rows] == list(enumerate(classes))


@needs_real
def test_val_is_seeded_and_disjoint_from_train(tmp_path: Path) -> None:
    _fake_store(tmp_path / "frames", [(r["label"], Path(r["path"]).stem) for r in _manifest("ucf101")])

    def lists(seed: int, name: str) -> dict[str, list[str]]:
        write_lists(tmp_path / "frames", UCF_SPLITS, tmp_path / name, val_videos=4, seed=seed)
        return {
            k: [r["video_id"] for r in _read_csv(tmp_path / name / f"{k}.csv")]
            for k in ("pretrain", "train", "val")
        }

    a, again = lists(0, "a"), lists(0, "b")
    assert a == again and len(a["val"]) == 4
    assert not set(a["val"]) & set(a["train"]) and sorted(a["val"] + a["train"]) == sorted(a["pretrain"])
    assert any(lists(seed, f"s{seed}")["val"] != a["val"] for seed in (1, 2, 3))
    with pytest.raises(ValueError, match="val_videos=99"):
        write_lists(tmp_path / "frames", UCF_SPLITS, tmp_path / "c", val_videos=99)


@needs_real
@pytest.mark.parametrize("split", [1, 2, 3])
def test_real_hmdb51_split_sizes(split: int) -> None:
    classes, entries = read_hmdb51_split(HMDB_SPLITS, split)
    assert len(classes) == 51 and classes == sorted(classes) and "class_list" not in " ".join(classes)
    assert (
        sum(e.subset == "train" for e in entries) == 3570 and sum(e.subset == "test" for e in entries) == 1530
    )
    assert {e.label for e in entries} == set(range(51)) and all(classes[e.label] == e.folder for e in entries)


@needs_real
def test_write_lists_hmdb51(tmp_path: Path) -> None:
    real = _manifest("hmdb51")
    _fake_store(tmp_path / "frames", [(r["label"], Path(r["path"]).stem) for r in real])
    write_lists(
        tmp_path / "frames", HMDB_SPLITS.parent, tmp_path / "lists", fmt="hmdb51"
    )  # parent dir works too
    classes, _ = read_hmdb51_split(HMDB_SPLITS, 1)
    got = {
        (r["video_id"], int(r["label"]), r["split"])
        for name in ("pretrain", "test")
        for r in _read_csv(tmp_path / "lists" / f"{name}.csv")
    }
    want = {
        (
            f"{r['label']}/{Path(r['path']).stem}",
            classes.index(r["label"]),
            "pretrain" if r["split1"] == "train" else "test",
        )
        for r in real
    }
    assert got == want


def _ucf_like(split_dir: Path, train: str, test: str = "A/v_A_g01_c01.avi\r\n") -> Path:
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / "classInd.txt").write_bytes(b"1 A\r\n2 B\r\n")
    (split_dir / "trainlist01.txt").write_text(train, newline="")
    (split_dir / "testlist01.txt").write_text(test, newline="")
    return split_dir


def test_missing_split_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"classInd\.txt.*trainlist02\.txt"):
        read_ucf101_split(tmp_path, 2)
    with pytest.raises(FileNotFoundError, match="_test_split1.txt"):
        read_hmdb51_split(tmp_path, 1)


@pytest.mark.parametrize(
    "train, match",
    [
        (
            "A/v_A_g08_c01.avi 1\r\nB/v_B_g08_c01.avi\r\n",
            r"trainlist01\.txt:2: malformed line 'B/v_B_g08_c01\.avi'",
        ),
        ("v_A_g08_c01.avi 1\r\n", r"trainlist01\.txt:1: malformed"),
        ("A/v_A_g08_c01.avi 3\r\n", r"label 3 does not match"),
        ("C/v_C_g08_c01.avi 1\r\n", r"class folder 'C' is not in"),
    ],
)
def test_bad_split_lines_are_reported_with_file_and_line(tmp_path: Path, train: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_ucf101_split(_ucf_like(tmp_path, train), 1)


def test_empty_store_says_to_run_extract(tmp_path: Path) -> None:
    split_dir = _ucf_like(tmp_path / "splits", "B/v_B_g08_c01.avi 2\r\n")
    with pytest.raises(ValueError, match=r"train list.*no video in the frame store.*run extract first"):
        write_lists(tmp_path / "nothing", split_dir, tmp_path / "lists")
    _fake_store(tmp_path / "frames", [("B", "v_B_g08_c01")])  # train present, test still missing
    with pytest.raises(ValueError, match=r"test list.*splits.*frames"):
        write_lists(tmp_path / "frames", split_dir, tmp_path / "lists")
    with pytest.raises(ValueError, match="fmt='kinetics'"):
        write_lists(tmp_path / "frames", split_dir, tmp_path / "lists", fmt="kinetics")


def test_duplicate_entry_is_refused(tmp_path: Path) -> None:
    split_dir = _ucf_like(tmp_path, "A/v_A_g01_c01.avi 1\r\n")  # also in the test list: a leak
    with pytest.raises(ValueError, match="A/v_A_g01_c01 is listed twice"):
        write_lists(tmp_path / "frames", split_dir, tmp_path / "lists")


def test_lists_from_motionshapes(tmp_path: Path) -> None:
    from vidssl.data.synth import generate

    summary = generate(tmp_path / "raw", n_classes=8, videos_per_class=4, size=32, frames=8)
    _fake_store(tmp_path / "frames", [tuple(r["path"][: -len(".mp4")].split("/")) for r in summary["videos"]])
    out = write_lists(tmp_path / "frames", tmp_path / "raw" / "splits", tmp_path / "lists", fmt="synthetic")
    assert (
        out["counts"] == {"pretrain": 16, "train": 16, "val": 0, "test": 16} and out["missing"]["count"] == 0
    )
    rows = _read_csv(tmp_path / "lists" / "pretrain.csv")
    assert all(r["video_id"].startswith(r["class_name"] + "/") for r in rows)
    assert sorted({int(r["label"]) for r in rows}) == list(range(8))
