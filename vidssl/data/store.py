"""The frame store: one uncompressed ZIP of JPEG frames per video.

One file per video keeps DVC hashing and network filesystems fast (UCF101 is ~2.5M frames), a clip read
is one open plus a few seeks, and any user can ``unzip`` a pack. Frames are named ``000000.jpg``,
``000001.jpg``, ... in decode order; nothing else is stored, so the frame count is the entry count.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

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
               source: str | None = None) -> int:
    """Write frames (RGB arrays or ready JPEG bytes) to a pack atomically; return the frame count.

    The pack appears under ``path`` only once complete, so a crash never leaves a pack that a rerun
    would take as done. ``source``, the digest of what the frames came from, goes in the ZIP comment
    (:func:`pack_source`), so a pack says which version of its video it holds.
    """
    n = 0
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for n, frame in enumerate(frames, start=1):
                data = frame if isinstance(frame, bytes) else encode_jpeg(frame, quality)
                zf.writestr(_entry(frame_name(n - 1)), data)
            if source is not None:
                zf.comment = _SOURCE_TAG + source.encode("ascii")
        if n == 0:
            raise ValueError(f"{path}: no frames to write")
    return n


def pack_source(path: str | os.PathLike[str]) -> str | None:
    """The source digest written with a pack, or None if it has none (or is missing or unreadable)."""
    try:
        with zipfile.ZipFile(path) as zf:
            comment = zf.comment
    except (OSError, zipfile.BadZipFile):
        return None
    return comment[len(_SOURCE_TAG):].decode("ascii") if comment.startswith(_SOURCE_TAG) else None


def _entry(name: str) -> zipfile.ZipInfo:
    """A member header with a fixed timestamp: a string name would stamp the wall clock into every pack,
    so extracting the same frames twice would give different bytes (and a new DVC hash downstream)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def pack_jpeg_folder(src: str | os.PathLike[str], dst: str | os.PathLike[str], source: str | None = None) -> int:
    """Import a pre-extracted folder of JPEG frames (sorted by name) as a pack, bytes copied as-is."""
    files = sorted(p for p in Path(src).iterdir() if p.suffix.lower() in {".jpg", ".jpeg"})
    if not files:
        raise FileNotFoundError(f"{src}: no .jpg frames found; expected a folder of extracted JPEG frames")
    return write_pack(dst, (p.read_bytes() for p in files), source=source)


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


class FramePack:
    """Random access to the frames of one pack. Opens lazily, so it is safe to pickle into workers."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._zf: zipfile.ZipFile | None = None
        self._names: list[str] = []

    def _open(self) -> zipfile.ZipFile:
        if self._zf is None:
            self._zf = zipfile.ZipFile(self.path)
            self._names = sorted(n for n in self._zf.namelist() if n.endswith(".jpg"))
        return self._zf

    def __len__(self) -> int:
        self._open()
        return len(self._names)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Decode frames at ``indices`` (repeats allowed) into a TxHxWx3 uint8 RGB array."""
        zf = self._open()
        cache: dict[int, np.ndarray] = {}
        out = []
        for i in indices:
            if i not in cache:
                cache[i] = simplejpeg.decode_jpeg(zf.read(self._names[i]), colorspace="RGB")
            out.append(cache[i])
        return np.stack(out)

    def close(self) -> None:
        if self._zf is not None:
            self._zf.close()
            self._zf = None

    def __getstate__(self) -> dict:
        # An open ZipFile does not pickle; DataLoader workers reopen on first read.
        return {"path": self.path, "_zf": None, "_names": []}

    def __enter__(self) -> "FramePack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
