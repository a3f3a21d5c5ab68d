"""The data gate's per-video limits: source frame rate, duration and file size, as extract records them in packs."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vidssl.config import ChecksParams, parse_params
from vidssl.data.checks import COLUMNS, DataValidationError, validate_lists
from vidssl.data.decode import error_lines, stream_info
from vidssl.data.extract import extract_videos
from vidssl.data.store import pack_meta, pack_source, write_pack

REAL = Path(os.environ.get("VIDSSL_REAL_DATA", Path(__file__).parent / "data" / "real"))
# every real clip, 25, 28 and 30 fps, 2.7 to 10.4 s: the default limits must pass them all
REAL_CLIPS = ["ucf101/videos/ApplyLipstick/v_ApplyLipstick_g21_c01.avi", "ucf101/videos/Archery/v_Archery_g07_c01.avi",
              "hmdb51/videos/golf/Golf_Tips_-_Hit_The_Driver_300+_Yards!!!_golf_f_nm_np1_fr_med_0.avi",
              "hmdb51/videos/punch/AdvancedBoxingTechniquesandExercises_punch_u_nm_np1_ba_med_23.avi",
              "hmdb51/videos/shoot_bow/6arrowswithin30seconds_shoot_bow_f_nm_np1_fr_med_3.avi",
              "kinetics400/videos/arm_wrestling/mmaction2_demo.mp4",
              "kinetics400/videos/flipping_pancake/flipping_a_pancake.mkv"]
pytestmark = pytest.mark.skipif(not (REAL / "manifest.csv").is_file(), reason=f"no sample clips in {REAL}")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The real clips and two MotionShapes videos (default synth fps and length), extracted at 16 px."""
    from vidssl.data.synth import generate

    root = tmp_path_factory.mktemp("source")
    src = root / "src"
    for clip in REAL_CLIPS:
        dst = src / Path(clip).parent.name / Path(clip).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / clip, dst)
    generate(root / "synth", n_classes=8, videos_per_class=4, size=32, frames=40, fps=25, workers=2)
    for video in sorted((root / "synth" / "videos").rglob("*.mp4"))[:8:4]:  # two classes, one video each
        (src / video.parent.name).mkdir(exist_ok=True)
        shutil.copy(video, src / video.parent.name / video.name)
    report = extract_videos(src, root / "frames", short_side=16, workers=2, progress=False)
    assert report["counts"]["quarantined"] == 0
    return root, report


