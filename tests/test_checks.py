"""The data gate: a valid lists dir passes; each kind of bad row fails, named by video id in every report."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vidssl.data.checks import COLUMNS, DataValidationError, check_lists, validate_lists
from vidssl.data.store import write_pack

MIN_FRAMES = 16
CLASSES = ["walk", "run"]
# video id -> (frames in its pack, label); pretrain = train + val, test is disjoint.
# v_run_02 has exactly MIN_FRAMES frames: the bound is inclusive.
VIDEOS = {"v_walk_01": (20, 0), "v_walk_02": (18, 0), "v_run_01": (24, 1), "v_run_02": (16, 1),
          "v_walk_03": (20, 0), "v_run_03": (20, 1), "v_walk_04": (17, 0)}
SPLITS = {"train": ["v_walk_01", "v_walk_02", "v_run_01"], "val": ["v_run_02"],
          "test": ["v_walk_03", "v_run_03", "v_walk_04"]}
Rows = dict[str, list[dict]]


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real frame packs (8x8 frames), written once for the module, plus a short and a spare pack."""
    root = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    sizes = dict(VIDEOS, v_short=(9, 0), v_spare=(20, 0))
    paths = {}
    for vid, (n, _) in sizes.items():
        paths[vid] = root / f"{vid}.zip"
        write_pack(paths[vid], (rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(n)))
    return paths


def base_rows(packs: dict[str, Path]) -> Rows:
    def row(vid: str, split: str) -> dict:
        n, label = VIDEOS[vid]
        return {"video_id": vid, "frames_path": str(packs[vid]), "n_frames": str(n), "label": str(label),
                "class_name": CLASSES[label], "split": split}

    rows = {name: [row(v, name) for v in vids] for name, vids in SPLITS.items()}
    rows["pretrain"] = [row(v, "pretrain") for v in SPLITS["train"] + SPLITS["val"]]
    return rows


