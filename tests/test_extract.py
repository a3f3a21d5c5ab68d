"""Tests for vidssl.data.extract: real clips, synthetic clips with exact frame counts, and broken files."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import simplejpeg

from vidssl.data.decode import DecodeError, ffmpeg_args, quality_to_qscale, split_jpegs
from vidssl.data.extract import extract_videos
from vidssl.data.store import FramePack, count_frames, pack_source, write_pack

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
REAL = Path(os.environ.get("VIDSSL_REAL_DATA", Path(__file__).parent / "data" / "real"))
needs_real = pytest.mark.skipif(not (REAL / "manifest.csv").is_file(), reason=f"no sample clips in {REAL}")

# (manifest path, copied-to name in the tmp layout)
REAL_CLIPS = {
    "ucf101/videos/ApplyLipstick/v_ApplyLipstick_g21_c01.avi": "ApplyLipstick/v_ApplyLipstick_g21_c01.avi",
    "ucf101/videos/Archery/v_Archery_g07_c01.avi": "Archery/v_Archery_g07_c01.avi",
    "kinetics400/videos/arm_wrestling/mmaction2_demo.mp4": "arm_wrestling/mmaction2_demo.mp4",
}
BROKEN = {"Broken/zero.avi", "Broken/text.mp4", "Broken/truncated.mp4"}


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-y", *args], check=True)


def make_clip(path: Path, *, size: str = "64x48", rate: int = 10, seconds: float = 2,
              vf: str = "null") -> Path:
    """A tiny H.264 clip with exactly rate*seconds frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-t", str(seconds), "-vf", vf,
           "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path))
    return path


def frame_hw(pack: Path) -> tuple[int, int]:
    with FramePack(pack) as fp:
        return fp.read([0]).shape[1:3]


def manifest_frames() -> dict[str, int]:
    with open(REAL / "manifest.csv", newline="") as f:
        return {row["path"]: int(row["frames"]) for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """Three real clips plus three undecodable files, extracted once with two workers."""
    if not (REAL / "manifest.csv").is_file():
        pytest.skip(f"no real sample clips in {REAL}")
    root = tmp_path_factory.mktemp("real")
    src, out = root / "src", root / "out"
    for real, name in REAL_CLIPS.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / real, src / name)
    (src / "Broken").mkdir()
    (src / "Broken/zero.avi").write_bytes(b"")
    (src / "Broken/text.mp4").write_text("this is not a video\n")
    # The moov atom of this mp4 is at its end, so the first 300 kB hold no index: ffmpeg cannot open it.
    shutil.copy(REAL / "broken/truncated_abseiling_k400.mp4", src / "Broken/truncated.mp4")
    (src / "Broken/notes.txt").write_text("not a video extension: ignored\n")
    return src, out, extract_videos(src, out, short_side=128, workers=2, progress=False)


@needs_real
def test_real_clips_frame_counts_and_size(real_run: tuple[Path, Path, dict]) -> None:
    _, out, rep = real_run
    expected = manifest_frames()
    by_video = {v["video"]: v for v in rep["videos"]}
    for real, name in REAL_CLIPS.items():
        rec = by_video[name]
        assert rec["status"] == "extracted" and rec["error"] is None
        assert rec["n_frames"] == expected[real] == count_frames(out / rec["pack"])
    assert frame_hw(out / "Archery/v_Archery_g07_c01.zip") == (128, 170)  # 320x240 -> even long side
    # 340x256 stored with SAR 64:51 is displayed at 5:3, so 128 * 5/3 = 213.3 -> 214, not 170.
    assert frame_hw(out / "arm_wrestling/mmaction2_demo.zip") == (128, 214)


