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


def confusion_matrix(true: Sequence[int], pred: Sequence[int], n_classes: int) -> "np.ndarray":
    """n×n confusion, normalised per row: entry [t, p] is the share of class t's test videos predicted p (a
    class without test videos is a row of zeros).

    Raises:
        ValueError: on lists of different lengths or a label outside 0..n_classes-1 (named).
    """
    import numpy as np

    true, pred = np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    if true.shape != pred.shape:
        raise ValueError(f"confusion matrix: {len(true)} true labels but {len(pred)} predictions")
    bad = [int(x) for x in np.concatenate([true, pred]) if not 0 <= x < n_classes]
    if bad:
        raise ValueError(f"confusion matrix: label {bad[0]} is outside the {n_classes} classes of classes.csv")
    cm = np.zeros((n_classes, n_classes))
    np.add.at(cm, (true, pred), 1)
    return cm / np.maximum(cm.sum(1, keepdims=True), 1)


def plot_confusion(true: Sequence[int], pred: Sequence[int], names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (:func:`confusion_matrix`)."""
    from vidssl.io import atomic_path

    plt = _pyplot()
    n = len(names)
    cm = confusion_matrix(true, pred, n)
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


def _save(fig, path: Path) -> Path:
    from vidssl.io import atomic_path

    plt = _pyplot()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def plot_topk_curve(curves: dict[str, Sequence[float]], path: Path) -> Path:
    """Top-k retrieval accuracy against k (1..K), one line per backbone (e.g. random init, pretrained)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), [100 * c for c in curve], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("k (log scale)")
    ax.set_ylabel("top-k accuracy (%)")
    ax.set_title("retrieval: test queries train")
    ax.legend()
    return _save(fig, path)


TSNE_POINTS = 1000  # t-SNE of more points costs minutes on 2 CPU cores; a stratified sample keeps every class
TSNE_ITERS = 300  # sklearn's minimum is 250; the layout of a 1000-point sample settles well before 1000


def tsne_sample(labels: Sequence[int], max_points: int, seed: int = 0) -> "np.ndarray":
    """Indices of at most ``max_points`` videos, the same fraction of every class (at least one each)."""
    import numpy as np

    labels = np.asarray(labels)
    if len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    frac = max_points / len(labels)
    picked = [rng.choice(np.flatnonzero(labels == c), max(1, int(round(frac * (labels == c).sum()))), replace=False)
              for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def plot_tsne(feats: "np.ndarray", labels: Sequence[int], names: Sequence[str], path: Path, *,
              max_points: int = TSNE_POINTS, seed: int = 0) -> Path:
    """2-D t-SNE of video features (PCA to 50 dims first), coloured by class; a stratified sample above
    ``max_points`` videos."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    labels = np.asarray(labels)
    idx = tsne_sample(labels, max_points, seed)
    x = np.asarray(feats, dtype=np.float32)[idx]
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # cosine geometry, as retrieval ranks
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    xy = TSNE(2, init="pca", perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), max_iter=TSNE_ITERS,
              random_state=seed).fit_transform(x)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for c in np.unique(labels[idx]):
        m = labels[idx] == c
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=cmap(int(c) % cmap.N),
                   label=names[int(c)] if len(names) <= 20 else None)
    if len(names) <= 20:
        ax.legend(fontsize=6, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(idx)} video features, coloured by class")
    return _save(fig, path)


def plot_retrieval_examples(queries: Sequence["np.ndarray"], neighbours: Sequence[Sequence["np.ndarray"]],
                            hits: "np.ndarray", path: Path, titles: Sequence[str] | None = None) -> Path:
    """One row per query: its first frame, then its nearest gallery videos' first frames, framed green on a
    class hit and red on a miss. Frames are H×W×3 uint8."""
    plt = _pyplot()
    rows, cols = len(queries), 1 + max(len(n) for n in neighbours)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
    for i in range(rows):
        axes[i][0].imshow(queries[i])
        axes[i][0].set_ylabel(titles[i] if titles else f"query {i}", fontsize=6)
        for j in range(1, cols):
            ax = axes[i][j]
            if j - 1 < len(neighbours[i]):
                ax.imshow(neighbours[i][j - 1])
                colour = "#1a9850" if hits[i][j - 1] else "#d73027"
                for side in ax.spines.values():
                    side.set_edgecolor(colour)
                    side.set_linewidth(3)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_title("query", fontsize=7)
    for j in range(1, cols):
        axes[0][j].set_title(f"top-{j}", fontsize=7)
    return _save(fig, path)
