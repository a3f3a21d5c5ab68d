"""Evaluation: clip features -> video features -> nearest-neighbour retrieval (VCOP/IIC protocol, §1.2).

Ranking runs in bounded memory: queries and gallery are cut into chunks, each chunk's similarities are reduced
to its top k at once, and candidates are merged, so the whole query x gallery matrix is never held (240k
Kinetics videos would need 230 GB for it in float32). Ties are broken the same way everywhere: higher
similarity first, then lower gallery index (the order of the gallery list), so a result does not depend on the
chunk size, the platform or the index backend. Features that are not finite stop the ranking with an error: a
stable sort of NaN similarities would return the gallery in file order, which is class order, and score well.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vidssl.data.clips import ClipSpec, MultiClipDataset, VideoRecord, to_float
from vidssl.progress import Progress

CHUNK_BYTES = 256 * 2**20  # the largest similarity block held at once (float32)


@torch.no_grad()
def video_features(method: Any, records: Sequence[VideoRecord], spec: ClipSpec, *, n_clips: int, feature: str,
                   merged: bool, batch_size: int = 4, workers: int = 0, view: str = "rgb",
                   transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ``n_clips`` evenly spaced clips of each video's retrieval feature.

    ``view``: "rgb" (the clip) or "second" (the method's second view alone, e.g. IIC's residual frames);
    ``merged`` concatenates every view's feature instead. ``transform`` edits each float B×3×T×H×W batch of clips
    before the model sees it (the temporal diagnostics shuffle, reverse or freeze frames there).

    Returns (N×D float32 features, N int labels).

    Raises:
        ValueError: for ``view="second"`` on a method with one view.
    """
    from vidssl.engine.train import make_loader
    from vidssl.methods.base import pool_feature

    method.eval()
    dev = next(method.parameters()).device
    ds = MultiClipDataset(records, spec, n_clips)
    feats, labels = [], []
    loader = make_loader(ds, batch_size=batch_size, workers=workers, shuffle=False, seed=0)
    bar = Progress(len(loader), f"features of {len(ds)} videos", unit="batch", report_end=True)
    for clips, label, _ in loader:
        b, n = clips.shape[:2]
        x = to_float(clips.flatten(0, 1).to(dev))
        x = transform(x) if transform is not None else x
        if view == "second" and not merged:
            views = method.views(x) if hasattr(method, "views") else [x]
            if len(views) < 2:
                raise ValueError("retrieve.view: second, but this method has one view; use retrieve.view: rgb")
            f = pool_feature(method.backbone.forward_map(views[1]), feature)
        else:
            f = method.embed(x, feature=feature, merged=merged)
        feats.append(f.view(b, n, -1).mean(1).float().cpu())
        labels.append(label)
        bar.update(1)
    bar.close()
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


class NonFiniteFeatures(ValueError):
    """Features holding NaN or Inf: no score may be computed from them."""


def check_finite(feats: np.ndarray | torch.Tensor, name: str, ids: Sequence[str] | None = None) -> None:
    """Raise :class:`NonFiniteFeatures` naming ``name``, the count and the first bad row if any entry is not finite.

    Ranking NaN similarities silently returns the gallery in file order; this stops that before it can score.
    """
    x = torch.as_tensor(feats)
    if x.is_floating_point() and x.numel() and not bool(torch.isfinite(x).all()):
        bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1)
        first = int(torch.nonzero(bad)[0])
        who = f"row {first}" + (f", video {ids[first]!r}" if ids is not None else "")
        raise NonFiniteFeatures(
            f"{name}: {int(bad.sum())} of {len(x)} feature vectors hold NaN or Inf (first: {who}); the weights or "
            "the inputs are broken (check the training loss in metrics/), so no score is computed from them"
        )


def unit_rows(x: np.ndarray | torch.Tensor, name: str = "features") -> torch.Tensor:
    """Rows scaled to unit L2 norm, float32; a zero row stays zero (similarity 0 to everything).

    Raises:
        NonFiniteFeatures: naming ``name`` if an entry is NaN or Inf (seen in the norms: one pass, no extra).
    """
    t = (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).float()
    norm = torch.linalg.vector_norm(t, dim=1)
    tiny = torch.finfo(torch.float32).tiny
    if not bool(torch.isfinite(norm).all() and (norm > 1e-18).all()):
        check_finite(t, name)
        # Finite, but the squared norm overflows (entries past ~1e19) or underflows (below ~1e-19): divide each
        # row by its largest magnitude first. Zero rows come here too and stay zero.
        t = t / t.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
        norm = torch.linalg.vector_norm(t, dim=1)
    return t / norm.clamp_min(tiny)[:, None]