@needs_real
def test_real_frames_match_reference_decode(real_run: tuple[Path, Path, dict]) -> None:
    src, out, _ = real_run
    cmd = [FFMPEG, "-nostdin", "-v", "error", "-i", str(src / "Archery/v_Archery_g07_c01.avi"),
           "-vf", "scale=170:128", "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(-1, 128, 170, 3).astype(np.float64)
    with FramePack(out / "Archery/v_Archery_g07_c01.zip") as fp:
        got = fp.read(range(len(fp))).astype(np.float64)
    assert got.shape == ref.shape == (91, 128, 170, 3)
    # JPEG q90 costs ~40 dB; a frame off by one in time (e.g. ffmpeg's default cfr duplicating frame 0,
    # which this clip triggers) drops it to ~30 dB, and a colour-range mistake far lower.
    psnr = 10 * np.log10(255**2 / np.mean((got - ref) ** 2, axis=(1, 2, 3)))
    assert psnr.min() > 37, f"frames differ from a direct ffmpeg decode (min PSNR {psnr.min():.1f} dB)"


@needs_real
def test_bad_files_quarantined_with_error(real_run: tuple[Path, Path, dict]) -> None:
    _, out, rep = real_run
    assert rep["counts"] == {"extracted": 3, "skipped": 0, "quarantined": 3}
    for rec in rep["videos"]:
        if rec["video"] in BROKEN:
            assert rec["status"] == "quarantined" and rec["pack"] is None and rec["n_frames"] == 0
            if rec["video"] == "Broken/zero.avi":  # told apart before ffmpeg runs
                assert rec["error"] == "empty file (0 bytes)"
            else:
                assert "ffmpeg exited with code" in rec["error"] and rec["video"].split("/")[1] in rec["error"]
                assert "Invalid data" in rec["error"] or "moov atom" in rec["error"]  # ffmpeg's own stderr is kept
            assert not (out / "Broken" / (rec["video_id"] + ".zip")).exists()


@needs_real
def test_report_lists_every_input_sorted(real_run: tuple[Path, Path, dict]) -> None:
    src, out, rep = real_run
    assert json.loads((out / "extract.json").read_text()) == rep
    assert [v["video"] for v in rep["videos"]] == sorted(set(REAL_CLIPS.values()) | BROKEN)
    assert rep["params"] == {"short_side": 128, "fps": 0.0, "quality": 90, "workers": 2,
                             "encoding": f"mjpeg-bitexact ffmpeg {imageio_ffmpeg.get_ffmpeg_version()}"}
    assert rep["src"] == str(src) and all(v["seconds"] >= 0 for v in rep["videos"])


def test_quarantine_logs_a_warning_naming_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_clip(tmp_path / "src/a/good.mp4")
    (tmp_path / "src/a/bad.webm").write_bytes(b"\x00" * 100)
    with caplog.at_level(logging.WARNING, logger="vidssl.data.extract"):
        rep = extract_videos(tmp_path / "src", tmp_path / "out", progress=False)
    assert rep["counts"] == {"extracted": 1, "skipped": 0, "quarantined": 1}
    line = next(r.message for r in caplog.records if "bad.webm" in r.message)
    # The one log line says why (ffmpeg's own last error line), not just an exit code and a command.
    assert line.startswith("quarantined") and "Invalid data found when processing input" in line
    assert "command:" not in line
    error = rep["videos"][0]["error"]  # the report keeps the full story: reason, command, stderr
    assert error.splitlines()[0] == line.split(": ", 1)[1]
    assert "\ncommand: " in error and "bad.webm" in error
    summary = caplog.records[-1].message
    assert "1 video(s) quarantined" in summary and str(tmp_path / "out" / "extract.json") in summary


@needs_real
def test_truncated_avi_keeps_decodable_frames_with_warnings(tmp_path: Path) -> None:
    clip = REAL / "ucf101/videos/Archery/v_Archery_g07_c01.avi"
    (tmp_path / "src/a").mkdir(parents=True)
    (tmp_path / "src/a/cut.avi").write_bytes(clip.read_bytes()[:150_000])
    rec = extract_videos(tmp_path / "src", tmp_path / "out", progress=False)["videos"][0]
    full = manifest_frames()[str(clip.relative_to(REAL))]
    assert rec["status"] == "extracted" and 0 < rec["n_frames"] < full
    assert rec["warnings"], "ffmpeg's decode errors for the damaged part should be reported"


def test_resume_skips_done_and_redoes_missing_or_corrupt(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("a/one.mp4", "a/two.mp4", "b/three.mp4"):
        make_clip(src / name, seconds=1)
    first = extract_videos(src, out, short_side=32, progress=False)
    assert first["counts"] == {"extracted": 3, "skipped": 0, "quarantined": 0}
    packs = {v["video"]: out / v["pack"] for v in first["videos"]}
    mtimes = {k: p.stat().st_mtime_ns for k, p in packs.items()}

    again = extract_videos(src, out, short_side=32, progress=False)
    assert [v["status"] for v in again["videos"]] == ["skipped"] * 3
    assert [v["n_frames"] for v in again["videos"]] == [10, 10, 10]
    assert {k: p.stat().st_mtime_ns for k, p in packs.items()} == mtimes

    packs["a/one.mp4"].unlink()
    packs["a/two.mp4"].write_bytes(b"PK\x03\x04 half a zip from a crash")  # corrupt pack
    stray = out / "b" / ".three.zip.x1y2.tmp"  # what atomic_path leaves when a run is killed
    stray.write_bytes(b"partial")
    third = extract_videos(src, out, short_side=32, progress=False)
    status = {v["video"]: v["status"] for v in third["videos"]}
    assert status == {"a/one.mp4": "extracted", "a/two.mp4": "extracted", "b/three.mp4": "skipped"}
    assert count_frames(packs["a/two.mp4"]) == 10 and not stray.exists()
    assert packs["b/three.mp4"].stat().st_mtime_ns == mtimes["b/three.mp4"]


def test_a_replaced_video_is_extracted_again_and_a_removed_one_loses_its_pack(tmp_path: Path) -> None:
    """Resume trusts a pack only for the bytes it came from: a re-rendered dataset (new videos, same names, as
    when data/raw changes under DVC) must not keep the old frames, and a video gone from the source leaves
    no pack for the lists stage to pick up."""
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("a/one.mp4", "a/two.mp4", "b/three.mp4"):
        make_clip(src / name, seconds=1)
    first = extract_videos(src, out, short_side=32, progress=False)
    assert {v["video"]: v["source_sha256"] for v in first["videos"]} == {
        f"{c}/{n}": hashlib.sha256((src / c / n).read_bytes()).hexdigest()
        for c, n in (("a", "one.mp4"), ("a", "two.mp4"), ("b", "three.mp4"))}
    old_two = (out / "a/two.zip").read_bytes()

    make_clip(src / "a/two.mp4", seconds=1, vf="negate")  # same name and frame count, other pictures
    (src / "b/three.mp4").unlink()
    second = extract_videos(src, out, short_side=32, progress=False)
    assert {v["video"]: v["status"] for v in second["videos"]} == {"a/one.mp4": "skipped", "a/two.mp4": "extracted"}
    assert (out / "a/two.zip").read_bytes() != old_two
    fresh = extract_videos(src, tmp_path / "fresh", short_side=32, progress=False)
    assert (out / "a/two.zip").read_bytes() == (tmp_path / "fresh/a/two.zip").read_bytes()
    assert not (out / "b/three.zip").exists() and fresh["counts"]["extracted"] == 2

    # a replacement that no longer decodes is quarantined, and the frames of the old version go with it
    (src / "a/two.mp4").write_bytes(b"not a video any more")
    third = extract_videos(src, out, short_side=32, progress=False)
    assert {v["video"]: v["status"] for v in third["videos"]} == {"a/one.mp4": "skipped", "a/two.mp4": "quarantined"}
    assert not (out / "a/two.zip").exists()


def test_packs_without_a_source_digest_are_extracted_again(tmp_path: Path) -> None:
    """Stores written before packs carried their source's digest cannot prove which bytes they hold."""
    make_clip(tmp_path / "src/a/one.mp4", seconds=1)
    write_pack(tmp_path / "out/a/one.zip", [np.zeros((8, 8, 3), np.uint8)])
    assert pack_source(tmp_path / "out/a/one.zip") is None
    rep = extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, progress=False)
    assert rep["counts"]["extracted"] == 1 and count_frames(tmp_path / "out/a/one.zip") == 10
    assert pack_source(tmp_path / "out/a/one.zip") == rep["videos"][0]["source_sha256"]


def test_fps_resampling_and_native_size(tmp_path: Path) -> None:
    make_clip(tmp_path / "src/a/clip.mp4", rate=10, seconds=2)  # 20 frames, 64x48
    rep = extract_videos(tmp_path / "src", tmp_path / "o5", fps=5, short_side=24, progress=False)
    assert rep["videos"][0]["n_frames"] == 10
    assert frame_hw(tmp_path / "o5/a/clip.zip") == (24, 32)
    rep = extract_videos(tmp_path / "src", tmp_path / "o0", short_side=0, progress=False)
    assert rep["videos"][0]["n_frames"] == 20
    assert frame_hw(tmp_path / "o0/a/clip.zip") == (48, 64)


@needs_real
def test_fps_on_real_clip_is_proportional(tmp_path: Path) -> None:
    (tmp_path / "src/Archery").mkdir(parents=True)
    shutil.copy(REAL / "ucf101/videos/Archery/v_Archery_g07_c01.avi", tmp_path / "src/Archery/v.avi")
    rep = extract_videos(tmp_path / "src", tmp_path / "out", fps=5, short_side=0, progress=False)
    n = rep["videos"][0]["n_frames"]
    assert abs(n - 91 * 5 / 25) <= 1  # 91 frames at 25 fps
    assert frame_hw(tmp_path / "out/Archery/v.zip") == (240, 320)


def test_rotation_and_non_square_pixels(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "t.mp4")
    (tmp_path / "src/a").mkdir(parents=True)
    ffmpeg("-display_rotation", "90", "-i", str(clip), "-c", "copy", str(tmp_path / "src/a/rot.mp4"))
    make_clip(tmp_path / "src/a/sar.mp4", vf="setsar=2")  # 64x48 stored, displayed 128x48
    extract_videos(tmp_path / "src", tmp_path / "out", short_side=24, progress=False)
    assert frame_hw(tmp_path / "out/a/rot.zip") == (32, 24)  # portrait after rotation
    assert frame_hw(tmp_path / "out/a/sar.zip") == (24, 64)  # display aspect 8:3 kept


def test_jpeg_folder_import_copies_bytes(tmp_path: Path) -> None:
    frames = [np.full((20, 30, 3), 40 * i, np.uint8) for i in range(4)]
    jpegs = [simplejpeg.encode_jpeg(f, quality=80) for f in frames]
    folder = tmp_path / "src/cls/vid01"
    folder.mkdir(parents=True)
    for i, j in enumerate(jpegs):
        (folder / f"img_{i:05d}.jpg").write_bytes(j)
    rep = extract_videos(tmp_path / "src", tmp_path / "out", progress=False)
    assert rep["videos"] == [dict(rep["videos"][0], video="cls/vid01", video_id="vid01", pack="cls/vid01.zip",
                                  status="extracted", n_frames=4)]
    with zipfile.ZipFile(tmp_path / "out/cls/vid01.zip") as zf:
        assert [zf.read(n) for n in sorted(zf.namelist())] == jpegs  # not re-encoded
    assert extract_videos(tmp_path / "src", tmp_path / "out", progress=False)["counts"]["skipped"] == 1


def test_duplicate_video_id_is_quarantined(tmp_path: Path) -> None:
    make_clip(tmp_path / "src/a/v.mp4", seconds=1)
    make_clip(tmp_path / "src/a/v.mkv", seconds=1)
    rep = extract_videos(tmp_path / "src", tmp_path / "out", progress=False)
    status = {v["video"]: (v["status"], v["error"]) for v in rep["videos"]}
    assert status["a/v.mkv"][0] == "extracted"
    assert status["a/v.mp4"][0] == "quarantined" and "duplicate video id" in status["a/v.mp4"][1]


def test_changed_params_refuse_to_mix_packs(tmp_path: Path) -> None:
    make_clip(tmp_path / "src/a/v.mp4", seconds=1)
    extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, progress=False)
    with pytest.raises(ValueError, match="short_side"):
        extract_videos(tmp_path / "src", tmp_path / "out", short_side=16, progress=False)
    # packs from another ffmpeg, or from before frames were encoded bit-exactly (no "encoding"), are not mixed in
    report = tmp_path / "out/extract.json"
    old = json.loads(report.read_text())
    for made_by in ["mjpeg-bitexact ffmpeg 7.0.2", None]:
        old["params"]["encoding"] = made_by
        report.write_text(json.dumps({**old, "params": {k: v for k, v in old["params"].items() if v is not None}}))
        with pytest.raises(ValueError, match="encoding.*another ffmpeg or an older vidssl"):
            extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, progress=False)
    pack = tmp_path / "out/a/v.zip"
    pack.write_bytes(b"made by an older vidssl")
    rep = extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, progress=False, reset_on_change=True)
    assert rep["counts"]["extracted"] == 1 and count_frames(pack) == 10  # the old pack was redone