def write_lists(root: Path, rows: Rows, columns: tuple[str, ...] = COLUMNS) -> Path:
    lists = root / "lists"
    lists.mkdir()
    for name, table in rows.items():
        with open(lists / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(table)
    classes = "".join(f"{i},{c}\n" for i, c in enumerate(CLASSES))
    (lists / "classes.csv").write_text("label,class_name\n" + classes)
    return lists


def offending(report: dict, file: str, check: str) -> list[dict]:
    [entry] = [e for e in report["lists"][file]["expectations"] if e["check"] == check]
    assert entry["success"] is False
    return entry["offending"]


def test_valid_lists_pass_and_write_reports(tmp_path: Path, packs: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rows = base_rows(packs)
    rows["val"] = []  # a header-only list is fine (lists.val_videos: 0)
    lists = write_lists(tmp_path, rows)
    monkeypatch.chdir(tmp_path)  # GX must stay ephemeral: nothing but the reports may appear
    report = check_lists(lists, min_frames=MIN_FRAMES, report_dir=tmp_path / "reports")
    assert report["success"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lists", "reports"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["validation.json", "validation.md"]
    assert json.loads((tmp_path / "reports" / "validation.json").read_text()) == report
    assert set(report["lists"]) == {"classes.csv", "pretrain.csv", "train.csv", "val.csv", "test.csv"}
    assert report["lists"]["val.csv"]["rows"] == 0 and report["lists"]["test.csv"]["rows"] == 3
    checks = {e["check"] for e in report["lists"]["test.csv"]["expectations"]}
    assert {"pack_exists", "n_frames_min", "label_range", "class_name_match", "no_leak",
            "video_id_unique", "frames_path_unique", "split_is_list", "not_null:label"} <= checks
    md = (tmp_path / "reports" / "validation.md").read_text()
    assert md.startswith("# Data validation: PASSED") and "| test.csv | 3 |" in md


def _missing_pack(rows: Rows, packs: dict) -> None:
    rows["train"][1]["frames_path"] = str(Path(packs["v_walk_02"]).with_name("gone.zip"))


def _short(rows: Rows, packs: dict) -> None:
    rows["test"][0].update(video_id="v_short", frames_path=str(packs["v_short"]), n_frames="9")


def _label_range(rows: Rows, packs: dict) -> None:
    rows["train"][1]["label"] = "2"  # v_walk_01 still gives train a walk video


def _duplicate(rows: Rows, packs: dict) -> None:
    rows["test"].append(dict(rows["test"][1], frames_path=str(packs["v_spare"])))


def _leak(rows: Rows, packs: dict) -> None:
    rows["test"].append(dict(rows["train"][0], split="test"))


def _null(rows: Rows, packs: dict) -> None:
    rows["val"][0]["class_name"] = ""


def _class_name(rows: Rows, packs: dict) -> None:
    rows["pretrain"][0]["class_name"] = "run"


def _n_frames_vs_pack(rows: Rows, packs: dict) -> None:
    rows["train"][0]["n_frames"] = "40"


def _val_in_train(rows: Rows, packs: dict) -> None:
    rows["val"].append(dict(rows["train"][2], split="val"))


def _wrong_split(rows: Rows, packs: dict) -> None:
    rows["test"][2]["split"] = "train"


def _not_int(rows: Rows, packs: dict) -> None:
    rows["pretrain"][3]["n_frames"] = "16.0"  # numerically right, but not an integer literal


@pytest.mark.parametrize("mutate, file, check, vid, shown", [
    (_missing_pack, "train.csv", "pack_exists", "v_walk_02", "gone.zip; missing"),
    (_short, "test.csv", "n_frames_min", "v_short",
     "test.csv: 1 row with n_frames < 16 (min clip span): v_short (n_frames=9)"),
    (_label_range, "train.csv", "label_range", "v_walk_02",
     "with label outside [0, 2) (2 classes): v_walk_02 (label=2)"),
    (_duplicate, "test.csv", "video_id_unique", "v_run_03",
     "2 rows with a duplicate video_id: v_run_03 (line 3), v_run_03 (line 5)"),
    (_leak, "test.csv", "no_leak", "v_walk_01", "v_walk_01 (line 5; also in pretrain.csv, train.csv)"),
    (_null, "val.csv", "not_null:class_name", "v_run_02", "v_run_02 (class_name empty)"),
    (_class_name, "pretrain.csv", "class_name_match", "v_walk_01", "class_name=run; classes.csv says 'walk'"),
    (_n_frames_vs_pack, "train.csv", "n_frames_match_pack", "v_walk_01", "(n_frames=40; pack has 20 frames)"),
    (_val_in_train, "val.csv", "no_leak", "v_run_01", "v_run_01 (line 3; also in train.csv)"),
    (_wrong_split, "test.csv", "split_is_list", "v_walk_04",
     "1 row whose split is not 'test': v_walk_04 (split=train)"),
    (_not_int, "pretrain.csv", "n_frames_int", "v_run_02", "v_run_02 (n_frames=16.0)"),
])
def test_each_failure_names_the_row(tmp_path: Path, packs: dict, mutate: Callable, file: str, check: str,
                                    vid: str, shown: str) -> None:
    rows = base_rows(packs)
    mutate(rows, packs)
    lists, reports = write_lists(tmp_path, rows), tmp_path / "reports"
    with pytest.raises(DataValidationError) as err:  # check_lists = validate_lists + raise
        check_lists(lists, min_frames=MIN_FRAMES, report_dir=reports)
    assert vid in str(err.value) and shown in str(err.value) and "How to fix" in str(err.value)
    report = json.loads((reports / "validation.json").read_text())
    assert report["success"] is False and report["lists"][file]["success"] is False
    assert vid in {o["video_id"] for o in offending(report, file, check)}
    # only the broken list fails, with only the broken check (the others still ran and passed)
    failed = [(f, e["check"]) for f, sec in report["lists"].items() for e in sec["expectations"]
              if not e["success"]]
    assert failed == [(file, check)]
    md = (reports / "validation.md").read_text()
    assert md.startswith("# Data validation: FAILED") and f"{file}: " in md and vid in md and shown in md


def test_offending_rows_carry_video_column_value(tmp_path: Path, packs: dict) -> None:
    rows = base_rows(packs)
    rows["train"][0]["n_frames"] = "9"  # short and disagreeing with its 20-frame pack
    rows["train"][1]["video_id"] = ""  # a row without an id is named by its CSV line
    report = validate_lists(write_lists(tmp_path, rows), min_frames=MIN_FRAMES, report_dir=tmp_path)
    assert offending(report, "train.csv", "n_frames_min") == [
        {"video_id": "v_walk_01", "line": 2, "column": "n_frames", "value": "9"}]
    assert offending(report, "train.csv", "n_frames_match_pack")[0]["note"] == "pack has 20 frames"
    assert offending(report, "train.csv", "not_null:video_id") == [
        {"video_id": None, "line": 3, "column": "video_id", "value": None}]
    md = (tmp_path / "validation.md").read_text()
    assert "train.csv: 1 row with an empty video_id: line 3 (video_id empty)" in md


def test_missing_column_is_named_without_traceback(tmp_path: Path, packs: dict) -> None:
    columns = tuple(c for c in COLUMNS if c != "n_frames")
    lists = write_lists(tmp_path, base_rows(packs), columns=columns)
    report = validate_lists(lists, min_frames=MIN_FRAMES, report_dir=tmp_path)
    assert report["success"] is False
    for file in ("pretrain.csv", "train.csv", "val.csv", "test.csv"):
        entries = {e["check"]: e for e in report["lists"][file]["expectations"]}
        assert entries["columns_present"]["success"] is False
        assert not any("error" in e for e in entries.values())  # no expectation ran on the absent column
        assert entries["pack_exists"]["success"] is True  # the rest of the suite still ran
    missing = r"train\.csv: is missing required column\(s\) 'n_frames' \(header: video_id, frames_path, label"
    with pytest.raises(DataValidationError, match=missing):
        check_lists(lists, min_frames=MIN_FRAMES, report_dir=tmp_path)


def test_missing_list_file_and_bad_classes(tmp_path: Path, packs: dict) -> None:
    lists = write_lists(tmp_path, base_rows(packs))
    (lists / "test.csv").unlink()
    (lists / "classes.csv").write_text("label,class_name\n0,walk\n0,run\n")  # labels must be 0..n-1, unique
    report = validate_lists(lists, min_frames=MIN_FRAMES, report_dir=tmp_path)
    assert report["lists"]["test.csv"]["success"] is False
    assert offending(report, "classes.csv", "label_unique") == [
        {"video_id": None, "line": 2, "column": "label", "value": "0"},
        {"video_id": None, "line": 3, "column": "label", "value": "0"}]
    msg = (tmp_path / "validation.md").read_text()
    assert f"test.csv: is missing (expected at {lists / 'test.csv'})" in msg


def test_short_videos_are_counted_not_failed_under_a_policy(tmp_path: Path, packs: dict) -> None:
    rows = base_rows(packs)
    rows["test"][0].update(video_id="v_short", frames_path=str(packs["v_short"]), n_frames="9")
    report = check_lists(write_lists(tmp_path, rows), min_frames=MIN_FRAMES, report_dir=tmp_path,
                         short_videos="loop")
    assert report["success"] is True
    assert report["short_videos"]["policy"] == "loop"
    assert report["short_videos"]["lists"]["test.csv"] == {"count": 1, "rows": 3, "first": ["v_short"]}
    assert report["short_videos"]["lists"]["train.csv"]["count"] == 0
    md = (tmp_path / "validation.md").read_text()
    assert "looped from their first frame (clip.short_videos: loop): test.csv 1." in md


def test_drop_that_empties_a_list_fails(tmp_path: Path, packs: dict) -> None:
    rows = base_rows(packs)
    with pytest.raises(DataValidationError, match="test.csv: has no video left once its 3 short videos"):
        check_lists(write_lists(tmp_path, rows), min_frames=100, report_dir=tmp_path, short_videos="drop")


def test_frames_path_outside_the_store_fails(tmp_path: Path, packs: dict) -> None:
    rows = base_rows(packs)
    store = packs["v_walk_01"].parent
    outside = tmp_path / "elsewhere" / "v_walk_01.zip"
    outside.parent.mkdir()
    outside.write_bytes(packs["v_walk_01"].read_bytes())
    rows["train"][0]["frames_path"] = str(outside)
    rows["train"][1]["frames_path"] = str(store / ".." / store.name / "v_walk_02.zip")  # inside, spelled oddly
    report = validate_lists(write_lists(tmp_path, rows), min_frames=MIN_FRAMES, report_dir=tmp_path,
                            data_root=store)
    assert [o["video_id"] for o in offending(report, "train.csv", "frames_path_in_root")] == ["v_walk_01"]
    assert offending(report, "train.csv", "frames_path_in_root")[0]["note"] == f"outside {store.resolve()}"
    assert all(e["success"] for f, s in report["lists"].items() if f != "train.csv" for e in s["expectations"])


def test_every_preset_passes_validate_when_the_shortest_video_has_29_frames(tmp_path: Path) -> None:
    """UCF101's shortest videos have ~29 frames; the DualVar and BE presets span 61."""
    import yaml

    from vidssl.config import apply_preset, parse_params
    from vidssl.pipeline.stages import run_validate

    repo = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((repo / "params.yaml").read_text())
    presets = sorted(p.stem for p in (repo / "presets").glob("*.yaml"))
    assert len(presets) >= 4
    rng = np.random.default_rng(0)
    store = tmp_path / "frames"
    rows: Rows = {"pretrain": [], "train": [], "val": [], "test": []}
    for i, n in enumerate((29, 80, 120, 29, 95, 200)):
        vid, label, split = f"v_{CLASSES[i % 2]}_g0{i}_c01", i % 2, "test" if i >= 4 else "train"
        path = store / CLASSES[label] / f"{vid}.zip"
        write_pack(path, (rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(n)))
        row = {"video_id": vid, "frames_path": str(path), "n_frames": str(n), "label": str(label),
               "class_name": CLASSES[label]}
        rows[split].append(dict(row, split=split))
        if split == "train":
            rows["pretrain"].append(dict(row, split="pretrain"))
    lists = write_lists(tmp_path, rows)
    seen: dict[tuple, dict] = {}
    for name in presets:
        cfg = parse_params(apply_preset(dict(base, preset=name), repo / "presets"), name)
        key = (cfg.clip.span, cfg.clip.short_videos)
        if key not in seen:  # presets sharing a span and policy give the same report
            seen[key] = run_validate(cfg, lists, tmp_path / "reports", store)
        report = seen[key]
        assert report["success"], name
        assert report["short_videos"]["lists"]["train.csv"]["count"] == (2 if cfg.clip.span > 29 else 0), name
    assert max(span for span, _ in seen) == 61


def test_a_class_without_train_videos_fails_and_counts_are_reported(tmp_path: Path, packs: dict) -> None:
    rows = base_rows(packs)
    rows["train"] = [r for r in rows["train"] if r["label"] == "0"]  # no "run" video left to fine-tune on
    report = validate_lists(write_lists(tmp_path, rows), min_frames=MIN_FRAMES, report_dir=tmp_path)
    [entry] = [e for e in report["lists"]["train.csv"]["expectations"] if e["check"] == "every_class_present"]
    assert entry["success"] is False and entry["description"] == "has no video of label(s) 1"
    assert report["class_counts"]["train.csv"] == {"walk": 2}
    assert report["class_counts"]["test.csv"] == {"run": 1, "walk": 2}
    assert "train.csv: has no video of label(s) 1" in (tmp_path / "validation.md").read_text()


def test_a_class_with_no_video_anywhere_is_counted_not_failed(tmp_path: Path, packs: dict) -> None:
    """A partial download: classes.csv (from the split files) names a class no list holds; the gate passes and
    says so. A class the test list holds but train does not still fails (fine-tuning never sees it)."""
    three = "label,class_name\n0,walk\n1,run\n2,swim\n"
    lists = write_lists(tmp_path, base_rows(packs))
    (lists / "classes.csv").write_text(three)
    report = validate_lists(lists, min_frames=MIN_FRAMES, report_dir=tmp_path)
    assert report["success"] is True and report["n_classes"] == 3
    assert report["classes_without_videos"] == {"count": 1, "first": ["swim"]}
    assert "Classes without a video in any list (1; not checked" in (tmp_path / "validation.md").read_text()
    rows = base_rows(packs)
    rows["test"][0].update(label="2", class_name="swim")
    (tmp_path / "b").mkdir()
    lists = write_lists(tmp_path / "b", rows)
    (lists / "classes.csv").write_text(three)
    report = validate_lists(lists, min_frames=MIN_FRAMES, report_dir=tmp_path / "b")
    assert report["success"] is False and report["classes_without_videos"]["count"] == 0
    [entry] = [e for e in report["lists"]["train.csv"]["expectations"] if e["check"] == "every_class_present"]
    assert entry["success"] is False and entry["description"] == "has no video of label(s) 2"
