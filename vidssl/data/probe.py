"""`vidssl check-videos`: decode every video once (no frames kept) and list the ones extract would quarantine.

One ffmpeg process per video decodes its first video stream to the null muxer: a file that cannot be opened,
has no video stream, breaks mid-way, holds fewer than ``min_frames`` frames, pictures above ``max_pixels``, an
implausible frame rate, or is smaller than ``min_bytes`` goes to the quarantine list with its reason. The frame
rate, duration and size come from ffmpeg's own stream description; a frame count far from duration x fps is
a warning (variable frame rate and damaged indexes do that), not a reason.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vidssl.data.decode import explain
from vidssl.data.extract import LAYOUT, VideoInput, environment_fault, find_inputs, too_small
from vidssl.io import write_json, write_text

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: .*?[ ,](\d{1,5})x(\d{1,5})[ ,\[]")  # not a 0x.. codec tag
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_FRAME = re.compile(r"^frame=(\d+)$", re.MULTILINE)


def probe_video(path: Path, *, max_pixels: int = 0) -> dict[str, Any]:
    """Decode ``path`` to nothing; return rc, frames, width, height, fps, duration and ffmpeg's error lines."""
    import imageio_ffmpeg

    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-threads", "1"]
    args += ["-max_pixels", str(max_pixels)] if max_pixels > 0 else []
    args += ["-i", str(path), "-map", "0:V:0", "-f", "null", "-progress", "pipe:1", "-"]
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    err = proc.stderr.decode("utf-8", "replace")
    out = proc.stdout.decode("utf-8", "replace")
    head = err.split("Output #0", 1)[0]  # the input's description, not the null output's
    video = _VIDEO.search(head)
    fps = _FPS.search(head[video.start():]) if video else None
    dur = _DURATION.search(head)
    frames = _FRAME.findall(out)
    return {
        "rc": proc.returncode,
        "frames": int(frames[-1]) if frames else 0,
        "width": int(video[1]) if video else None,
        "height": int(video[2]) if video else None,
        "fps": float(fps[1]) if fps else None,
        "duration": int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else None,
        "errors": [line for line in err.splitlines() if "error" in line.lower() or "invalid" in line.lower()
                   or "exceeds" in line or "matches no streams" in line][-10:],
    }


def judge(item: VideoInput, *, min_bytes: int, min_frames: int, max_pixels: int,
          fps_range: tuple[float, float]) -> dict[str, Any]:
    """The check-videos record of one video: its facts, a quarantine ``reason`` (None if good) and warnings."""
    rec: dict[str, Any] = {"video": item.video, "bytes": None, "reason": None, "warnings": []}
    try:
        rec["bytes"] = item.path.stat().st_size
        small = too_small(item, min_bytes)
    except OSError as exc:
        if fault := environment_fault(exc, f"reading {item.path}"):
            raise fault from exc
        return rec | {"reason": f"cannot read {item.path}: {exc}"}
    if small:
        return rec | {"reason": small}
    try:
        facts = probe_video(item.path, max_pixels=max_pixels)
    except OSError as exc:  # ffmpeg could not start: the machine's fault (file handles, memory), not the video's
        raise (environment_fault(exc, f"probing {item.path}") or exc) from exc
    rec.update({k: facts[k] for k in ("frames", "width", "height", "fps", "duration")})
    lines = facts["errors"]
    if facts["rc"] != 0:
        last = lines[-1].strip() if lines else f"ffmpeg exited with code {facts['rc']}"
        rec["reason"] = explain(lines) or last
    elif facts["frames"] < min_frames:
        rec["reason"] = f"decoded {facts['frames']} frame(s), fewer than extract.min_frames={min_frames}"
    elif facts["fps"] is not None and not fps_range[0] <= facts["fps"] <= fps_range[1]:
        rec["reason"] = (f"frame rate {facts['fps']:g} fps outside {fps_range[0]:g}..{fps_range[1]:g} "
                         "(checks.min_fps, checks.max_fps)")
    else:
        if lines:
            rec["warnings"].append(f"decoded with errors: {lines[-1].strip()}")
        fps, dur = facts["fps"], facts["duration"]
        if fps and dur and abs(facts["frames"] - fps * dur) > 0.2 * fps * dur + 2:
            rec["warnings"].append(f"{facts['frames']} frames where duration x fps says {fps * dur:.0f}")
    return rec


def check_videos(src: Path, report: Path, *, workers: int = 2, min_bytes: int = 1024, min_frames: int = 2,
                 max_pixels: int = 3840 * 2160, fps_range: tuple[float, float] = (1.0, 240.0)) -> dict[str, Any]:
    """Probe every video under ``src/<class>/`` in parallel; write ``report`` (JSON, every video) and, beside
    it, ``quarantine.csv`` (path, reason) for the ones extract would quarantine.

    Raises:
        FileNotFoundError: ``src`` holds no videos in the expected layout.
        EnvironmentFault: the machine, not a video, failed (disk full, permissions, open files).
    """
    src, report = Path(src), Path(report)
    if not src.is_dir():
        raise FileNotFoundError(f"video source folder {src} not found; expected {LAYOUT}")
    items = [it for it in find_inputs(src) if not it.is_folder]
    if not items:
        raise FileNotFoundError(f"no videos found in {src}; expected {LAYOUT}")
    kw = {"min_bytes": min_bytes, "min_frames": min_frames, "max_pixels": max_pixels, "fps_range": fps_range}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        videos = list(pool.map(lambda it: judge(it, **kw), items))
    bad = [v for v in videos if v["reason"]]
    result = {"src": str(src), "params": {**kw, "fps_range": list(fps_range)}, "n_videos": len(videos),
              "n_quarantined": len(bad), "n_warnings": sum(bool(v["warnings"]) for v in videos), "videos": videos}
    write_json(report, result)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "reason"])
    writer.writerows([v["video"], v["reason"]] for v in bad)
    write_text(report.parent / "quarantine.csv", buf.getvalue())
    return result
