"""Evaluation: clip features -> video features -> nearest-neighbour retrieval (VCOP/IIC protocol, §1.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vidssl.data.clips import ClipSpec, MultiClipDataset, VideoRecord, to_float


@torch.no_grad()
def video_features(method: Any, records: Sequence[VideoRecord], spec: ClipSpec, *, n_clips: int, feature: str,
                   merged: bool, batch_size: int = 4, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ``n_clips`` evenly spaced clips of each video's retrieval feature.

    Returns (N×D float32 features, N int labels).
    """
    from vidssl.engine.train import make_loader

    method.eval()
    dev = next(method.parameters()).device
    ds = MultiClipDataset(records, spec, n_clips)
    feats, labels = [], []
    for clips, label, _ in make_loader(ds, batch_size=batch_size, workers=workers, shuffle=False, seed=0):
        b, n = clips.shape[:2]
        f = method.embed(to_float(clips.flatten(0, 1).to(dev)), feature=feature, merged=merged)
        feats.append(f.view(b, n, -1).mean(1).float().cpu())
        labels.append(label)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def rankme(feats: np.ndarray, eps: float = 1e-7) -> float:
    """Effective rank of an N×D feature matrix: RankMe (Garrido et al., ICML 2023), exp of the entropy of its
    singular values normalised to sum 1 (plus ``eps``, as in the paper).

    Between 1 (every feature on one direction: a collapsed encoder) and min(N, D) (all directions used
    equally); scale-invariant, and computed on the features as retrieval compares them (not centred).

    Raises:
        ValueError: if ``feats`` is not a 2-D array with at least one non-zero entry.
    """
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or not np.any(feats):
        raise ValueError(f"rankme needs a non-zero N×D feature matrix, got shape {feats.shape}")
    s = np.linalg.svd(feats, compute_uv=False)
    p = s / s.sum() + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def center(feats: np.ndarray) -> np.ndarray:
    """Subtract the set's own mean feature (CoCLR/DualVar retrieval centres train and test separately, §1.2)."""
    return feats - feats.mean(axis=0, keepdims=True)


def cosine_similarity(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Q×G cosine similarities (a zero vector has similarity 0 to everything)."""
    def unit(x: np.ndarray) -> np.ndarray:
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm == 0, 1, norm)
    return unit(queries.astype(np.float64)) @ unit(gallery.astype(np.float64)).T


def topk_retrieval(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray,
                   query_labels: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Top-k retrieval accuracy: a query hits at k if any of its k nearest gallery videos shares its label.

    Ranking is by cosine distance, ascending (VCOP/IIC; test videos query the train videos). Ties keep
    gallery order (stable sort), so results do not depend on the platform.
    """
    sim = cosine_similarity(queries, gallery)
    order = np.argsort(-sim, axis=1, kind="stable")
    hits = gallery_labels[order] == query_labels[:, None]
    return {k: float(hits[:, : min(k, hits.shape[1])].any(axis=1).mean()) for k in ks}


def save_features(path: Path, feats: np.ndarray, labels: np.ndarray, ids: Sequence[str]) -> None:
    """Features as a compressed .npz (features, labels, video_ids), written atomically."""
    from vidssl.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, features=feats, labels=labels, video_ids=np.array(list(ids)))
