"""One video -> a stream of JPEG frames, from one ffmpeg process (ffmpeg-python builds the command).

ffmpeg (``-threads 1``; extraction parallelises over videos) scales the frames, encodes JPEG itself and writes
MJPEG to a pipe, which is split on JPEG markers: no input size is needed (there is no ffprobe), rotation and
non-square pixels are resolved inside ffmpeg, and on the UCF101/Kinetics samples it was ~1.4x faster than raw
RGB out of ffmpeg + simplejpeg in Python (which also needs an ``ffmpeg -i`` call).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

STDERR_TAIL = 20
# Bit-exact output on every CPU, so data/frames (a DVC output) hashes the same on every machine: swscale's
# and the MJPEG encoder's SIMD paths round differently from their C code (measured: the same video's frames
# differ with `-cpuflags 0`), so the scaler runs bitexact and the encoder uses the C integer DCT. "+bitexact"
# on the encoder also drops the "Lavc<version>" comment from every JPEG.
SWS_FLAGS = "bicubic+accurate_rnd+bitexact"
_READ_CHUNK = 1 << 16


def encoding(exact: bool = True) -> str:
    """How frames are encoded, ffmpeg's version included: bit-exact output still changes between ffmpeg
    releases (7.0.2 and 9.0.2 differ on every clip tried), so pyproject pins imageio-ffmpeg, and a store
    made by another ffmpeg, or the other way (``exact``), is re-extracted rather than mixed with new packs
    (vidssl.data.extract)."""
    import imageio_ffmpeg

    return f"mjpeg-{'bitexact' if exact else 'fast'} ffmpeg {imageio_ffmpeg.get_ffmpeg_version()}"


class DecodeError(RuntimeError):
    """ffmpeg could not decode a video; the message holds the command and its stderr tail."""


def quality_to_qscale(quality: int) -> float:
    """Map a libjpeg-style quality (1-100) to ffmpeg's MJPEG ``-q:v`` (1-31).

    libjpeg scales its base tables by (200 - 2q)/100 for q >= 50 and 50/q below; ffmpeg's MJPEG tables at
    qscale 1 match the libjpeg scale 0.1 (measured: q:v 2 ~ quality 90, 3 ~ 85, 5 ~ 75 in size and PSNR).
    """
    scale = (200 - 2 * quality) / 100 if quality >= 50 else 50 / quality
    return min(31.0, max(1.0, scale * 10))


def ffmpeg_args(path: Path, *, short_side: int, fps: float, quality: int, bitexact: bool = True,
                max_pixels: int = 0) -> list[str]:
    """Build the ffmpeg command that writes the frames of ``path`` as MJPEG to stdout.

    ``bitexact=False`` (``extract.exact: false``) lets ffmpeg pick its SIMD paths: faster, and the bytes then
    depend on the CPU, so a store's DVC hash differs between machines. ``max_pixels`` > 0 makes the decoder refuse larger
    pictures (a huge-resolution file fails fast instead of taking the memory and minutes it would).
    """
    import ffmpeg  # ffmpeg-python: light, but only extraction needs it
    import imageio_ffmpeg

    stream = ffmpeg.input(str(path), threads=1, **({"max_pixels": max_pixels} if max_pixels > 0 else {}))["V"]  # "V": video streams, not attached cover art
    if fps > 0:
        stream = stream.filter("fps", fps=fps)
    if short_side > 0:
        # Size from the display aspect (dar = iw/ih*sar; ffmpeg has already applied rotation), so
        # non-square-pixel videos are not squashed; the long side is rounded to an even number.
        s = short_side
        stream = stream.filter(
            "scale",
            w=f"if(lt(dar,1),{s},2*trunc({s}*dar/2+0.5))",
            h=f"if(lt(dar,1),2*trunc({s}/dar/2+0.5),{s})",
            **({"flags": SWS_FLAGS} if bitexact else {}),
        ).filter("setsar", "1")
    out = stream.output(
        "pipe:", format="image2pipe", vcodec="mjpeg", qmin=1, threads=1,
        **({"dct": "int", "flags": "+bitexact"} if bitexact else {}),
        # passthrough: one JPEG per decoded frame; the default (cfr) duplicates frames at pts gaps.
        **{"q:v": round(quality_to_qscale(quality), 2), "fps_mode": "passthrough"},
    )
    # info level, each line tagged with its level: the input's description (frame rate, duration) is read from
    # the same run (:func:`stream_info`) while only error lines count as errors (:func:`error_lines`).
    out = out.global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info",
                          "-filter_threads", "1")
    return out.compile(cmd=imageio_ffmpeg.get_ffmpeg_exe())


def split_jpegs(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a concatenated stream of baseline JPEGs (ffmpeg's MJPEG output) into single images.

    Header segments are walked by their lengths; after the SOS header the first FF D9 is the end of
    the image, because in entropy-coded data a 0xFF byte is always followed by 00 or a restart marker.

    Raises:
        DecodeError: the stream holds bytes that are not (complete) JPEGs.
    """
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while True:
            end = _jpeg_end(buf)
            if end < 0:
                break
            yield bytes(buf[:end])
            del buf[:end]  # bytearray deletes from the front in O(1)
    if buf:
        raise DecodeError(f"ffmpeg output ends with {len(buf)} bytes that are not a complete JPEG")


def _jpeg_end(buf: bytearray) -> int:
    """Offset just past the first JPEG in ``buf``, or -1 if it is not complete yet."""
    if len(buf) < 4:
        return -1
    if buf[0] != 0xFF or buf[1] != 0xD8:
        raise DecodeError(f"ffmpeg output is not JPEG (starts with {bytes(buf[:4]).hex()})")
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            raise DecodeError(f"corrupt JPEG header in ffmpeg output at byte {pos}")
        marker, seg_len = buf[pos + 1], int.from_bytes(buf[pos + 2 : pos + 4], "big")
        pos += 2 + seg_len
        if marker == 0xDA:  # start of scan: entropy-coded data up to EOI
            eoi = buf.find(b"\xff\xd9", pos)
            return -1 if eoi < 0 else eoi + 2
    return -1