def test_missing_or_empty_src_names_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope.*<class>/<video>"):
        extract_videos(tmp_path / "nope", tmp_path / "out", progress=False)
    (tmp_path / "src/cls").mkdir(parents=True)
    (tmp_path / "src/cls/readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no videos found in .*src"):
        extract_videos(tmp_path / "src", tmp_path / "out", progress=False)


@pytest.mark.parametrize("kwargs, name", [
    ({"short_side": -2}, "short_side"), ({"short_side": 127}, "short_side"), ({"fps": -1.0}, "fps"),
    ({"workers": 0}, "workers"), ({"quality": 0}, "quality"),
])
def test_bad_arguments_name_the_argument(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        extract_videos(tmp_path, tmp_path / "out", progress=False, **kwargs)


def _jpeg(value: int, comment: bytes = b"") -> bytes:
    data = simplejpeg.encode_jpeg(np.full((8, 8, 3), value, np.uint8), quality=90)
    if comment:  # a COM segment right after SOI, holding bytes that look like an EOI marker
        data = data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]
    return data


@pytest.mark.parametrize("chunk", [1, 7, 1 << 16])
def test_split_jpegs_round_trips_any_chunking(chunk: int) -> None:
    images = [_jpeg(10), _jpeg(200, comment=b"\xff\xd9 not the end"), _jpeg(90)]
    stream = b"".join(images)
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    assert list(split_jpegs(chunks)) == images