def cosine_similarity(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Q×G cosine similarities in float64 (a zero vector has similarity 0 to everything); small sets only.

    Raises:
        NonFiniteFeatures: if either set holds NaN or Inf.
    """
    check_finite(queries, "queries")
    check_finite(gallery, "gallery")

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm == 0, 1, norm)
    return unit(queries) @ unit(gallery).T


def _order(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's candidates sorted by similarity descending, equal similarities by gallery index ascending."""
    by_index = torch.argsort(idx, dim=1)
    vals, idx = vals.gather(1, by_index), idx.gather(1, by_index)
    by_value = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return vals.gather(1, by_value), idx.gather(1, by_value)


def _block_topk(sim: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic top ``k`` of each row of a similarity block: (values, column indices), ties to lower column.

    ``torch.topk`` picks arbitrarily among values tied with the k-th; asking for k + 1 shows which rows have such
    a tie at the cut, and only those rows are ranked again with a stable full sort.
    """
    kk = min(k + 1, sim.shape[1])
    vals, idx = torch.topk(sim, kk, dim=1)
    if kk > k:
        tied = torch.nonzero(vals[:, k - 1] == vals[:, k]).flatten()
        vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
        if len(tied):
            order = torch.sort(sim[tied], dim=1, descending=True, stable=True).indices[:, :k]
            idx[tied] = order
            vals[tied] = sim[tied].gather(1, order)
    return _order(vals, idx)


def ranking_device(device: str | torch.device | None = None) -> torch.device:
    """Where exact ranking runs: ``device`` if given, else the GPU when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _on(x: np.ndarray | torch.Tensor, dev: torch.device) -> torch.Tensor:
    return (x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))).to(dev)


def _exact_topk(q: torch.Tensor, g: torch.Tensor, k: int, chunk_bytes: int,
                device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top ``k`` by inner product, never holding more than ``chunk_bytes`` of similarities at once."""
    n_q, n_g = len(q), len(g)
    # Whole gallery rows when 64 query rows of it fit the budget (any gallery up to ~1M videos at 256 MB);
    # otherwise gallery blocks too, whose candidates are merged.
    g_rows = n_g if 64 * n_g * 4 <= chunk_bytes else max(k + 1, chunk_bytes // (4 * 64))
    q_rows = max(1, chunk_bytes // (4 * min(g_rows, n_g)))
    out_v, out_i = torch.empty(n_q, k), torch.empty(n_q, k, dtype=torch.long)
    dev = ranking_device(device)
    g = g.to(dev)  # on a GPU the gallery stays there and query blocks visit it; results come back per block
    for q0 in range(0, n_q, q_rows):
        qb = q[q0:q0 + q_rows].to(dev)
        best: tuple[torch.Tensor, torch.Tensor] | None = None
        for g0 in range(0, n_g, g_rows):
            v, i = _block_topk(qb @ g[g0:g0 + g_rows].T, min(k, len(g[g0:g0 + g_rows])))
            i = i + g0
            if best is not None:
                v, i = _order(torch.cat([best[0], v], 1), torch.cat([best[1], i], 1))
            best = (v[:, :k], i[:, :k])
        assert best is not None
        out_v[q0:q0 + len(qb)], out_i[q0:q0 + len(qb)] = best[0].cpu(), best[1].cpu()
    return out_v, out_i


def _faiss_topk(q: torch.Tensor, g: torch.Tensor, k: int, chunk_bytes: int,
                device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``k`` from a faiss flat inner-product index (exact), ties broken as :func:`_exact_topk` does."""
    try:
        import faiss
    except ImportError:
        raise ImportError("retrieve.index: faiss needs the faiss-cpu package (pip install faiss-cpu); "
                          "or set retrieve.index: exact") from None
    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g.numpy())
    kk = min(k + 1, len(g))
    v, i = index.search(q.numpy(), kk)
    vals, idx = torch.from_numpy(v), torch.from_numpy(i).long()
    if kk > k:
        # A tie at the cut: faiss's choice among tied entries is its own; rank those rows exactly instead.
        tied = torch.nonzero(vals[:, k - 1] == vals[:, k]).flatten()
        vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
        if len(tied):
            vals[tied], idx[tied] = _exact_topk(q[tied], g, k, chunk_bytes, device)
    return _order(vals, idx)