_LEVEL = re.compile(r"^((?:\[[^\]]* @ [^\]]*\] )?)\[(\w+)\] ?(.*)$")  # "[ctx @ 0x..] [error] text"
_ERROR_LEVELS = frozenset({"error", "fatal", "panic"})
_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: ")
_RATE = re.compile(r"[ ,](\d+(?:\.\d+)?)(k?) (fps|tbr)\b")


def error_lines(lines: list[str]) -> list[str]:
    """The error-level lines of a ``-loglevel level+...`` log, level tag removed (as ``-loglevel error`` prints
    them); an untagged line is kept, so nothing ffmpeg said about a failure is lost."""
    out = []
    for line in lines:
        m = _LEVEL.match(line)
        if m is None:
            out.append(line)
        elif m[2] in _ERROR_LEVELS:
            out.append(m[1] + m[3])
    return out


def stream_info(log: str) -> dict[str, float | None]:
    """Frame rate (``fps``) and duration (``seconds``) of an input from ffmpeg's description of it.

    The frame rate is that of the first video stream that is not cover art: its ``fps`` (average rate), else its
    ``tbr`` (ffmpeg's guess); ``1k fps`` is 1000. The duration is the container's. None where ffmpeg gives none
    (``Duration: N/A``, a stream without a rate).
    """
    head = log.split("Output #0", 1)[0]  # the input's description, not the output's
    head = "\n".join(_LEVEL.sub(r"\3", line) for line in head.splitlines())
    fps = None
    for line in head.splitlines():
        if _VIDEO.search(line) and "(attached pic)" not in line:
            rates = {kind: float(v) * (1000 if k else 1) for v, k, kind in _RATE.findall(line)}
            fps = rates.get("fps", rates.get("tbr"))
            break
    dur = _DURATION.search(head)
    seconds = int(dur[1]) * 3600 + int(dur[2]) * 60 + float(dur[3]) if dur else None
    return {"fps": fps, "seconds": None if seconds is None else round(seconds, 3)}


def probe_info(path: Path) -> dict[str, float | None]:
    """Frame rate and duration of ``path`` (:func:`stream_info`) from ffmpeg opening it, nothing decoded: for
    packs written before they recorded these facts. The values are those a full extraction records."""
    import imageio_ffmpeg

    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "level+info", "-i", str(path)]
    # no output named: ffmpeg describes the input and exits non-zero ("at least one output file"), as intended
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True)
    return stream_info(proc.stderr.decode("utf-8", "replace"))


# ffmpeg's own words for the common failures -> one plain reason (first match wins)
_REASONS = (
    (re.compile(r"Picture size (\d+x\d+) exceeds specified max pixel count (\d+)"),
     "resolution {0} is above the {1}-pixel limit (extract.max_pixels)"),
    (re.compile(r"matches no streams|does not contain any stream|Output file .* does not contain any stream"),
     "no video stream (an audio-only or empty container)"),
    (re.compile(r"moov atom not found"), "truncated MP4: its index (moov atom) is missing"),
)


def explain(lines: list[str]) -> str | None:
    """A plain reason for an ffmpeg failure from its stderr lines, or None when none is recognised."""
    for pattern, text in _REASONS:
        for line in lines:
            if m := pattern.search(line):
                return text.format(*m.groups())
    return None


def decode_frames(
    path: Path, *, short_side: int, fps: float, quality: int, warnings: list[str], max_pixels: int = 0,
    exact: bool = True, info: dict | None = None,
) -> Iterator[bytes]:
    """Yield JPEG frames of ``path`` from one ffmpeg process; appends ffmpeg's error lines to ``warnings``.

    ``info``, when given, receives the source's frame rate and duration (:func:`stream_info`) once the last frame
    is out, from the same ffmpeg run.

    Raises:
        DecodeError: ffmpeg exited non-zero or decoded no frames. The message's first line is the exit status
            and ffmpeg's last error line; the command and the stderr tail follow.
    """
    args = ffmpeg_args(path, short_side=short_side, fps=fps, quality=quality, max_pixels=max_pixels, bitexact=exact)
    # stderr goes to a file, not a pipe: a long error log can then never block ffmpeg while we read stdout.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        n = 0
        try:
            assert proc.stdout is not None
            for jpeg in split_jpegs(iter(lambda: proc.stdout.read(_READ_CHUNK), b"")):
                n += 1
                yield jpeg
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # the consumer stopped early or failed: do not leave ffmpeg running
                proc.kill()
                proc.wait()
            proc.stdout.close()
        err.seek(0)
        log = err.read().decode("utf-8", "replace")
    lines = error_lines(log.splitlines())
    if info is not None:
        info.update(stream_info(log))
    if rc != 0 or n == 0:
        why = f"ffmpeg exited with code {rc}" if rc != 0 else "ffmpeg decoded 0 frames"
        tail = lines[-STDERR_TAIL:]
        # ffmpeg's last error line is its reason ("... Invalid data found when processing input"); it leads the
        # message so that a one-line log says why, and the command and the rest of stderr follow.
        reason = explain(lines) or next((line.strip() for line in reversed(tail) if line.strip()), "no error output")
        raise DecodeError(f"{why}: {reason}\ncommand: {shlex.join(args)}\n" + "\n".join(tail))
    warnings.extend(lines[-STDERR_TAIL:])