def test_split_jpegs_rejects_garbage() -> None:
    with pytest.raises(DecodeError, match="not JPEG"):
        list(split_jpegs([b"RIFF...."]))
    with pytest.raises(DecodeError, match="not a complete JPEG"):
        list(split_jpegs([_jpeg(5) + _jpeg(6)[:-40]]))


@pytest.mark.parametrize("quality, qscale", [(95, 1.0), (90, 2.0), (85, 3.0), (75, 5.0), (50, 10.0),
                                             (25, 20.0), (100, 1.0), (1, 31.0)])
def test_quality_maps_to_libjpeg_equivalent_qscale(quality: int, qscale: float) -> None:
    assert quality_to_qscale(quality) == pytest.approx(qscale)


def test_same_videos_give_a_byte_identical_store(tmp_path: Path) -> None:
    """The DVC hash of data/frames must not change when identical frames are extracted again."""
    make_clip(tmp_path / "src/a/one.mp4")
    make_clip(tmp_path / "src/b/two.mp4", size="32x32")
    stores = []
    out = tmp_path / "out"
    for timestamp in [(2001, 2, 3, 4, 5, 6), (2030, 7, 8, 9, 10, 12)]:
        shutil.rmtree(out, ignore_errors=True)
        # a different wall clock per run: a pack must not record when it was written
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("time.localtime", lambda *_a, ts=timestamp: (*ts, 0, 1, -1))
            rep = extract_videos(tmp_path / "src", out, short_side=0, progress=False, timings=False)
        assert rep["counts"]["extracted"] == 2 and all("seconds" in v for v in rep["videos"])
        stores.append({p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert sorted(stores[0]) == ["a/one.zip", "b/two.zip", "extract.json"]
    assert stores[0] == stores[1]
    assert "seconds" not in stores[0]["extract.json"].decode()
    # Resumed (every pack reused): this run's report says so, the store's manifest stays the same bytes.
    rep = extract_videos(tmp_path / "src", out, short_side=0, progress=False, timings=False)
    assert rep["counts"] == {"extracted": 0, "skipped": 2, "quarantined": 0}
    assert (out / "extract.json").read_bytes() == stores[0]["extract.json"]


@pytest.mark.parametrize("short_side", [32, 0])
def test_frames_do_not_depend_on_the_cpus_simd(tmp_path: Path, short_side: int) -> None:
    """data/frames must hash the same on every machine: the same command with SIMD off gives the same bytes.

    ffmpeg's scaler and MJPEG encoder pick SIMD code by CPU and their default paths round differently from C
    (a fresh machine rewrote dvc.lock's data/frames hash); `-cpuflags 0` stands in for a CPU without them.
    """
    clips = {make_clip(tmp_path / "clip.mp4", size="64x48", vf="hue=s=3"): 20}  # odd scale, saturated colour
    if (REAL / "manifest.csv").is_file():
        clips[REAL / "ucf101/videos/Archery/v_Archery_g07_c01.avi"] = 91  # MPEG-4 part 2: its IDCT has SIMD too

    def both(args: list[str]) -> tuple[bytes, bytes]:
        return tuple(subprocess.run([args[0], *extra, *args[1:]], capture_output=True, check=True).stdout
                     for extra in ([], ["-cpuflags", "0"]))

    for clip, n_frames in clips.items():
        simd, plain = both(ffmpeg_args(clip, short_side=short_side, fps=0, quality=90))
        assert len(list(split_jpegs([simd]))) == n_frames
        assert simd == plain, f"{clip.name}: frames differ with SIMD off (short_side {short_side})"
        assert b"Lavc" not in simd  # no encoder version string in the JPEGs
    # the control: ffmpeg's own defaults do depend on the SIMD paths, so the check above can fail
    simd, plain = both(ffmpeg_args(next(iter(clips)), short_side=short_side, fps=0, quality=90, bitexact=False))
    assert simd != plain


# ---------------------------------------------------------------- machine faults are not bad videos


def _three_clips(src: Path) -> None:
    for i in range(3):
        make_clip(src / "A" / f"v{i}.mp4", seconds=0.5)


@pytest.mark.parametrize("code, words", [
    (28, "No space left on device (ENOSPC); free disk space"),  # errno.ENOSPC
    (13, "Permission denied (EACCES); fix the permissions"),
    (30, "Read-only file system (EROFS); point the frame store at a writable file system"),
])
def test_a_machine_fault_writing_packs_stops_without_quarantine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                code: int, words: str) -> None:
    import vidssl.data.extract as ex

    src, out = tmp_path / "src", tmp_path / "out"
    _three_clips(src)
    real, calls = ex.write_pack, []

    def failing(path, frames, **kw):  # the second pack hits the fault, as a disk filling up would
        calls.append(path)
        if len(calls) == 2:
            list(frames)
            raise OSError(code, os.strerror(code), str(path))
        return real(path, frames, **kw)

    monkeypatch.setattr(ex, "write_pack", failing)
    with pytest.raises(ex.EnvironmentFault, match=re.escape(words)) as err:
        extract_videos(src, out, short_side=32, workers=1, progress=False)
    assert err.value.exit_code == ex.EXIT_ENVIRONMENT == 74
    assert "no video was quarantined" in str(err.value) and str(calls[1]) in str(err.value)
    packs = sorted(p.name for p in out.rglob("*.zip"))  # finished packs stay (a video already running finishes)
    assert "v0.zip" in packs and "v1.zip" not in packs
    monkeypatch.setattr(ex, "write_pack", real)  # the disk has room again: the rerun resumes
    rep = extract_videos(src, out, short_side=32, workers=1, progress=False)
    assert rep["counts"]["quarantined"] == 0 and rep["counts"]["skipped"] == len(packs)


def test_out_of_file_handles_and_unreadable_source_are_machine_faults(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import vidssl.data.decode as dec
    import vidssl.data.extract as ex

    src, out = tmp_path / "src", tmp_path / "out"
    _three_clips(src)

    real_popen = dec.subprocess.Popen

    def no_handles(args, *a, **k):  # only the decoding ffmpeg (its version query still runs)
        if "pipe:" in args:
            raise OSError(errno.EMFILE, "Too many open files")
        return real_popen(args, *a, **k)

    monkeypatch.setattr(dec.subprocess, "Popen", no_handles)
    with pytest.raises(ex.EnvironmentFault, match=r"Too many open files \(EMFILE\); raise the open-file limit"):
        extract_videos(src, out, short_side=32, workers=2, progress=False)
    monkeypatch.undo()

    real_open = open

    def denied(path, *a, **k):
        if str(path).endswith("v1.mp4"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(ex.EnvironmentFault, match=r"reading .*v1.mp4: Permission denied \(EACCES\); fix"):
        extract_videos(src, out, short_side=32, workers=1, progress=False)
    assert not (out / "extract.json").exists() or "quarantined" not in (out / "extract.json").read_text()


def test_a_read_only_store_stops_before_any_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    import vidssl.data.extract as ex

    src, out = tmp_path / "src", tmp_path / "out"
    _three_clips(src)

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(out))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ex.EnvironmentFault, match=r"preparing the frame store .*Read-only file system \(EROFS\)"):
        extract_videos(src, out, short_side=32, workers=1, progress=False)
    assert not list(out.rglob("*.zip"))


def test_cli_exit_codes_for_bad_input_and_machine_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from typer.testing import CliRunner

    import vidssl.data.extract as ex
    from vidssl.cli import app

    src, out = tmp_path / "src", tmp_path / "out"
    make_clip(src / "A" / "good.mp4", seconds=0.5)
    (src / "A" / "zero.avi").write_bytes(b"")
    runner = CliRunner()
    base = ["--defaults", "extract", str(src), str(out), "--short-side", "32", "--params", str(tmp_path / "none.yaml")]
    ok = runner.invoke(app, base)
    assert ok.exit_code == 0, ok.output  # quarantine alone is not fatal by default
    bad = runner.invoke(app, base + ["--fail-on-bad-input"])
    assert bad.exit_code == ex.EXIT_BAD_INPUT == 3
    assert "1 video(s) quarantined, e.g. A/zero.avi" in bad.output and "Traceback" not in bad.output
    counts = json.loads((out / "extract.json").read_text())["counts"]  # written before exiting
    assert counts == {"extracted": 0, "skipped": 1, "quarantined": 1}

    def full(path, frames, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ex, "write_pack", full)
    (src / "A" / "new.mp4").write_bytes((src / "A" / "good.mp4").read_bytes())
    env = runner.invoke(app, base)
    assert env.exit_code == 74 and "No space left on device (ENOSPC)" in env.output and "Traceback" not in env.output


# ---------------------------------------------------------------- pre-extracted JPEG layouts


def _frame_jpeg(i: int) -> bytes:
    return simplejpeg.encode_jpeg(np.full((16, 24, 3), (37 * i) % 256, np.uint8), quality=85)


@pytest.mark.parametrize("names, extra", [
    ([f"img_{i:05d}.jpg" for i in range(1, 13)], []),  # the seeds' frames, 1-based
    ([f"img_{i:05d}.jpg" for i in range(1, 13)],  # mmaction2 rawframes: flow beside the RGB frames
     [f"flow_x_{i:05d}.jpg" for i in range(1, 12)] + [f"flow_y_{i:05d}.jpg" for i in range(1, 12)]),
    ([f"image_{i:04d}.jpg" for i in range(1, 13)], []),
    ([f"frame{i:03d}.jpg" for i in range(0, 12)], []),  # 0-based
    ([f"{i:06d}.jpeg" for i in range(0, 12)], ["x_000001.jpg", "y_000001.jpg"]),  # denseflow's x_/y_ beside
    ([f"img_{i}.jpg" for i in range(1, 13)], []),  # no padding: img_10 must follow img_9
])
def test_jpeg_layouts_pack_in_numeric_order_bytes_copied(tmp_path: Path, names: list[str], extra: list[str]) -> None:
    folder = tmp_path / "src/cls/vid"
    folder.mkdir(parents=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(_frame_jpeg(i))
    for name in extra:
        (folder / name).write_bytes(_frame_jpeg(200))
    rep = extract_videos(tmp_path / "src", tmp_path / "out", progress=False)
    [rec] = rep["videos"]
    assert rec["status"] == "extracted" and rec["n_frames"] == 12 and rec["warnings"] == []
    with zipfile.ZipFile(tmp_path / "out/cls/vid.zip") as zf:
        assert [zf.read(f"{i:06d}.jpg") for i in range(12)] == [_frame_jpeg(i) for i in range(12)]


def test_a_gap_in_the_numbering_is_reported_and_bad_names_quarantined(tmp_path: Path) -> None:
    gap = tmp_path / "src/cls/gap"
    gap.mkdir(parents=True)
    for i in (1, 2, 3, 7, 8):
        (gap / f"img_{i:05d}.jpg").write_bytes(_frame_jpeg(i))
    twice = tmp_path / "src/cls/twice"
    twice.mkdir()
    for name in ("img_1.jpg", "img_01.jpg", "img_2.jpg"):
        (twice / name).write_bytes(_frame_jpeg(1))
    unnamed = tmp_path / "src/cls/unnamed"
    unnamed.mkdir()
    (unnamed / "cover.jpg").write_bytes(_frame_jpeg(1))
    rep = {r["video_id"]: r for r in extract_videos(tmp_path / "src", tmp_path / "out", progress=False)["videos"]}
    assert rep["gap"]["status"] == "extracted" and rep["gap"]["n_frames"] == 5
    assert rep["gap"]["warnings"] == ["gap in the numbering: 3 frame(s) missing between img_00003.jpg and img_00007.jpg"]
    assert rep["twice"]["status"] == "quarantined" and "frame number 1 twice" in rep["twice"]["error"]
    assert rep["unnamed"]["status"] == "quarantined" and "without a frame number" in rep["unnamed"]["error"]


def test_import_frames_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vidssl.cli import app

    for vid, n in (("a", 3), ("b", 11)):
        folder = tmp_path / "src" / "Cls" / vid
        folder.mkdir(parents=True)
        for i in range(1, n + 1):
            if (vid, i) != ("b", 5):
                (folder / f"img_{i}.jpg").write_bytes(_frame_jpeg(i))
    make_clip(tmp_path / "src" / "Cls" / "video.mp4", seconds=0.3)
    res = CliRunner().invoke(app, ["--defaults", "import-frames", str(tmp_path / "src"), str(tmp_path / "out"),
                                   "--params", str(tmp_path / "none.yaml")])
    assert res.exit_code == 0, res.output
    assert "'extracted': 2" in res.output and "1 with gaps in their numbering" in res.output
    assert sorted(p.name for p in (tmp_path / "out" / "Cls").iterdir()) == ["a.zip", "b.zip"]  # the video is left
    with FramePack(tmp_path / "out/Cls/b.zip") as fp:
        assert len(fp) == 10
    empty = CliRunner().invoke(app, ["--defaults", "import-frames", str(tmp_path / "src" / "Cls"), str(tmp_path / "o2"),
                                     "--params", str(tmp_path / "none.yaml")])
    assert empty.exit_code == 2 and "no JPEG frame folders found" in empty.output


def test_bad_input_among_good_videos_is_quarantined_with_each_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(2):
        make_clip(src / "good" / f"g{i}.mp4", seconds=1)
    bad = src / "bad"
    bad.mkdir()
    (bad / "zero.avi").write_bytes(b"")
    (bad / "tiny.mp4").write_bytes(b"\x00" * 100)
    (bad / "text.mkv").write_text("not a video at all\n" * 200)
    shutil.copy(REAL / "broken/truncated_abseiling_k400.mp4", bad / "truncated.mp4")
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(bad / "audio.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "1", "-pix_fmt", "yuv420p",
           "-c:v", "libx264", str(bad / "still.mp4"))
    make_clip(bad / "huge.mkv", size="320x240", seconds=0.5)  # "huge" against the limit below
    rep = extract_videos(src, tmp_path / "out", short_side=32, workers=2, progress=False, min_frames=2,
                         max_pixels=160 * 120, min_bytes=1024)
    status = {r["video"]: (r["status"], (r["error"] or "").splitlines()[0] if r["error"] else None)
              for r in rep["videos"]}
    assert status["good/g0.mp4"] == status["good/g1.mp4"] == ("extracted", None)
    reasons = {v: why for v, (s, why) in status.items() if s == "quarantined"}
    assert set(reasons) == {f"bad/{n}" for n in ("zero.avi", "tiny.mp4", "text.mkv", "truncated.mp4", "audio.mp4",
                                                 "still.mp4", "huge.mkv")}
    assert reasons["bad/zero.avi"] == "empty file (0 bytes)"
    assert reasons["bad/tiny.mp4"] == "file is 100 bytes, below extract.min_bytes=1024"
    assert "Invalid data found when processing input" in reasons["bad/text.mkv"]
    assert "truncated MP4: its index (moov atom) is missing" in reasons["bad/truncated.mp4"]
    assert "no video stream" in reasons["bad/audio.mp4"]
    assert reasons["bad/still.mp4"] == "decoded 1 frame(s), fewer than extract.min_frames=2"
    assert "resolution 320x240 is above the 19200-pixel limit (extract.max_pixels)" in reasons["bad/huge.mkv"]
    assert not any((tmp_path / "out" / "bad").glob("*.zip"))


def test_a_picture_above_4k_is_quarantined_under_the_shipped_limit(tmp_path: Path) -> None:
    """extract.max_pixels' default (3840 x 2160) refuses a 4096 x 2304 video unread; the good one is extracted."""
    from typer.testing import CliRunner

    from vidssl.cli import app

    src = tmp_path / "src"
    make_clip(src / "a" / "ok.mp4", seconds=0.5)
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=4096x2304:rate=5", "-frames:v", "2", "-pix_fmt", "yuv420p",
           "-c:v", "libx264", "-preset", "ultrafast", str(src / "a" / "huge.mp4"))
    res = CliRunner().invoke(app, ["--defaults", "extract", str(src), str(tmp_path / "out"), "--short-side", "32",
                                   "--params", str(tmp_path / "none.yaml")])
    assert res.exit_code == 0, res.output  # bad input alone is not fatal unless params ask
    status = {r["video"]: r for r in json.loads((tmp_path / "out" / "extract.json").read_text())["videos"]}
    assert status["a/ok.mp4"]["status"] == "extracted"
    assert status["a/huge.mp4"]["status"] == "quarantined"
    assert "resolution 4096x2304 is above the 8294400-pixel limit (extract.max_pixels)" in status["a/huge.mp4"]["error"]


def test_check_videos_lists_what_extract_would_quarantine(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vidssl.cli import app
    from vidssl.data.probe import check_videos

    src = tmp_path / "src"
    make_clip(src / "good" / "g.mp4", seconds=1)
    shutil.copy(REAL / "ucf101/videos/Archery/v_Archery_g07_c01.avi", src / "good" / "archery.avi")
    (src / "bad").mkdir()
    (src / "bad" / "zero.avi").write_bytes(b"")
    (src / "bad" / "text.mkv").write_text("not a video at all\n" * 200)
    ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(src / "bad" / "audio.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "1", "-pix_fmt", "yuv420p",
           "-c:v", "libx264", str(src / "bad" / "still.mp4"))
    rep = check_videos(src, tmp_path / "r" / "check.json", workers=2, max_pixels=0)
    by = {v["video"]: v for v in rep["videos"]}
    archery = by["good/archery.avi"]
    assert archery["reason"] is None and archery["frames"] == 91 and (archery["width"], archery["height"]) == (320, 240)
    assert archery["fps"] == 25 and abs(archery["duration"] - 3.64) < 0.05
    assert by["good/g.mp4"]["frames"] == 10 and by["good/g.mp4"]["fps"] == 10
    assert by["bad/zero.avi"]["reason"] == "empty file (0 bytes)"
    assert "no video stream" in by["bad/audio.mp4"]["reason"]
    assert by["bad/still.mp4"]["reason"] == "decoded 1 frame(s), fewer than extract.min_frames=2"
    assert by["bad/text.mkv"]["reason"] and rep["n_quarantined"] == 4
    rows = (tmp_path / "r" / "quarantine.csv").read_text().splitlines()
    assert rows[0] == "video,reason" and len(rows) == 5 and rows[1].startswith("bad/audio.mp4,")
    res = CliRunner().invoke(app, ["--defaults", "check-videos", str(src), "--report", str(tmp_path / "c.json"),
                                   "--params", str(tmp_path / "none.yaml")])
    assert res.exit_code == 3 and "4 video(s) would be quarantined" in res.output
    shutil.rmtree(src / "bad")
    res = CliRunner().invoke(app, ["--defaults", "check-videos", str(src), "--report", str(tmp_path / "c.json"),
                                   "--params", str(tmp_path / "none.yaml")])
    assert res.exit_code == 0 and "2 videos, 0 to quarantine" in res.output


def test_exact_false_uses_ffmpegs_fast_paths_and_never_mixes_stores(tmp_path: Path) -> None:
    make_clip(tmp_path / "src/a/v.mp4", size="96x64", seconds=1)
    args = ffmpeg_args(tmp_path / "src/a/v.mp4", short_side=32, fps=0, quality=90, bitexact=False)
    assert "bitexact" not in " ".join(args) and "dct" not in args
    fast = extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, exact=False, progress=False)
    assert fast["params"]["encoding"].startswith("mjpeg-fast ") and fast["counts"]["extracted"] == 1
    with pytest.raises(ValueError, match="encoding"):  # an exact run refuses the fast store instead of mixing
        extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, exact=True, progress=False)
    again = extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, exact=True, progress=False,
                           reset_on_change=True)
    assert again["params"]["encoding"].startswith("mjpeg-bitexact ") and again["counts"]["extracted"] == 1