INDEXES = ("exact", "faiss")


def topk_neighbours(queries: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor, k: int, *,
                    index: str = "exact", chunk_bytes: int = CHUNK_BYTES,
                   device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` nearest gallery rows by cosine similarity: (Q×k similarities, Q×k gallery indices).

    Ranked by similarity descending, ties by gallery index ascending, in blocks of at most ``chunk_bytes``.
    ``index``: "exact" (torch, chunked, on ``device``: by default the GPU when there is one) or "faiss" (a flat
    inner-product index; exact as well, needs faiss-cpu).
    ``k`` larger than the gallery returns the whole gallery ranked.

    Raises:
        NonFiniteFeatures: if either set holds NaN or Inf.
        ValueError: on k < 1, an empty gallery, mismatched widths or an unknown index.
    """
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    if index not in INDEXES:
        raise ValueError(f"retrieve.index: unknown index {index!r}; choose from {list(INDEXES)}")
    if len(gallery) == 0:
        raise ValueError("retrieval gallery is empty; the train list has no videos")
    # Exact ranking on a GPU normalises there too: on the CPU the norms would cost more than the ranking itself.
    dev = ranking_device(device) if index == "exact" else torch.device("cpu")
    q, g = unit_rows(_on(queries, dev), "queries"), unit_rows(_on(gallery, dev), "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features are {q.shape[1]}-d but gallery features {g.shape[1]}-d")
    k = min(k, len(g))
    vals, idx = (_faiss_topk if index == "faiss" else _exact_topk)(q, g, k, chunk_bytes, device)
    if not bool(torch.isfinite(vals).all()):  # topk ranks NaN first, so any NaN similarity shows up here
        raise NonFiniteFeatures("retrieval: non-finite similarities; no score is computed from them")
    return vals.numpy(), idx.numpy()


def check_ks(ks: Sequence[int]) -> list[int]:
    """The top-k cut-offs, checked: at least one, each >= 1."""
    ks = list(ks)
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ValueError(f"retrieve.topk {ks}: give one or more whole numbers >= 1, e.g. [1, 5, 10, 20, 50]")
    return ks


def retrieval_hits(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray,
                   query_labels: np.ndarray, k: int, *, index: str = "exact", chunk_bytes: int = CHUNK_BYTES,
                   device: str | torch.device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Q×k bool: the i-th neighbour shares the query's label, Q×k gallery indices of the neighbours)."""
    _, idx = topk_neighbours(queries, gallery, k, index=index, chunk_bytes=chunk_bytes, device=device)
    return np.asarray(gallery_labels)[idx] == np.asarray(query_labels)[:, None], idx


def topk_curve(hits: np.ndarray) -> np.ndarray:
    """Top-k accuracy for every k from 1 to hits' width: a query counts from its first hit on."""
    return np.logical_or.accumulate(hits, axis=1).mean(axis=0)


def topk_retrieval(gallery: np.ndarray, gallery_labels: np.ndarray, queries: np.ndarray,
                   query_labels: np.ndarray, ks: Sequence[int], *, index: str = "exact",
                   chunk_bytes: int = CHUNK_BYTES, device: str | torch.device | None = None) -> dict[int, float]:
    """Top-k retrieval accuracy: a query hits at k if any of its k nearest gallery videos shares its label.

    Ranking is by cosine similarity, descending (VCOP/IIC; test videos query the train videos); equal
    similarities rank by gallery order, so results do not depend on the platform, chunking or index.

    Raises:
        NonFiniteFeatures: if either feature set holds NaN or Inf.
        ValueError: on an empty ``ks`` or a k < 1.
    """
    ks = check_ks(ks)
    hits, _ = retrieval_hits(gallery, gallery_labels, queries, query_labels, max(ks), index=index,
                             chunk_bytes=chunk_bytes, device=device)
    curve = topk_curve(hits)
    return {k: float(curve[min(k, len(curve)) - 1]) for k in ks}

def save_features(path: Path, feats: np.ndarray, labels: np.ndarray, ids: Sequence[str]) -> None:
    """Features as a compressed .npz (features, labels, video_ids), written atomically."""
    from vidssl.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, features=feats, labels=labels, video_ids=np.array(list(ids)))
