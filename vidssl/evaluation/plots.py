"""Plots for the tracker and reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict[str, float]], keys: Sequence[str], path: Path, title: str) -> Path:
    """One line per metric key over epochs."""
    from vidssl.io import atomic_path

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key in keys:
        ax.plot(range(1, len(history) + 1), [h[key] for h in history], label=key)
    ax.set_xlabel("epoch")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def plot_confusion(true: Sequence[int], pred: Sequence[int], names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix."""
    import numpy as np

    from vidssl.io import atomic_path

    plt = _pyplot()
    n = len(names)
    cm = np.zeros((n, n))
    for t, p in zip(true, pred):
        cm[t, p] += 1
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.45 * n, 1 + 0.4 * n))
    ax.imshow(cm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