def test_extract_takes_fast_paths_for_real_datasets_unless_params_ask_for_exact(tmp_path: Path) -> None:
    """extract.exact: auto (the shipped value) is bit-exact for the embedded dataset, fast for a real one."""
    from typer.testing import CliRunner

    from vidssl.cli import app

    make_clip(tmp_path / "src/a/v.mp4", size="96x64", seconds=0.5)
    cases = [("synthetic", "auto", "mjpeg-bitexact "), ("hmdb51", "auto", "mjpeg-fast "),
             ("kinetics400", "true", "mjpeg-bitexact "), ("synthetic", "false", "mjpeg-fast ")]
    for i, (dataset, exact, encoding) in enumerate(cases):
        params = tmp_path / f"p{i}.yaml"
        params.write_text(f"data: {{dataset: {dataset}}}\nextract: {{short_side: 32, exact: {exact}}}\n")
        res = CliRunner().invoke(app, ["--defaults", "extract", str(tmp_path / "src"), str(tmp_path / f"out{i}"),
                                       "--params", str(params)])
        assert res.exit_code == 0, res.output
        report = json.loads((tmp_path / f"out{i}" / "extract.json").read_text())
        assert report["params"]["encoding"].startswith(encoding), (dataset, exact, report["params"])


_DASK_RUN = r"""
import os, sys
from pathlib import Path

if __name__ == "__main__":
    from prefect.server.api.server import SubprocessASGIServer
    server = SubprocessASGIServer()
    server.start(timeout=600)
    os.environ["PREFECT_API_URL"] = server.api_url  # the workers started below inherit it
    try:
        from distributed import LocalCluster
        from vidssl.data.extract import extract_videos
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                          worker_dashboard_address=None, host="127.0.0.1") as cluster:
            rep = extract_videos(Path(sys.argv[1]), Path(sys.argv[2]), short_side=32, progress=False,
                                 dask=cluster.scheduler_address)
        print("COUNTS", rep["counts"])
    finally:
        server.stop()
"""


