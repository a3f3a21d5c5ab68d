"""The frame store: one uncompressed ZIP of JPEG frames per video.

One file per video keeps DVC hashing and network filesystems fast (UCF101 is ~2.5M frames), a clip read
is one open plus a few seeks, and any user can ``unzip`` a pack. Frames are named ``000000.jpg``,
``000001.jpg``, ... in decode order; nothing else is stored, so the frame count is the entry count. The ZIP
comment says where the frames came from: the source's SHA-256 on its first line and, on a second, a JSON object
of facts about the source video (file, size in bytes, frame rate, duration) that the data gate checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import simplejpeg

from vidssl.io import atomic_path

PACK_SUFFIX = ".zip"
_SOURCE_TAG = b"vidssl source sha256 "  # ZIP comment prefix; the hex digest of the source follows


def frame_name(index: int) -> str:
    """Entry name of frame ``index`` (0-based) inside a pack."""
    return f"{index:06d}.jpg"


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """Encode one HxWx3 uint8 RGB frame as JPEG."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality, colorspace="RGB")


def write_pack(path: str | os.PathLike[str], frames: Iterable[np.ndarray | bytes], quality: int = 90,
               source: str | None = None, meta: Mapping[str, Any] | None = None) -> int:
    """Write frames (RGB arrays or ready JPEG bytes) to a pack atomically; return the frame count.

    The pack appears under ``path`` only once complete, so a crash never leaves a pack that a rerun
    would take as done. ``source``, the digest of what the frames came from, goes in the ZIP comment
    (:func:`pack_source`), so a pack says which version of its video it holds; ``meta``, facts about that
    video (:func:`pack_meta`), follows on a second line. ``meta`` is read once every frame is written, so a
    decoder may fill it in as it goes.
    """
    n = 0
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for n, frame in enumerate(frames, start=1):
                data = frame if isinstance(frame, bytes) else encode_jpeg(frame, quality)
                zf.writestr(_entry(frame_name(n - 1)), data)
            if source is not None:
                zf.comment = _SOURCE_TAG + source.encode("ascii")
            if meta is not None:
                zf.comment = (zf.comment or b"") + b"\n" + _meta_bytes(meta)
        if n == 0:
            raise ValueError(f"{path}: no frames to write")
    return n


def _meta_bytes(meta: Mapping[str, Any]) -> bytes:
    """Sorted, compact JSON: the same facts give the same bytes (and the same DVC hash)."""
    return json.dumps(dict(meta), sort_keys=True, separators=(",", ":")).encode("ascii")


def pack_source(path: str | os.PathLike[str]) -> str | None:
    """The source digest written with a pack, or None if it has none (or is missing or unreadable)."""
    try:
        with zipfile.ZipFile(path) as zf:
            comment = zf.comment
    except (OSError, zipfile.BadZipFile):
        return None
    first = comment.split(b"\n", 1)[0]
    return first[len(_SOURCE_TAG):].decode("ascii") if first.startswith(_SOURCE_TAG) else None


