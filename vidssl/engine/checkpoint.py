"""Resumable training state: one checkpoint per epoch in a persist folder, loaded with weights_only=True."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from vidssl.io import atomic_path

log = logging.getLogger(__name__)


def config_key(obj: Any) -> str:
    """Stable short hash of the settings a checkpoint belongs to; a changed setting never resumes old state."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_state_dict(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """torch.save atomically, so an interrupted save never leaves a truncated checkpoint.

    Saved through a file object: given a path, torch names the archive inside after the (random) temporary
    file, so the same weights would give other bytes on every save, i.e. another DVC hash for
    models/pretrain/backbone.pt and a fine-tune that cannot resume from an unchanged backbone.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with weights_only=True (no pickle code execution)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint not found; run the stage that writes it first") from None


class Checkpointer:
    """Keeps ``last.pt`` in ``folder``; resumes only when the stored config key matches."""

    def __init__(self, folder: str | os.PathLike[str], key: str) -> None:
        self.path = Path(folder) / "last.pt"
        self.key = key

    def save(self, epoch: int, **state: Any) -> None:
        save_state_dict(self.path, {"key": self.key, "epoch": epoch, **state})

    def load(self) -> dict[str, Any] | None:
        """The saved state if it exists and belongs to this config, else None (training starts over)."""
        if not self.path.is_file():
            return None
        try:
            state = load_state_dict(self.path)
        except Exception as err:  # a damaged file must not stop a fresh start
            log.warning("%s: unreadable checkpoint (%s); starting from scratch", self.path, err)
            return None
        if state.get("key") != self.key:
            log.info("%s: checkpoint is for other settings; starting from scratch", self.path)
            return None
        return state
