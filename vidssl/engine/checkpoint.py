"""Resumable training state, kept per run key and verified by checksum; loaded with weights_only=True.

A run key names what a training run is: its method, a digest of its params and a digest of its data. Each run
key has a folder of its own under the persist folder, holding its last two checkpoints; a run started with other
params or other data gets another folder and never resumes, or overwrites, another run's state. Each file is
named ``e<epochs done>-s<steps done>-<sha256 prefix>.pt``: written atomically in one rename, checked against the
digest in its name on load; a damaged newest file falls back to the one before, with a warning naming both.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from vidssl.io import atomic_path

log = logging.getLogger(__name__)

KEEP = 2  # checkpoints kept per run key: the newest and the one a damaged newest falls back to
_NAME = re.compile(r"^e(\d+)-s(\d+)-([0-9a-f]{16})\.pt$")


def config_key(obj: Any) -> str:
    """Stable short hash of the settings a checkpoint belongs to; a changed setting never resumes old state."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_key(method: str, params: Any, data: Any) -> str:
    """The folder name of one run: ``<method>-<params digest>-<data digest>``."""
    safe = re.sub(r"[^A-Za-z0-9_.]", "_", method)
    return f"{safe}-{config_key(params)[:12]}-{config_key(data)[:12]}"


def _state_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save_state_dict(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """torch.save atomically, so an interrupted save never leaves a truncated checkpoint.

    Saved through a file object: given a path, torch names the archive inside after the (random) temporary
    file, so the same weights would give other bytes on every save, i.e. another DVC hash for
    models/pretrain/backbone.pt and a fine-tune that cannot resume from an unchanged backbone.
    """
    data = _state_bytes(state)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True (no pickle code execution)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found; run the stage that writes it first") from None


def _order(path: Path) -> tuple[int, int]:
    m = _NAME.match(path.name)
    assert m is not None
    return int(m.group(1)), int(m.group(2))


def _checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in one run-key folder, newest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), key=_order, reverse=True)


def verify(path: Path) -> bytes:
    """The bytes of checkpoint ``path`` after checking them against the digest in its name.

    Raises:
        ValueError: if the file's bytes do not match its name's digest (truncated, altered).
    """
    data = path.read_bytes()
    m = _NAME.match(path.name)
    want = m.group(3) if m else None
    got = hashlib.sha256(data).hexdigest()[:16]
    if want != got:
        raise ValueError(f"checksum {got} does not match the name's {want} ({len(data)} bytes)")
    return data


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint that passes its checksum in any run key under ``folder`` (by modification time)."""
    found = [p for d in Path(folder).glob("*") if d.is_dir() for p in _checkpoints(d)]
    for path in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            verify(path)
        except (OSError, ValueError):
            continue
        return path
    return None


class Checkpointer:
    """The checkpoints of one run key under ``folder``: save keeps the newest :data:`KEEP`, load resumes the
    newest one that verifies."""

    def __init__(self, folder: str | os.PathLike[str], key: str) -> None:
        self.root = Path(folder)
        self.key = key
        self.dir = self.root / key
        self.last: Path | None = None  # the file most recently saved or loaded

    @property
    def path(self) -> Path:
        """Where this run's state lives (for messages)."""
        return self.last or self.dir

    def save(self, epoch: int, step: int = 0, **state: Any) -> Path:
        """Write the state after ``epoch`` whole epochs and ``step`` steps of the next; prune older files."""
        data = _state_bytes({"key": self.key, "epoch": epoch, "step": step, **state})
        path = self.dir / f"e{epoch:05d}-s{step:07d}-{hashlib.sha256(data).hexdigest()[:16]}.pt"
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
        for old in _checkpoints(self.dir)[KEEP:]:
            old.unlink(missing_ok=True)
        self.last = path
        return path

    def load(self) -> dict[str, Any] | None:
        """The newest state of this run key that verifies, else None (training starts over).

        A damaged file (checksum, unreadable, another key inside) is skipped with a warning naming it and the
        file used instead; it is left on disk for inspection until a later save prunes it.
        """
        files = _checkpoints(self.dir)
        if not files:
            others = sorted(d.name for d in self.root.glob("*") if d.is_dir() and d.name != self.key)
            if others:
                log.info("%s: no checkpoint for run %s; starting from scratch (other runs' states kept: %s)",
                         self.root, self.key, ", ".join(others))
            return None
        for i, path in enumerate(files):
            try:
                state = torch.load(io.BytesIO(verify(path)), map_location="cpu", weights_only=True)
                if state.get("key") != self.key:
                    raise ValueError(f"it holds run {state.get('key')!r}")
            except Exception as err:  # a damaged file must fall back, not stop the run
                nxt = files[i + 1] if i + 1 < len(files) else None
                log.warning("%s: damaged checkpoint (%s); %s", path, err,
                            f"falling back to {nxt}" if nxt else "no earlier checkpoint, starting from scratch")
                continue
            self.last = path
            return state
        return None