def write_lists(root: Path, store: tuple[Path, dict], extra: list[tuple[str, Path]] = ()) -> Path:
    """Every video of the store (and ``extra`` (video_id, pack) rows of class 0) in train and pretrain."""
    frames, report = store[0] / "frames", store[1]
    classes = sorted({v["class"] for v in report["videos"]})
    rows = [{"video_id": v["video_id"], "frames_path": str(frames / v["pack"]), "n_frames": str(v["n_frames"]),
             "label": str(classes.index(v["class"])), "class_name": v["class"]} for v in report["videos"]]
    rows += [{"video_id": vid, "frames_path": str(pack), "n_frames": "40", "label": "0", "class_name": classes[0]}
             for vid, pack in extra]
    lists = root / "lists"
    lists.mkdir()
    for name in ("pretrain", "train", "val", "test"):
        with open(lists / f"{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(dict(r, split=name) for r in rows if name in ("pretrain", "train"))
    (lists / "classes.csv").write_text("label,class_name\n" + "".join(f"{i},{c}\n" for i, c in enumerate(classes)))
    return lists


def entry(report: dict, check: str) -> dict:
    [e] = [e for e in report["lists"]["train.csv"]["expectations"] if e["check"] == check]
    return e


def bad_pack(root: Path, **facts: float) -> Path:
    """A real pack whose recorded source facts are those of a good video, except ``facts``."""
    meta = {"video": "Odd/odd_clip.avi", "bytes": 300000, "fps": 25.0, "seconds": 3.0} | facts
    pack = root / "odd" / "odd_clip.zip"
    rng = np.random.default_rng(0)
    write_pack(pack, (rng.integers(0, 255, (8, 8, 3), dtype=np.uint8) for _ in range(40)), meta=meta)
    return pack


def test_extract_records_source_facts_that_survive_a_resumed_run(store: tuple[Path, dict], tmp_path: Path) -> None:
    root, report = store
    facts = {v["video"]: pack_meta(root / "frames" / v["pack"]) for v in report["videos"]}
    assert facts["Archery/v_Archery_g07_c01.avi"] == {"video": "Archery/v_Archery_g07_c01.avi", "bytes": 170064,
                                                     "fps": 25.0, "seconds": 3.64}
    assert facts["arm_wrestling/mmaction2_demo.mp4"]["fps"] == 28.0
    assert facts["flipping_pancake/flipping_a_pancake.mkv"]["seconds"] == 10.38
    synth = [f for v, f in facts.items() if v.endswith(".mp4") and v.split("/")[0][0].isupper()]
    assert len(synth) == 2 and all(f["fps"] == 25.0 and f["seconds"] == 1.6 for f in synth)  # 40 frames at 25
    for v in report["videos"]:
        assert facts[v["video"]]["bytes"] == (root / "src" / v["video"]).stat().st_size
    # a rerun skips every pack and keeps what they recorded; the digest still reads on the comment's first line
    again = extract_videos(root / "src", root / "frames", short_side=16, workers=2, progress=False,
                           report=tmp_path / "again.json")
    assert again["counts"]["skipped"] == len(report["videos"])
    assert {v["video"]: pack_meta(root / "frames" / v["pack"]) for v in again["videos"]} == facts
    assert pack_source(root / "frames" / report["videos"][0]["pack"]) == report["videos"][0]["source_sha256"]


def test_default_limits_pass_real_clips_and_motionshapes(store: tuple[Path, dict], tmp_path: Path) -> None:
    report = validate_lists(write_lists(tmp_path, store), min_frames=8, report_dir=tmp_path, short_videos="loop")
    assert report["success"], [e for e in report["lists"]["train.csv"]["expectations"] if not e["success"]]
    for check in ("source_fps_range", "source_seconds_range", "source_bytes_min"):
        assert entry(report, check)["success"] and entry(report, check)["n_offending"] == 0
    assert report["without_source_facts"]["lists"]["train.csv"]["count"] == 0
    assert report["source_limits"] == ChecksParams().model_dump()


# (check, facts of the crafted bad row, limits, the key the message must name, its value as shown)
CASES = {
    "fps_high": ("source_fps_range", {"fps": 1000.0}, {}, "checks.max_fps", "1000 fps"),
    "fps_low": ("source_fps_range", {"fps": 2.0}, {}, "checks.min_fps", "2 fps"),
    "too_short": ("source_seconds_range", {"seconds": 0.2}, {}, "checks.min_seconds", "0.2 s"),
    "too_long": ("source_seconds_range", {"seconds": 30.0}, {"max_seconds": 20}, "checks.max_seconds", "30 s"),
    "too_small": ("source_bytes_min", {"bytes": 600}, {}, "checks.min_bytes", "600 bytes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_limit_fails_the_crafted_row_only(store: tuple[Path, dict], tmp_path: Path, case: str) -> None:
    check, facts, limits, key, shown = CASES[case]
    lists = write_lists(tmp_path, store, [("odd_clip", bad_pack(tmp_path, **facts))])
    report = validate_lists(lists, min_frames=8, report_dir=tmp_path, short_videos="loop",
                            limits=ChecksParams(**limits))
    assert report["success"] is False
    e = entry(report, check)
    assert e["expectation"] == "expect_column_values_to_be_between" and e["success"] is False
    assert [o["video_id"] for o in e["offending"]] == ["odd_clip"]  # the real clips pass the same limits
    note = e["offending"][0]["note"]
    assert note.startswith(f"source Odd/odd_clip.avi: {shown};") and key in note, note
    assert key in e["description"]
    failed = [x["check"] for s in report["lists"].values() for x in s["expectations"] if not x["success"]]
    assert set(failed) == {check}
    md = (tmp_path / "validation.md").read_text()
    assert f"odd_clip (source_{check.split('_')[1]}=" in md and "Odd/odd_clip.avi" in md


def test_tighter_limits_name_the_real_clips_they_fail(store: tuple[Path, dict], tmp_path: Path) -> None:
    report = validate_lists(write_lists(tmp_path, store), min_frames=8, report_dir=tmp_path, short_videos="loop",
                            limits=ChecksParams(min_fps=26, max_seconds=10))
    fps = entry(report, "source_fps_range")["offending"]
    synth = sorted(v["video_id"] for v in store[1]["videos"] if v["video"].endswith(".mp4")
                   and v["video_id"].startswith("v_"))
    assert sorted(o["video_id"] for o in fps) == sorted(["v_ApplyLipstick_g21_c01", "v_Archery_g07_c01", *synth])
    assert all(o["value"] == 25.0 for o in fps)
    assert [o["video_id"] for o in entry(report, "source_seconds_range")["offending"]] == ["flipping_a_pancake"]
    assert entry(report, "source_bytes_min")["success"]


def test_packs_without_facts_are_counted_not_failed(store: tuple[Path, dict], tmp_path: Path) -> None:
    old = tmp_path / "old" / "old_clip.zip"  # as extract wrote packs before they recorded the source
    write_pack(old, (np.zeros((8, 8, 3), np.uint8) for _ in range(40)), source="0" * 64)
    assert pack_meta(old) is None and pack_source(old) == "0" * 64
    report = validate_lists(write_lists(tmp_path, store, [("old_clip", old)]), min_frames=8, report_dir=tmp_path,
                            short_videos="loop", limits=ChecksParams(min_bytes=10**9))
    assert report["without_source_facts"]["lists"]["train.csv"] == {"count": 1, "first": ["old_clip"]}
    assert "old_clip" not in [o["video_id"] for o in entry(report, "source_bytes_min")["offending"]]
    assert len(entry(report, "source_bytes_min")["offending"]) == len(store[1]["videos"])  # the rest are judged
    assert "Videos without recorded source facts (pretrain.csv 1, train.csv 1)" in (tmp_path / "validation.md").read_text()


def test_validate_stage_names_the_video_and_the_key(store: tuple[Path, dict], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from vidssl.pipeline.stages import run_validate

    monkeypatch.chdir(tmp_path)
    lists = write_lists(tmp_path, store, [("odd_clip", bad_pack(tmp_path, fps=1000.0))])
    cfg = parse_params({"clip": {"frames": 4, "stride": 2, "resize": 16, "crop": 16}, "checks": {"max_fps": 60}})
    with pytest.raises(DataValidationError) as err:
        run_validate(cfg, lists, tmp_path / "reports", store[0] / "frames")
    msg = str(err.value)
    # the pack lies outside the store too; the frame-rate line names the video, its file, value and key
    [line] = [x for x in msg.splitlines() if "source frame rate" in x and x.startswith("train.csv")]
    assert "odd_clip (source_fps=1000.0; source Odd/odd_clip.avi: 1000 fps;" in line and "checks.max_fps=60" in line
    assert "checks.min_fps / checks.max_fps" in msg  # how to fix
    assert "odd_clip (source_fps=1000.0" in (tmp_path / "reports" / "validation.md").read_text()


@pytest.mark.parametrize("line, fps", [
    ("Stream #0:0: Video: mpeg4 (XVID / 0x44495658), yuv420p, 320x240 [SAR 1:1 DAR 4:3], 220 kb/s, 25 fps, 25 tbr", 25.0),
    ("Stream #0:0(und): Video: h264 (avc1 / 0x31637661), yuv420p, 320x240, 29.97 fps, 29.97 tbr, 30k tbn", 29.97),
    ("Stream #0:0: Video: h264, yuv420p, 320x240, 1k fps, 1k tbr, 1k tbn", 1000.0),
    ("Stream #0:0: Video: vp9, yuv420p(tv), 320x240, SAR 1:1 DAR 4:3, 30 tbr, 1k tbn", 30.0),  # no fps: tbr
])
def test_stream_info_reads_ffmpegs_description(line: str, fps: float) -> None:
    log = (f"[info] Input #0, avi, from 'x.avi':\n[info]   Duration: 00:01:02.50, start: 0.0, bitrate: 1 kb/s\n"
           f"[info]   Stream #0:1: Video: png, rgb24, 600x600, 90k tbr (attached pic)\n[info]   {line}\n"
           "[info] Output #0, image2pipe, to 'pipe:':\n[info]   Stream #0:0: Video: mjpeg, 5 fps")
    assert stream_info(log) == {"fps": fps, "seconds": 62.5}
    assert stream_info("[info]   Duration: N/A, bitrate: N/A\n") == {"fps": None, "seconds": None}


def test_error_lines_keep_only_errors_as_loglevel_error_printed_them() -> None:
    log = ["[info] Input #0, mov", "[in#0 @ 0x5] [error] moov atom not found", "[mpeg4 @ 0x6] [warning] odd",
           "[fatal] Error opening input files: Invalid data", "untagged line"]
    assert error_lines(log) == ["[in#0 @ 0x5] moov atom not found", "Error opening input files: Invalid data",
                                "untagged line"]


def test_limits_that_exclude_everything_are_a_config_error() -> None:
    from vidssl.config import ConfigError

    with pytest.raises(ConfigError, match=r"checks\.min_fps: 200.0 is above checks\.max_fps \(120.0\)"):
        parse_params({"checks": {"min_fps": 200}})
    with pytest.raises(ConfigError, match=r"checks\.min_seconds: 5.0 is above checks\.max_seconds"):
        parse_params({"checks": {"min_seconds": 5, "max_seconds": 2}})
    assert parse_params({"checks": {"min_seconds": 5, "max_seconds": 0}}).checks.min_seconds == 5  # 0: no limit


def test_a_rerun_records_facts_in_old_packs_byte_identical_to_fresh_ones(store: tuple[Path, dict],
                                                                       tmp_path: Path) -> None:
    import zipfile

    root = store[0]
    src = tmp_path / "src" / "Archery"
    src.mkdir(parents=True)
    shutil.copy(root / "src" / "Archery" / "v_Archery_g07_c01.avi", src)
    shutil.copy(root / "src" / "arm_wrestling" / "mmaction2_demo.mp4", src)
    out = tmp_path / "frames"
    extract_videos(tmp_path / "src", out, short_side=16, workers=1, progress=False)
    packs = sorted(out.rglob("*.zip"))
    fresh = {p: p.read_bytes() for p in packs}
    for p in packs:  # as extract wrote them before: the digest alone in the comment
        with zipfile.ZipFile(p, "a") as zf:
            zf.comment = zf.comment.split(b"\n", 1)[0]
        assert pack_meta(p) is None and p.read_bytes() != fresh[p]
    again = extract_videos(tmp_path / "src", out, short_side=16, workers=1, progress=False)
    assert again["counts"]["skipped"] == 2
    assert {p: p.read_bytes() for p in packs} == fresh  # same facts, same bytes: the store's DVC hash holds