def comment_meta(comment: bytes) -> dict[str, Any] | None:
    """The source facts in a pack's ZIP comment (see :func:`write_pack`), or None if it holds none (a pack
    written before packs recorded them, or by another tool)."""
    parts = comment.split(b"\n", 1)
    if len(parts) < 2:
        return None
    try:
        meta = json.loads(parts[1].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def pack_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Facts about the video a pack came from: ``video`` (``<class>/<file>``), ``bytes`` (its file size),
    ``fps`` and ``seconds`` (None where ffmpeg gave none, or for imported JPEG folders). None when the pack
    records none; raises like :class:`zipfile.ZipFile` on a missing or unreadable pack."""
    with zipfile.ZipFile(path) as zf:
        return comment_meta(zf.comment)


def set_pack_meta(path: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
    """Record source facts in an existing pack (replacing any), atomically; frames and digest are kept.

    Only the ZIP's central directory and comment are rewritten, so the pack ends byte-identical to one that
    :func:`write_pack` wrote with the same frames, digest and ``meta``.
    """
    import shutil

    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            first = zf.comment.split(b"\n", 1)[0]
            zf.comment = first + b"\n" + _meta_bytes(meta)


def pack_info(path: str | os.PathLike[str]) -> tuple[int, dict[str, Any] | None]:
    """Frame count and source facts (:func:`pack_meta`) of a pack from one read of its ZIP directory."""
    with zipfile.ZipFile(path) as zf:
        return sum(1 for name in zf.namelist() if name.endswith(".jpg")), comment_meta(zf.comment)


def _entry(name: str) -> zipfile.ZipInfo:
    """A member header with a fixed timestamp: a string name would stamp the wall clock into every pack,
    so extracting the same frames twice would give different bytes (and a new DVC hash downstream)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
# Optical-flow frames that tools write beside the RGB ones (mmaction2/denseflow: flow_x_00001.jpg, x_00001.jpg)
_FLOW = re.compile(r"^(flow_?[xyuv]|[xyuv])(_|$)", re.IGNORECASE)
_NUMBERED = re.compile(r"^(.*?)(\d+)$")
_RGB_PREFIXES = ("img_", "img", "image_", "image", "frame_", "frame", "")


def frame_files(folder: str | os.PathLike[str]) -> tuple[list[Path], list[str]]:
    """The RGB frames of a pre-extracted JPEG folder in numeric order, and notes on gaps in their numbering.

    Handles the layouts in use: ``img_00001.jpg`` (the seeds, mmaction2 with ``flow_x_*``/``flow_y_*`` beside it,
    which are left out), ``image_0001.jpg``, ``frame000.jpg``, bare ``00001.jpg``; 0- or 1-based, any zero padding,
    ``.jpg`` or ``.jpeg``. Order is by the number, never by name (``img_10`` comes after ``img_9``).

    Raises:
        ValueError: frames without a number, two numbering schemes side by side, or one number twice.
    """
    folder = Path(folder)
    jpegs = [p for p in folder.iterdir() if p.suffix.lower() in JPEG_SUFFIXES and not p.name.startswith(".")
             and p.is_file()]
    groups: dict[str, list[tuple[int, Path]]] = {}
    for p in jpegs:
        if _FLOW.match(p.stem):
            continue
        m = _NUMBERED.match(p.stem)
        if m is None:
            raise ValueError(f"{p}: a frame file name without a frame number; expected e.g. img_00001.jpg")
        groups.setdefault(m[1].lower(), []).append((int(m[2]), p))
    if not groups:
        raise FileNotFoundError(f"{folder}: no RGB .jpg frames found; expected e.g. img_00001.jpg")
    if len(groups) > 1:
        known = [k for k in _RGB_PREFIXES if k in groups]
        if not known:
            raise ValueError(f"{folder}: frames named with several prefixes {sorted(groups)}; keep one per folder")
        groups = {known[0]: groups[known[0]]}
    [numbered] = groups.values()
    numbered.sort()
    seen: dict[int, Path] = {}
    for n, p in numbered:
        if n in seen:
            raise ValueError(f"{folder}: frame number {n} twice ({seen[n].name} and {p.name}); remove one")
        seen[n] = p
    nums = [n for n, _ in numbered]
    notes = []
    if nums[0] not in (0, 1):
        notes.append(f"numbering starts at {nums[0]} (not 0 or 1)")
    for a, b in zip(nums, nums[1:]):
        if b != a + 1:
            notes.append(f"gap in the numbering: {b - a - 1} frame(s) missing between {seen[a].name} and {seen[b].name}")
    return [p for _, p in numbered], notes


def pack_jpeg_folder(src: str | os.PathLike[str], dst: str | os.PathLike[str], source: str | None = None,
                     warnings: list[str] | None = None, meta: Mapping[str, Any] | None = None) -> int:
    """Import a pre-extracted folder of JPEG frames (in numeric order) as a pack, bytes copied as-is.

    Gaps in the numbering are appended to ``warnings``: the frames present are packed, in order.
    """
    files, notes = frame_files(src)
    if warnings is not None:
        warnings.extend(notes)
    return write_pack(dst, (p.read_bytes() for p in files), source=source, meta=meta)


def count_frames(path: str | os.PathLike[str]) -> int:
    """Number of frames in a pack, read from the ZIP directory alone (no decoding)."""
    with zipfile.ZipFile(path) as zf:
        return sum(1 for name in zf.namelist() if name.endswith(".jpg"))


def packs_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> str:
    """One digest of what the packs at ``paths`` hold, from their ZIP directories alone (no frame is read).

    Each pack contributes its path, its size and every member's name, CRC-32 and size, so re-extracted or
    re-rendered frames behind unchanged list files give another digest, while the same bytes give the same
    one wherever and whenever they were written. A missing or unreadable pack hashes as such: the loader names it.
    """
    h = hashlib.sha256()
    for path in sorted({str(p) for p in paths}):
        h.update(f"{path}\0".encode())
        try:
            with zipfile.ZipFile(path) as zf:
                members = [(i.filename, i.CRC, i.file_size) for i in zf.infolist()]
            h.update(f"{os.path.getsize(path)}\0{members}\0".encode())
        except (OSError, zipfile.BadZipFile):
            h.update(b"unreadable\0")
    return h.hexdigest()[:16]


class _OpenPacks:
    """A bounded LRU of open pack ZIPs, one per process (each DataLoader worker has its own).

    A clip read opens its pack once; keeping a few recently used packs open saves the re-open for methods
    that read one video several times, while the bound keeps open files and memory flat in the number of
    videos: each open ZIP holds its directory (~0.6 KiB per frame), so keeping every pack open fails with
    EMFILE at the file limit and grows by ~100 KiB per UCF101 video. An evicted pack is closed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: OrderedDict[Path, tuple[zipfile.ZipFile, int]] = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: Path) -> tuple[zipfile.ZipFile, int]:
        """The open ZIP at ``path`` and its frame count, opening (and evicting the least recent) as needed."""
        if self._pid != os.getpid():  # a forked worker must not share its parent's file offsets
            self._open.clear()
            self._pid = os.getpid()
        hit = self._open.get(path)
        if hit is not None:
            self._open.move_to_end(path)
            return hit
        while len(self._open) >= max(self.limit, 1):
            _, (old, _) = self._open.popitem(last=False)
            old.close()
        zf = zipfile.ZipFile(path)
        entry = (zf, sum(1 for name in zf.namelist() if name.endswith(".jpg")))
        self._open[path] = entry
        return entry

    def drop(self, path: Path) -> None:
        entry = self._open.pop(path, None)
        if entry is not None:
            entry[0].close()

    def __len__(self) -> int:
        return len(self._open)


OPEN_PACKS = _OpenPacks(int(os.environ.get("VIDSSL_OPEN_PACKS", "16")))


def set_open_pack_limit(limit: int) -> None:
    """Bound the packs kept open per process (default 16, or ``VIDSSL_OPEN_PACKS``); closes the excess."""
    if limit < 1:
        raise ValueError(f"open pack limit must be >= 1; got {limit}")
    OPEN_PACKS.limit = limit
    while len(OPEN_PACKS._open) > limit:
        OPEN_PACKS._open.popitem(last=False)[1][0].close()


class FramePack:
    """Random access to the frames of one pack.

    Holds only its path: the open ZIP lives in the process's bounded cache (:data:`OPEN_PACKS`), so a dataset
    of any number of packs pickles into workers cheaply and keeps at most the cache's limit of files open.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __len__(self) -> int:
        return OPEN_PACKS.get(self.path)[1]

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Decode frames at ``indices`` (repeats allowed) into a TxHxWx3 uint8 RGB array.

        Raises:
            IndexError: an index outside the pack, naming the pack and its frame count.
        """
        zf, n = OPEN_PACKS.get(self.path)
        cache: dict[int, np.ndarray] = {}
        out = []
        for i in indices:
            if i not in cache:
                if not 0 <= i < n:
                    raise IndexError(f"{self.path}: frame {i} requested, the pack has {n} frames (0..{n - 1})")
                cache[i] = simplejpeg.decode_jpeg(zf.read(frame_name(i)), colorspace="RGB")
            out.append(cache[i])
        return np.stack(out)

    def close(self) -> None:
        """Close this pack's file if the cache holds it open."""
        OPEN_PACKS.drop(self.path)

    def __enter__(self) -> "FramePack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
