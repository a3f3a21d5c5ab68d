"""Decode ``src/<class>/<video>.<ext>`` videos (or import ``src/<class>/<video>/*.jpg``) into frame packs.

Parallel over videos, resumable (a pack is written atomically, so one that exists is complete; it carries the
SHA-256 of its source, so a video replaced under the same name is extracted again) and tolerant:
each video's ffmpeg run is in :mod:`vidssl.data.decode`. A non-zero ffmpeg exit or zero frames quarantines a
video (no pack; command and stderr tail in the report).
A damaged file that ffmpeg decodes to the end with exit 0 (e.g. a truncated AVI) keeps the frames it gave:
status "extracted", ffmpeg's error lines in ``warnings``; the validate stage can judge its frame count.
Each pack also records its source file's size, frame rate and duration (read from the same ffmpeg run) for the
data gate's per-video checks; a reused pack from before that gets them from ffmpeg opening the video.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidssl.data.decode import DecodeError, decode_frames, encoding, probe_info
from vidssl.data.store import (PACK_SUFFIX, count_frames, frame_files, pack_jpeg_folder, pack_meta, pack_source,
                               set_pack_meta, write_pack)
from vidssl.entry import EXIT_ENVIRONMENT, EXIT_QUARANTINED
from vidssl.io import write_json
from vidssl.progress import Progress

log = logging.getLogger(__name__)

VIDEO_EXTS = frozenset({".avi", ".mp4", ".mkv", ".webm"})
JPEG_EXTS = frozenset({".jpg", ".jpeg"})
LAYOUT = "src/<class>/<video>.avi|.mp4|.mkv|.webm, or src/<class>/<video>/*.jpg for extracted frames"
_OUTPUT_PARAMS = ("short_side", "fps", "quality", "encoding")
# Exit codes, from the tool's one table (vidssl/entry.py): bad input quarantined while params ask to fail on it
# (3), and a fault of the machine (74: disk full, no permission, out of file handles, read-only store).
EXIT_BAD_INPUT = EXIT_QUARANTINED
# errno values that say the machine, not the video, is at fault: such a video is never quarantined
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE,
                                errno.EROFS, errno.EIO, errno.ENOMEM})
_ENV_FIX = {
    errno.ENOSPC: "free disk space on the frame store's file system", errno.EDQUOT: "raise the disk quota",
    errno.EACCES: "fix the permissions", errno.EPERM: "fix the permissions",
    errno.EMFILE: "raise the open-file limit (ulimit -n) or lower extract.workers",
    errno.ENFILE: "close other programs or raise the system's open-file limit",
    errno.EROFS: "point the frame store at a writable file system", errno.EIO: "check the disk",
    errno.ENOMEM: "lower extract.workers or free memory",
}


class EnvironmentFault(RuntimeError):
    """The machine stopped extraction (disk full, permissions, file handles, read-only store): no video is at
    fault, so none is quarantined; packs already written are kept and a rerun resumes."""

    exit_code = EXIT_ENVIRONMENT


class BadInputError(RuntimeError):
    """Videos were quarantined and ``extract.fail_on_bad_input`` asks to stop on it (the store is complete)."""

    exit_code = EXIT_BAD_INPUT


def environment_fault(exc: BaseException, doing: str) -> EnvironmentFault | None:
    """An :class:`EnvironmentFault` naming the cause and the fix if ``exc`` is one, else None."""
    code = getattr(exc, "errno", None)
    if not isinstance(exc, OSError) or code not in ENVIRONMENT_ERRNOS:
        return None
    where = f" at {exc.filename}" if exc.filename and str(exc.filename) not in doing else ""
    return EnvironmentFault(f"{doing}: {exc.strerror or exc} ({errno.errorcode.get(code, code)}){where}; "
                            f"{_ENV_FIX.get(code, 'fix the machine')}, then rerun: finished packs are kept and no "
                            "video was quarantined")


@dataclass(frozen=True)
class VideoInput:
    """One input: a video file or a folder of JPEG frames, under ``src/<label>/``."""

    path: Path
    label: str
    is_folder: bool

    @property
    def video(self) -> str:
        return f"{self.label}/{self.path.name}"

    @property
    def video_id(self) -> str:
        return self.path.name if self.is_folder else self.path.stem

    @property
    def pack(self) -> str:
        return f"{self.label}/{self.video_id}{PACK_SUFFIX}"


def find_inputs(src: Path) -> list[VideoInput]:
    """List the videos and JPEG-frame folders under ``src/<class>/``, sorted; hidden names are skipped."""
    found = []
    for cls in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for item in sorted(cls.iterdir()):
            if item.name.startswith("."):  # e.g. macOS "._x.avi" resource forks, not videos
                continue
            if item.is_file() and item.suffix.lower() in VIDEO_EXTS:
                found.append(VideoInput(item, cls.name, is_folder=False))
            elif item.is_dir() and any(f.suffix.lower() in JPEG_EXTS for f in item.iterdir()):
                found.append(VideoInput(item, cls.name, is_folder=True))
    return found


def valid_pack_frames(pack: Path) -> int:
    """Frame count of an existing, readable pack; 0 if it is missing, empty or not a valid ZIP."""
    try:
        return count_frames(pack)
    except (zipfile.BadZipFile, OSError):
        return 0


def source_digest(item: VideoInput) -> str:
    """SHA-256 of an input's bytes (a folder: each JPEG's name and bytes, in name order).

    Content, not size and mtime: a DVC checkout or a copy gives new mtimes to the same bytes, and a
    re-rendered video can keep its size.
    """
    h = hashlib.sha256()
    files = frame_files(item.path)[0] if item.is_folder else [item.path]
    for f in files:
        if item.is_folder:
            h.update(f"{f.name}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def remove_stale_tmp(out: Path) -> int:
    """Delete temp files a killed run left in ``out`` (``atomic_path`` names them ``.<name>.*.tmp``)."""
    stale = [p for p in out.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _record(item: VideoInput, status: str, n_frames: int, error: str | None = None,
            source: str | None = None) -> dict[str, Any]:
    pack = None if status == "quarantined" else item.pack
    return {"video": item.video, "class": item.label, "video_id": item.video_id, "pack": pack,
            "status": status, "n_frames": n_frames, "source_sha256": source, "error": error, "warnings": [],
            "seconds": 0.0}


def too_small(item: VideoInput, min_bytes: int) -> str | None:
    """Why a video file is too small to hold a video (zero bytes, or under ``min_bytes``), else None."""
    if item.is_folder:
        return None
    size = item.path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    return f"file is {size} bytes, below extract.min_bytes={min_bytes}" if size < min_bytes else None


def extract_one(item: VideoInput, out: Path, *, short_side: int, fps: float, quality: int, min_frames: int = 1,
                max_pixels: int = 0, min_bytes: int = 0, exact: bool = True) -> dict[str, Any]:
    """Extract (or skip, or quarantine) one input and return its report record.

    Quarantined besides what ffmpeg cannot decode: a file under ``min_bytes``, a picture above ``max_pixels``
    and a video of fewer than ``min_frames`` frames (a still image saved as a video is no clip).

    A pack is reused only if it is readable and was made from these very bytes; otherwise it is replaced, and
    if the input no longer decodes the old pack is removed with it quarantined, so no stale frames stay behind.
    """
    start = time.perf_counter()
    pack = out / item.pack
    try:
        small = too_small(item, min_bytes)
        source = source_digest(item)
    except (OSError, ValueError) as exc:
        if fault := environment_fault(exc, f"reading {item.path}"):
            raise fault from exc
        source = None
        rec = _record(item, "quarantined", 0, error=f"cannot read {item.path}: {exc}")
    else:
        rec = (_record(item, "quarantined", 0, error=small, source=source) if small else
               _record(item, "skipped", valid_pack_frames(pack) if pack_source(pack) == source else 0, source=source))
    if rec["status"] == "skipped" and rec["n_frames"] and not item.is_folder and pack_meta(pack) is None:
        _record_facts(item, pack)
    if rec["status"] == "skipped" and rec["n_frames"] == 0:
        # what the data gate checks per video (validate.*), kept in the pack so a resumed run loses nothing;
        # the decoder fills in the frame rate and duration from its own run
        meta: dict[str, Any] = {"video": item.video, "bytes": None, "fps": None, "seconds": None}
        try:
            if item.is_folder:
                n = pack_jpeg_folder(item.path, pack, source=source, warnings=rec["warnings"], meta=meta)
            else:
                meta["bytes"] = item.path.stat().st_size
                n = write_pack(pack, decode_frames(item.path, short_side=short_side, fps=fps, quality=quality,
                                                   warnings=rec["warnings"], max_pixels=max_pixels, exact=exact,
                                                   info=meta),
                               source=source, meta=meta)
            if n < min_frames:
                raise ValueError(f"decoded {n} frame(s), fewer than extract.min_frames={min_frames}")
            rec.update(status="extracted", n_frames=n)
        except (DecodeError, OSError, ValueError) as exc:
            if fault := environment_fault(exc, f"writing {pack} from {item.path}"):
                raise fault from exc
            rec = _record(item, "quarantined", 0, error=str(exc), source=source)
    if rec["status"] == "quarantined":
        pack.unlink(missing_ok=True)
        log.warning("quarantined %s: %s", item.path, rec["error"].splitlines()[0])
    rec["seconds"] = round(time.perf_counter() - start, 4)
    return rec


def _record_facts(item: VideoInput, pack: Path) -> None:
    """Give a reused pack from before packs recorded their source facts those facts, from ffmpeg opening the
    video (nothing is decoded again); the pack then equals a freshly extracted one, byte for byte."""
    try:
        meta = {"video": item.video, "bytes": item.path.stat().st_size, "fps": None, "seconds": None}
        meta.update(probe_info(item.path))
        set_pack_meta(pack, meta)
    except OSError as exc:
        if fault := environment_fault(exc, f"recording source facts in {pack}"):
            raise fault from exc
        log.warning("%s: source facts not recorded (%s); the data gate will not check them", pack, exc)


def _check_args(src: Path, short_side: int, fps: float, workers: int, quality: int) -> None:
    if short_side < 0 or short_side % 2:
        raise ValueError(f"short_side must be 0 (native size) or a positive even number; got {short_side}")
    if fps < 0:
        raise ValueError(f"fps must be 0 (native frame rate) or > 0; got {fps}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100 (JPEG quality); got {quality}")
    if not src.is_dir():
        raise FileNotFoundError(f"video source folder {src} not found; expected {LAYOUT}")


def _check_resume(report: Path, out: Path, params: dict[str, Any], reset: bool = False) -> None:
    """Refuse to mix packs made with other output params into one store (or, with ``reset``, drop the old ones)."""
    if not out.is_dir() or not any(out.rglob(f"*{PACK_SUFFIX}")):
        return  # nothing to reuse, so nothing to mix up
    try:
        old = json.loads(report.read_text(encoding="utf-8")).get("params", {})
    except (OSError, ValueError):
        return
    # a key the old report lacks counts as changed: packs from before it existed were made some other way
    diff = {k: (old.get(k), params[k]) for k in _OUTPUT_PARAMS if old.get(k) != params[k]}
    if diff and reset:
        log.warning("%s: output params changed %s; removing the old packs and extracting again", out, diff)
        for pack in out.rglob(f"*{PACK_SUFFIX}"):
            pack.unlink()
    elif diff:
        how = ("delete the output folder to re-extract (they come from another ffmpeg or an older vidssl)"
               if set(diff) == {"encoding"} else "delete the output folder to re-extract, or pass the old params")
        raise ValueError(f"{report}: existing packs were made with other params (old, new): {diff}; {how}")


def extract_videos(src: Path, out: Path, *, short_side: int = 128, fps: float = 0.0, workers: int = 2,
                   quality: int = 90, report: Path | None = None, progress: bool = True,
                   reset_on_change: bool = False, timings: bool = True, frames_only: bool = False,
                   min_frames: int = 1, max_pixels: int = 0, min_bytes: int = 0, exact: bool = True,
                   dask: str | None = None) -> dict:
    """Decode every video under ``src`` into frame packs under ``out``; resumable and fault tolerant.

    Args:
        src: dataset root laid out as ``src/<class>/<video>.<ext>`` or ``src/<class>/<video>/*.jpg``.
        out: frame-store root; packs go to ``out/<class>/<video_id>.zip``.
        short_side: shorter frame side in pixels (even; aspect kept); 0 keeps the native size.
            Imported JPEG folders are never resized.
        fps: resample to this frame rate with ffmpeg's fps filter; 0 keeps every decoded frame.
        workers: videos decoded at once (one single-threaded ffmpeg process each).
        quality: JPEG quality, libjpeg scale (mapped to ffmpeg's MJPEG qscale).
        reset_on_change: when ``out`` holds packs made with other output params, delete them and
            extract again instead of raising (the DVC stage does this: a params change means re-extract).
        report: where the JSON report goes (atomic write); default ``out/extract.json``.
        timings: write the report of this run (each video's decode ``seconds``; ``skipped`` for a pack
            reused). The DVC stage turns this off for the manifest inside the store, which then records
            what the store holds rather than what this run did (no seconds; a reused pack counts as
            ``extracted``), so that the same videos give a byte-identical store, and so the same DVC hash,
            whether extracted fresh or resumed. The returned report is always this run's.
        progress: show progress (a bar with ETA on a terminal, a log line every 30 s elsewhere).
        min_frames, max_pixels, min_bytes: quarantine a video of fewer frames, larger pictures (0: no limit) or
            a smaller file (``extract_one``).
        exact: bit-exact frames, the same bytes on every CPU (so the store's DVC hash is too); False lets ffmpeg
            use its SIMD code (faster; bytes depend on the CPU). A store is never mixed: switching re-extracts.
        dask: address of a Dask scheduler to fan the videos out over (``vidssl.data.fanout``; the workers must
            see ``src`` and ``out`` at the same paths); None runs ``workers`` threads here.
        frames_only: import pre-extracted JPEG folders only (``vidssl import-frames``); video files are ignored.

    Returns:
        The report: src, out, params, counts per status and one record per input, sorted by video.

    Raises:
        FileNotFoundError: ``src`` is missing or holds no videos in the expected layout.
        ValueError: a bad argument, or ``out`` holds packs made with other output params.
    """
    src, out = Path(src), Path(out)
    report = Path(report) if report is not None else out / "extract.json"
    _check_args(src, short_side, fps, workers, quality)
    items = find_inputs(src)
    if frames_only:
        if skipped := sum(not it.is_folder for it in items):
            log.warning("import-frames: %d video files under %s ignored (vidssl extract decodes them)", skipped, src)
        items = [it for it in items if it.is_folder]
        if not items:
            raise FileNotFoundError(f"no JPEG frame folders found in {src}; expected src/<class>/<video>/img_00001.jpg "
                                    "(or image_0001.jpg, frame000.jpg, 00001.jpg; .jpg or .jpeg)")
    if not items:
        raise FileNotFoundError(f"no videos found in {src}; expected {LAYOUT}")
    params = {"short_side": short_side, "fps": fps, "quality": quality, "encoding": encoding(exact),
              "workers": workers}
    _check_resume(report, out, params, reset_on_change)
    try:  # a read-only or full store stops here, before any video is tried
        out.mkdir(parents=True, exist_ok=True)
        if n_stale := remove_stale_tmp(out):
            log.info("removed %d temporary files left by an interrupted run in %s", n_stale, out)
        with tempfile.TemporaryFile(dir=out):  # unnamed where the OS allows: nothing left in the store
            pass
    except OSError as exc:
        raise (environment_fault(exc, f"preparing the frame store {out}") or exc) from exc

    records = _dedupe(items)
    todo = [it for it in items if it.video not in records]
    kw = {"short_side": short_side, "fps": fps, "quality": quality, "min_frames": min_frames,
          "max_pixels": max_pixels, "min_bytes": min_bytes, "exact": exact}
    if dask and todo:
        from vidssl.data.fanout import extract_on_dask

        records.update({r["video"]: r for r in extract_on_dask(todo, out, kw, dask)})
        todo = []
    pool = ThreadPoolExecutor(max_workers=workers)
    bar = Progress(len(items), "extract", initial=len(records), unit="video", enabled=progress, report_end=True)
    try:
        for fut in as_completed([pool.submit(extract_one, it, out, **kw) for it in todo]):
            rec = fut.result()
            records[rec["video"]] = rec
            bar.update(1)
    finally:  # on Ctrl-C or an error, do not start the queued videos
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)

    _remove_orphans(out, records)
    videos = [records[k] for k in sorted(records)]
    counts = _counts(videos)
    result = {"src": str(src), "out": str(out), "params": params, "counts": counts, "videos": videos}
    try:
        write_json(report, result if timings else _manifest(result))
    except OSError as exc:
        raise (environment_fault(exc, f"writing the report {report}") or exc) from exc
    log.info("extract: %s -> %s: %s", src, out, counts)
    if counts["quarantined"]:
        log.warning(
            "%d video(s) quarantined and left out of %s; each one's error, ffmpeg command and output are in %s. "
            "Replace or re-encode them and run extract again: the other videos' frames are reused.",
            counts["quarantined"], out, report,
        )
    return result


def raise_on_bad_input(result: dict[str, Any], fail: bool, report: Path) -> None:
    """With ``fail`` (``extract.fail_on_bad_input``), stop with exit code 3 when anything was quarantined.

    Called after every output is written, so the store stays complete and a rerun resumes.
    """
    bad = [r for r in result["videos"] if r["status"] == "quarantined"]
    if fail and bad:
        first = bad[0]["error"].splitlines()[0] if bad[0]["error"] else "unknown"
        raise BadInputError(f"{len(bad)} video(s) quarantined, e.g. {bad[0]['video']}: {first}; each one's reason is "
                            f"in {report}. Replace or remove them, or set extract.fail_on_bad_input: false to go on "
                            "without them")


def _remove_orphans(out: Path, records: dict[str, dict[str, Any]]) -> None:
    """Delete packs whose input is gone from ``src``: the store mirrors the source, and the lists stage (and
    the store's DVC hash) would otherwise still see a removed video."""
    keep = {r["pack"] for r in records.values() if r["pack"]}
    orphans = sorted(p for p in out.glob(f"*/*{PACK_SUFFIX}") if p.relative_to(out).as_posix() not in keep)
    for p in orphans:
        p.unlink()
    if orphans:
        log.warning("removed %d packs whose video is no longer in the source (e.g. %s)", len(orphans), orphans[0])


def _manifest(result: dict[str, Any]) -> dict[str, Any]:
    """The report as a state of the store, the same for a fresh and a resumed run: no timings, and a pack
    reused from an earlier run counts as extracted."""
    videos = [{k: ("extracted" if (k, v) == ("status", "skipped") else v) for k, v in r.items() if k != "seconds"}
              for r in result["videos"]]
    return {**result, "counts": _counts(videos), "videos": videos}


def _counts(videos: list[dict[str, Any]]) -> dict[str, int]:
    return {s: sum(r["status"] == s for r in videos) for s in ("extracted", "skipped", "quarantined")}


def _dedupe(items: list[VideoInput]) -> dict[str, dict[str, Any]]:
    """Quarantine records for inputs whose pack name is taken by an earlier input (e.g. a.avi + a.mp4)."""
    owner: dict[str, VideoInput] = {}
    records = {}
    for it in items:
        if it.pack in owner:
            err = f"duplicate video id: {it.video} and {owner[it.pack].video} both map to pack {it.pack}"
            records[it.video] = _record(it, "quarantined", 0, error=err)
            log.warning("quarantined %s: %s", it.path, err)
        else:
            owner[it.pack] = it
    return records
