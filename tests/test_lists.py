"""Split parsers on the real UCF101/HMDB51 files, and CSV lists built against a fake frame store."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from vidssl.data.lists import COLUMNS, read_hmdb51_split, read_ucf101_split, write_lists
from vidssl.data.store import write_pack

REAL = Path(__file__).parent / "data" / "real"  # split 1 files and a few clips (data/real/SOURCES.md)
UCF_SPLITS = REAL / "ucf101" / "ucfTrainTestlist"
HMDB_SPLITS = REAL / "hmdb51" / "testTrainMulti_7030_splits"
# splits 2 and 3 only where the full sample set is (kept out of the repository for size)
FULL = Path(os.environ.get("VIDSSL_REAL_DATA", "/work/shared/data/real"))
needs_real = pytest.mark.skipif(
    not UCF_SPLITS.is_dir() or not HMDB_SPLITS.is_dir(), reason="real split files absent"
)


def _splits(dataset_dir: str, split: int) -> Path:
    """The split folder holding split ``split``: the repository's copy for 1, the full sample set for 2-3."""
    here = {"ucf": UCF_SPLITS, "hmdb": HMDB_SPLITS}[dataset_dir]
    if split == 1:
        return here
    there = FULL / here.relative_to(REAL)
    if not there.is_dir():
        pytest.skip(f"split {split} files are only in the full sample set ({FULL})")
    return there
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
    split_dir = _splits("ucf", split)
    classes, entries = read_ucf101_split(split_dir, split)
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    assert sum(e.subset == "train" for e in entries) == n_train
    assert sum(e.subset == "test" for e in entries) == n_test
    assert {e.label for e in entries} == set(range(101))
    assert all(classes[e.label].lower() == e.folder.lower() and not e.stem.endswith(".avi") for e in entries)
    # The official files really are CRLF: the parser must not leave '\r' in names.
    raw = (split_dir / f"trainlist{split:02d}.txt").read_bytes()
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
    _, entries = read_ucf101_split(UCF_SPLITS, 1)
    train = [(e.folder, e.stem) for e in entries if e.subset == "train"][::500]
    _fake_store(tmp_path / "frames", train + [next((e.folder, e.stem) for e in entries if e.subset == "test")])

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
    classes, entries = read_hmdb51_split(_splits("hmdb", split), split)
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
        ("A/v_A_g08_c01.avi 1\r\nA/v_A_g09_c01.avi 3\r\n",
         r"trainlist01\.txt:2: label 3 does not match class 'A' \(label 1\) in .*classInd\.txt \(1\.\.2\)"),
        ("A/v_A_g08_c01.avi 1\r\nC/v_C_g08_c01.avi 1\r\n",
         r"trainlist01\.txt:2: class folder 'C' is not in .*classInd\.txt"),
    ],
)
def test_bad_split_lines_are_reported_with_file_and_line(tmp_path: Path, train: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        read_ucf101_split(_ucf_like(tmp_path, train), 1)


def test_a_test_list_naming_a_class_not_in_classind_names_file_and_line(tmp_path: Path) -> None:
    split_dir = _ucf_like(tmp_path, "A/v_A_g08_c01.avi 1\r\n", test="B/v_B_g01_c01.avi\r\nZ/v_Z_g01_c01.avi\r\n")
    with pytest.raises(ValueError, match=r"testlist01\.txt:2: class folder 'Z' is not in .*classInd\.txt"):
        write_lists(tmp_path / "frames", split_dir, tmp_path / "lists")


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


# ---------------------------------------------------------------- dataset adapters on real clips


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's real clips (UCF101 .avi, HMDB51 names with '+' and '!', Kinetics .mp4/.mkv at 25/30 fps)
    extracted at 32 px; Kinetics under a label spelled with a space and a youtube-id file name, and the UCF101
    Archery clip re-encoded as VP9 in a .webm (no real clip comes as one), which its split file still calls .avi."""
    import shutil
    import subprocess

    import imageio_ffmpeg

    from vidssl.data.extract import extract_videos

    root = tmp_path_factory.mktemp("real_store")
    for row in _manifest("ucf101") + _manifest("hmdb51") + _manifest("kinetics400"):
        dst = root / "src" / row["dataset"] / row["label"] / Path(row["path"]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / row["path"], dst)
    archery = root / "src/ucf101/Archery/v_Archery_g07_c01.avi"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(archery), "-an",
                    "-fps_mode", "passthrough", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
                    "-b:v", "300k", str(archery.with_suffix(".webm"))], check=True)
    archery.unlink()
    k400 = root / "src" / "kinetics400"
    (k400 / "arm_wrestling").rename(k400 / "arm wrestling")  # as some Kinetics downloads spell class folders
    (k400 / "flipping_pancake/flipping_a_pancake.mkv").rename(k400 / "flipping_pancake/pAnC4ke_000010_000020.mkv")
    for dataset in ("ucf101", "hmdb51", "kinetics400"):
        rep = extract_videos(root / "src" / dataset, root / "frames" / dataset, short_side=32, workers=2,
                             progress=False)
        assert rep["counts"]["quarantined"] == 0
    return root / "frames"


@needs_real
def test_ucf101_adapter_on_real_clips_reports_the_missing(real_store: Path, tmp_path: Path) -> None:
    from vidssl.data.lists import MissingVideosError

    with pytest.raises(MissingVideosError, match=r"13316 of 13320 videos .*lists.max_missing=0.05"):
        write_lists(real_store / "ucf101", UCF_SPLITS, tmp_path / "strict", fmt="ucf101", max_missing=0.05)
    report = json.loads((tmp_path / "strict" / "lists.json").read_text())
    assert report["missing"]["count"] == len(report["missing"]["videos"]) == 13316
    assert report["missing"]["videos"][0]["listed_at"].endswith("trainlist01.txt:1")
    assert not (tmp_path / "strict" / "train.csv").exists()
    summary = write_lists(real_store / "ucf101", UCF_SPLITS, tmp_path / "lists", fmt="ucf101", max_missing=1.0)
    assert summary["counts"] == {"pretrain": 2, "train": 2, "val": 0, "test": 2}
    train = _read_csv(tmp_path / "lists" / "train.csv")[0]  # rows sorted by label: ApplyLipstick, BaseballPitch
    assert train["video_id"] == "ApplyLipstick/v_ApplyLipstick_g21_c01" and train["label"] == "1"
    assert int(train["n_frames"]) == 85  # the manifest's frame count
    test = _read_csv(tmp_path / "lists" / "test.csv")[0]  # from the .webm; testlist01.txt names the .avi
    assert (test["video_id"], test["label"], int(test["n_frames"])) == ("Archery/v_Archery_g07_c01", "2", 91)


@needs_real
def test_shipped_params_skip_absent_videos_and_zero_asks_for_a_complete_dataset(
        real_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vidssl.config import load_params, with_overrides
    from vidssl.data.lists import MissingVideosError
    from vidssl.pipeline.stages import run_lists

    shipped = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    monkeypatch.chdir(tmp_path)  # outside any DVC workspace: the stage runner locks nothing
    cfg = with_overrides(shipped, {"data": {"dataset": "ucf101"}}, "ucf101")
    summary = run_lists(cfg, real_store / "ucf101", UCF_SPLITS, tmp_path / "lists")
    assert summary["missing"]["count"] == 13316 and summary["counts"] == {"pretrain": 2, "train": 2, "val": 0,
                                                                          "test": 2}
    complete = with_overrides(cfg, {"lists": {"max_missing": 0.0}}, "complete")
    with pytest.raises(MissingVideosError, match=r"13316 of 13320 videos .*lists.max_missing=0.0"):
        run_lists(complete, real_store / "ucf101", UCF_SPLITS, tmp_path / "complete")


@needs_real
def test_hmdb51_adapter_on_real_clips(real_store: Path, tmp_path: Path) -> None:
    summary = write_lists(real_store / "hmdb51", HMDB_SPLITS, tmp_path / "lists", fmt="hmdb51", max_missing=1.0)
    rows = _read_csv(tmp_path / "lists" / "pretrain.csv")
    assert summary["counts"]["pretrain"] == 3 and summary["counts"]["test"] == 1  # as the manifest says
    ids = {r["video_id"] for r in rows}
    assert "golf/Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0" in ids
    classes, _ = read_hmdb51_split(HMDB_SPLITS, 1)
    assert all(int(r["label"]) == classes.index(r["class_name"]) for r in rows)


@needs_real
def test_kinetics400_adapter_reads_the_official_csv(real_store: Path, tmp_path: Path) -> None:
    ann = tmp_path / "ann"
    ann.mkdir()
    head = "label,youtube_id,time_start,time_end,split\n"
    (ann / "train.csv").write_text(head + "arm wrestling,mmaction2_demo,0,10,train\nabseiling,gone0000000,5,15,train\n"
                                   "flipping pancake,zzz,1,11,train\n")
    (ann / "validate.csv").write_text(head + "flipping pancake,pAnC4ke,10,20,val\n")
    summary = write_lists(real_store / "kinetics400", ann, tmp_path / "lists", fmt="kinetics400", max_missing=0.5)
    assert summary["missing"]["count"] == 2 and summary["n_classes"] == 3
    [train] = _read_csv(tmp_path / "lists" / "train.csv")
    [test] = _read_csv(tmp_path / "lists" / "test.csv")
    assert (train["video_id"], train["class_name"]) == ("arm wrestling/mmaction2_demo", "arm wrestling")
    assert (test["video_id"], test["label"]) == ("flipping_pancake/pAnC4ke_000010_000020", "2")
    (ann / "validate.csv").write_text(head + "juggling fire,abc,0,10,val\n")
    with pytest.raises(ValueError, match=r"validate.csv:2: label 'juggling fire' is in no row of"):
        write_lists(real_store / "kinetics400", ann, tmp_path / "lists", fmt="kinetics400", max_missing=1.0)


@needs_real
def test_kinetics400_without_annotations_uses_class_folders(real_store: Path, tmp_path: Path) -> None:
    import hashlib

    # each video's draw is sha256(<class>/<video>) as a fraction of 2**64: a fraction between the two holds one out
    videos = ["arm wrestling/mmaction2_demo", "flipping_pancake/pAnC4ke_000010_000020"]
    draws = sorted(int.from_bytes(hashlib.sha256(v.encode()).digest()[:8], "big") / 2**64 for v in videos)
    held = next(v for v in videos if int.from_bytes(hashlib.sha256(v.encode()).digest()[:8], "big") / 2**64
                == draws[0])
    fraction = (draws[0] + draws[1]) / 2
    summary = write_lists(real_store / "kinetics400", tmp_path / "none", tmp_path / "lists", fmt="kinetics400",
                          test_fraction=fraction)
    assert summary["n_classes"] == 2 and summary["missing"]["count"] == 0
    assert [r["video_id"] for r in _read_csv(tmp_path / "lists" / "test.csv")] == [held]
    again = write_lists(real_store / "kinetics400", tmp_path / "none", tmp_path / "again", fmt="folders",
                        test_fraction=fraction)
    assert again["counts"] == summary["counts"] == {"pretrain": 1, "train": 1, "val": 0, "test": 1}


# 29.97 fps UCF101 videos, an HMDB51 name with '(' and ')' and an HMDB51 test video (tests/data/real/manifest.csv);
# manifest path -> (split 1 subset, frames in the manifest)
REAL_CLIPS = {
    "ucf101/videos/BaseballPitch/v_BaseballPitch_g24_c02.avi": ("train", 119),
    "ucf101/videos/VolleyballSpiking/v_VolleyballSpiking_g01_c01.avi": ("test", 93),
    "hmdb51/videos/climb/(HQ)_Rock_Climbing_-_Free_Solo_Speed_Climb_-_Dan_Osman_climb_f_cm_np1_le_med_2.avi":
        ("train", 242),
    "hmdb51/videos/punch/AdvancedBoxingTechniquesandExercises_punch_u_nm_np1_ba_med_23.avi": ("test", 172),
}


def test_real_29_97_fps_clips_and_parenthesised_names(tmp_path: Path) -> None:
    import shutil

    from vidssl.data.extract import extract_videos
    from vidssl.data.store import pack_meta

    for path in REAL_CLIPS:
        dataset, _, folder, name = Path(path).parts
        (tmp_path / "src" / dataset / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / path, tmp_path / "src" / dataset / folder / name)
    rows = {}
    for dataset, splits in (("ucf101", UCF_SPLITS), ("hmdb51", HMDB_SPLITS)):
        rep = extract_videos(tmp_path / "src" / dataset, tmp_path / "frames" / dataset, short_side=32, workers=2,
                             progress=False)
        assert rep["counts"] == {"extracted": 2, "skipped": 0, "quarantined": 0}
        write_lists(tmp_path / "frames" / dataset, splits, tmp_path / "lists" / dataset, fmt=dataset, max_missing=1.0)
        rows |= {r["video_id"]: r for name in ("pretrain", "test")
                 for r in _read_csv(tmp_path / "lists" / dataset / f"{name}.csv")}
    assert len(rows) == 4
    for path, (subset, n) in REAL_CLIPS.items():
        dataset, _, folder, name = Path(path).parts
        row = rows[f"{folder}/{Path(name).stem}"]
        assert (row["split"], int(row["n_frames"])) == ("pretrain" if subset == "train" else "test", n), path
        meta = pack_meta(row["frames_path"])
        assert meta["video"] == f"{folder}/{name}"
        assert meta["fps"] == (29.97 if dataset == "ucf101" else 30), (path, meta)


def test_folders_with_split_files_and_odd_names(tmp_path: Path) -> None:
    names = [("Climb Up", "(HQ)_Rock Climbing_+_fast!!"), ("Climb Up", "b"), ("dive", "c d"), ("dive", "e")]
    _fake_store(tmp_path / "frames", names)
    split = tmp_path / "splits"
    split.mkdir()
    (split / "train.txt").write_bytes(b"Climb Up/(HQ)_Rock Climbing_+_fast!!.avi\r\ndive/e.webm\r\n")
    (split / "test.txt").write_bytes(b"climb_up/b.mp4\r\ndive/c d.mkv\r\ndive/absent.mp4\r\n")
    summary = write_lists(tmp_path / "frames", split, tmp_path / "lists", fmt="folders", max_missing=0.25)
    assert summary["counts"] == {"pretrain": 2, "train": 2, "val": 0, "test": 2}
    assert summary["missing"]["videos"] == [{"video": "dive/absent", "subset": "test",
                                             "listed_at": f"{split / 'test.txt'}:3"}]
    rows = _read_csv(tmp_path / "lists" / "train.csv")
    assert [r["video_id"] for r in rows] == ["Climb Up/(HQ)_Rock Climbing_+_fast!!", "dive/e"]
    (split / "test.txt").write_bytes(b"Swim/x.mp4\r\n")
    with pytest.raises(ValueError, match=r"test.txt:1: class folder 'Swim' is not in the frame store"):
        write_lists(tmp_path / "frames", split, tmp_path / "lists", fmt="folders")


def test_diving48_json_adapter(tmp_path: Path) -> None:
    _fake_store(tmp_path / "frames", [("rgb", "-mmq0PT-u8k_00000"), ("rgb", "0h0wtBgHmVk_00012"),
                                      ("rgb", "zz_00001")])
    ann = tmp_path / "ann"
    ann.mkdir()
    vocab = [["Back", "15som", "05Twis", "FREE"], ["Back", "15som", "15Twis", "FREE"]]
    (ann / "Diving48_vocab.json").write_text(json.dumps(vocab))
    (ann / "Diving48_V2_train.json").write_text(json.dumps(
        [{"vid_name": "-mmq0PT-u8k_00000", "label": 1, "start_frame": 0, "end_frame": 40},
         {"vid_name": "zz_00001", "label": 0, "start_frame": 0, "end_frame": 40}]))
    (ann / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "0h0wtBgHmVk_00012", "label": 0}]))
    summary = write_lists(tmp_path / "frames", ann, tmp_path / "lists", fmt="diving48")
    assert summary["counts"]["test"] == 1 and summary["missing"]["count"] == 0
    classes = _read_csv(tmp_path / "lists" / "classes.csv")
    assert classes[1]["class_name"] == "Back 15som 15Twis FREE"
    rows = {r["video_id"]: r["label"] for r in _read_csv(tmp_path / "lists" / "pretrain.csv")}
    assert rows == {"rgb/zz_00001": "0", "rgb/-mmq0PT-u8k_00000": "1"}
    (ann / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "x", "label": 48}]))
    with pytest.raises(ValueError, match=r"Diving48_V2_test.json: item 0: label 48 outside 0..1"):
        write_lists(tmp_path / "frames", ann, tmp_path / "lists", fmt="diving48")


def test_duplicate_row_names_file_and_line(tmp_path: Path) -> None:
    split_dir = _ucf_like(tmp_path, "A/v_A_g02_c01.avi 1\r\nB/v_B_g01_c01.avi 2\r\nA/v_A_g02_c01.avi 1\r\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:3: video A/v_A_g02_c01 is listed twice .*first at "
                                         r".*trainlist01.txt:1"):
        write_lists(tmp_path / "frames", split_dir, tmp_path / "lists")