@pytest.mark.slow
def test_extract_fans_out_over_a_two_worker_dask_cluster(tmp_path: Path) -> None:
    """Prefect's Dask task runner on a local two-worker cluster gives the same packs as local threads."""
    import sys

    for i in range(3):
        make_clip(tmp_path / "src" / "a" / f"v{i}.mp4", seconds=0.5)
    (tmp_path / "src" / "a" / "bad.mp4").write_bytes(b"\x00" * 2048)
    script = tmp_path / "run.py"
    script.write_text(_DASK_RUN)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(Path(__file__).parents[1]),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "src"), str(tmp_path / "dask")],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "COUNTS {'extracted': 3, 'skipped': 0, 'quarantined': 1}" in out.stdout
    local = extract_videos(tmp_path / "src", tmp_path / "local", short_side=32, progress=False)
    for i in range(3):
        assert (tmp_path / f"dask/a/v{i}.zip").read_bytes() == (tmp_path / f"local/a/v{i}.zip").read_bytes()
    report = json.loads((tmp_path / "dask" / "extract.json").read_text())
    assert [v["status"] for v in report["videos"]] == [v["status"] for v in local["videos"]]


def test_dask_without_a_prefect_server_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_clip(tmp_path / "src" / "a" / "v.mp4", seconds=0.5)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(ValueError, match="set PREFECT_API_URL here and on the workers"):
        extract_videos(tmp_path / "src", tmp_path / "out", short_side=32, progress=False, dask="tcp://127.0.0.1:1")


def test_progress_off_a_terminal_is_one_plain_line_per_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """In CI or a DVC log (no TTY) extract reports done/total with rate and ETA, counting resumed videos."""
    src, out = tmp_path / "src", tmp_path / "out"
    for name in ("a/one.mp4", "b/two.mp4"):
        make_clip(src / name, seconds=1)
    with caplog.at_level("INFO", logger="vidssl.progress"):
        extract_videos(src, out, short_side=32, workers=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "vidssl.progress"]
    assert len(lines) == 1 and lines[0].startswith("extract 2/2 (100%)") and "video/s" in lines[0], lines
    caplog.clear()
    (out / "b" / "two.zip").unlink()
    with caplog.at_level("INFO", logger="vidssl.progress"):
        extract_videos(src, out, short_side=32, workers=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "vidssl.progress"]
    assert len(lines) == 1 and lines[0].startswith("extract 2/2 (100%)"), lines  # one redone, one kept
    caplog.clear()
    with caplog.at_level("INFO", logger="vidssl.progress"):
        extract_videos(src, out, short_side=32, workers=1, progress=False)
    assert not [r for r in caplog.records if r.name == "vidssl.progress"]
