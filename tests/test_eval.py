"""Retrieval: cosine ranking, top-k hits, feature pooling and clip averaging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vidssl.data.clips import ClipSpec, read_list
from vidssl.evaluation.retrieval import center, cosine_similarity, rankme, save_features, topk_retrieval, video_features
from vidssl.methods.base import pool_feature


def test_topk_on_a_hand_made_example() -> None:
    gallery = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=float)
    g_labels = np.array([0, 1, 2, 3])
    queries = np.array([[1, 0.1], [0.1, 1], [-1, -0.2]])
    q_labels = np.array([2, 1, 0])
    # query 0 ranks gallery 0, 2, 1, 3 -> label 2 found at rank 2; query 1 finds label 1 at rank 1;
    # query 2 ranks 3, 1, 2, 0 (cosines -0.98 ... ) -> label 0 at rank 4.
    acc = topk_retrieval(gallery, g_labels, queries, q_labels, [1, 2, 3, 4, 50])
    assert acc == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 1.0, 50: 1.0}


def test_cosine_is_scale_free_and_symmetric() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(6, 7))
    s = cosine_similarity(a, b)
    assert np.allclose(s, cosine_similarity(3 * a, 0.5 * b))
    assert np.allclose(s, cosine_similarity(b, a).T)
    assert np.allclose(np.diag(cosine_similarity(a, a)), 1)
    assert np.all(cosine_similarity(np.zeros((1, 7)), b) == 0)


def test_retrieval_matches_a_brute_force_reference() -> None:
    rng = np.random.default_rng(1)
    g, q = rng.normal(size=(30, 8)), rng.normal(size=(12, 8))
    gl, ql = rng.integers(0, 4, 30), rng.integers(0, 4, 12)
    acc = topk_retrieval(g, gl, q, ql, [1, 5])
    for k in (1, 5):
        hits = 0
        for i in range(len(q)):
            d = [1 - g[j] @ q[i] / np.linalg.norm(g[j]) / np.linalg.norm(q[i]) for j in range(len(g))]
            hits += ql[i] in gl[np.argsort(d, kind="stable")[:k]]
        assert acc[k] == hits / len(q)


def test_iic_pool_feature_is_9216_for_r3d_at_16x112() -> None:
    fmap = torch.rand(2, 512, 2, 7, 7)  # R3D conv5 at 16x112x112
    assert pool_feature(fmap, "pool").shape == (2, 9216)
    assert torch.allclose(pool_feature(fmap, "gap"), fmap.mean(dim=(2, 3, 4)))


class _Probe(torch.nn.Module):
    """A method stand-in whose feature is each clip's mean intensity, so averages are easy to check."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def embed(self, clips: torch.Tensor, feature: str, merged: bool) -> torch.Tensor:
        return clips.mean(dim=(1, 2, 3, 4))[:, None] * self.w


def test_video_feature_is_the_mean_over_clips(tiny_lists: Path, tmp_path: Path, caplog) -> None:
    records = read_list(tiny_lists / "test.csv")
    spec = ClipSpec(frames=8, stride=1, resize=40, crop=32)
    with caplog.at_level("INFO", logger="vidssl.progress"):
        feats, labels = video_features(_Probe(), records, spec, n_clips=4, feature="gap", merged=False,
                                       batch_size=3)
    done = [r.getMessage() for r in caplog.records if r.name == "vidssl.progress"]
    assert done == [m for m in done if m.startswith(f"features of {len(records)} videos 2/2 (100%)")] and done
    from vidssl.data.clips import MultiClipDataset, to_float

    ds = MultiClipDataset(records, spec, 4)
    for i in range(len(records)):
        clips, label, _ = ds[i]
        assert np.isclose(feats[i, 0], to_float(clips).mean(dim=(1, 2, 3, 4)).mean().item(), atol=1e-6)
        assert labels[i] == label
    save_features(tmp_path / "f.npz", feats, labels, [r.video_id for r in records])
    back = np.load(tmp_path / "f.npz")
    assert np.array_equal(back["features"], feats) and list(back["video_ids"]) == [r.video_id for r in records]


def test_centring_removes_a_set_level_shift_that_fools_plain_cosine() -> None:
    # Two classes differ along x. The test set as a whole is shifted (+1.4 along x, and a larger common y
    # offset), as a domain shift between splits would do. Plain cosine sends the class-1 query to class 0;
    # centring each set by its own mean (CoCLR/DualVar) recovers the class direction exactly.
    gallery = np.array([[1.0, 100.0], [-1.0, 100.0]])
    queries = np.array([[0.5, 150.0], [2.3, 150.0]])
    g_lab, q_lab = np.array([0, 1]), np.array([1, 0])
    np.testing.assert_allclose(center(gallery), [[1.0, 0.0], [-1.0, 0.0]])
    np.testing.assert_allclose(center(queries), [[-0.9, 0.0], [0.9, 0.0]])
    assert topk_retrieval(gallery, g_lab, queries, q_lab, [1])[1] == 0.5
    assert topk_retrieval(center(gallery), g_lab, center(queries), q_lab, [1])[1] == 1.0


def test_rankme_counts_the_directions_features_use() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(40, 40)))
    r, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    for k in (1, 3, 16):
        # k orthogonal directions used equally: k equal singular values, so the rank is k (up to eps).
        equal = q[:, :k] @ np.diag(np.full(k, 2.0)) @ r[:k]
        assert rankme(equal) == pytest.approx(k, rel=1e-4)
    collapsed = np.outer(rng.normal(size=40), rng.normal(size=16))  # every feature on one direction
    assert rankme(collapsed) == pytest.approx(1.0, abs=1e-3)
    x = rng.normal(size=(40, 16))
    assert rankme(3.5 * x) == pytest.approx(rankme(x))  # scale-free
    assert rankme(x @ r) == pytest.approx(rankme(x))  # rotation-free
    # The paper's formula written out: p = sigma / sum(sigma) + eps, exp of the entropy.
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert rankme(x) == pytest.approx(np.exp(-(p * np.log(p)).sum())) and 1 < rankme(x) < 16
    # Two singular values 3:1 -> p = (0.75, 0.25): exp(H) = 1 / (0.75^0.75 * 0.25^0.25) = 1.7548
    assert rankme(np.diag([3.0, 1.0])) == pytest.approx(1.7548, abs=1e-4)
    with pytest.raises(ValueError, match="non-zero N×D"):
        rankme(np.zeros((4, 3)))


# ---------------------------------------------------------------- bounded-memory ranking, ties, bad features

from vidssl.evaluation.retrieval import (  # noqa: E402
    NonFiniteFeatures, check_ks, retrieval_hits, topk_curve, topk_neighbours,
)


def test_duplicated_gallery_ties_rank_by_gallery_order_whatever_the_chunking() -> None:
    # Gallery rows 0, 3, 5 are the same vector (labels 2, 0, 1): a query along it ties all three. Whatever the
    # block sizes, the tie ranks 0, 3, 5; the fourth neighbour is row 1 (cosine 0.8) and row 2 (0.6) after it.
    base = np.array([1.0, 0.0])
    gallery = np.array([base, [0.8, 0.6], [0.6, 0.8], 2 * base, [0.0, 1.0], 0.5 * base, [-1.0, 0.0]])
    g_lab = np.array([2, 3, 3, 0, 4, 1, 5])
    for chunk in (4 * 1, 4 * 2, 4 * 3, 4 * 64 * 7, 2**28):
        vals, idx = topk_neighbours(np.array([[3.0, 0.0]]), gallery, 5, chunk_bytes=chunk)
        assert idx.tolist() == [[0, 3, 5, 1, 2]], chunk
        np.testing.assert_allclose(vals, [[1, 1, 1, 0.8, 0.6]], atol=1e-6)
    # Cut inside the tie: k=2 keeps the two earliest tied rows, so the label-1 row never counts.
    acc = topk_retrieval(gallery, g_lab, np.array([[1.0, 0.0]]), np.array([1]), [1, 2, 3])
    assert acc == {1: 0.0, 2: 0.0, 3: 1.0}


def test_every_query_gets_the_same_tie_order_in_a_gallery_of_copies() -> None:
    gallery = np.tile(np.array([[0.3, -0.2, 0.9]]), (50, 1))
    queries = np.random.default_rng(0).normal(size=(9, 3))
    for chunk in (4 * 5, 2**28):
        _, idx = topk_neighbours(queries, gallery, 7, chunk_bytes=chunk)
        assert (idx == np.arange(7)).all()


def test_chunked_ranking_equals_one_full_sort() -> None:
    rng = np.random.default_rng(3)
    g, q = rng.normal(size=(300, 16)), rng.normal(size=(150, 16))
    ref = np.argsort(-cosine_similarity(q, g), axis=1, kind="stable")[:, :20]
    for chunk in (4 * 25, 4 * 64 * 30, 4 * 1000, 2**28):  # gallery blocks of 21, 30, then query blocks only
        _, idx = topk_neighbours(q, g, 20, chunk_bytes=chunk)
        np.testing.assert_array_equal(idx, ref)
    # Exact copies tie within one block of gallery rows (the default up to ~1M gallery videos): the same
    # float32 dot product for each copy. Across gallery blocks BLAS may round a copy's product one ulp apart.
    g[100:110] = g[5]
    ref = np.argsort(-cosine_similarity(q, g).round(6), axis=1, kind="stable")[:, :20]
    for chunk in (4 * 64 * 300, 4 * 100 * 300, 2**28):  # query blocks of 64, 100, all
        _, idx = topk_neighbours(q, g, 20, chunk_bytes=chunk)
        np.testing.assert_array_equal(idx, ref)


def test_faiss_index_ranks_as_the_exact_one() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    g, q = rng.normal(size=(200, 12)).astype(np.float32), rng.normal(size=(30, 12)).astype(np.float32)
    g[50:60] = g[7]
    q[:5] = g[7]  # these queries tie 11 rows at the top: the cut at k=5 falls inside the tie
    ve, ie = topk_neighbours(q, g, 5, index="exact")
    vf, i_f = topk_neighbours(q, g, 5, index="faiss")
    np.testing.assert_array_equal(i_f, ie)
    np.testing.assert_allclose(vf, ve, atol=1e-5)
    assert ie[0].tolist() == [7, 50, 51, 52, 53]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["queries", "gallery"])
def test_non_finite_features_stop_retrieval(bad: float, where: str) -> None:
    # Before the guard, NaN similarities sorted stably returned the gallery in file order (class order here)
    # and scored above chance; now nothing is scored.
    g = np.repeat(np.eye(4), 3, axis=0)
    lab = np.repeat(np.arange(4), 3)
    q = g.copy()
    (q if where == "queries" else g)[4, 1] = bad
    with pytest.raises(NonFiniteFeatures, match=f"{where}: 1 of 12 feature vectors hold NaN or Inf .*row 4"):
        topk_retrieval(g, lab, q, lab, [1, 5])
    with pytest.raises(NonFiniteFeatures):
        cosine_similarity(q, g)


def test_huge_finite_features_do_not_overflow() -> None:
    g = np.array([[3e38, 0.0], [0.0, 3e38]], dtype=np.float32)
    _, idx = topk_neighbours(np.array([[0.0, 1e-30]], dtype=np.float32), g, 1)
    assert idx.tolist() == [[1]]


def test_impossible_k_is_refused() -> None:
    g = np.eye(3)
    for ks in ([], [0], [-3], [1, 0]):
        with pytest.raises(ValueError, match="retrieve.topk"):
            topk_retrieval(g, np.arange(3), g, np.arange(3), ks)
    with pytest.raises(ValueError, match="k >= 1"):
        topk_neighbours(g, g, 0)
    assert check_ks([1, 5]) == [1, 5]


def test_topk_curve_counts_each_query_from_its_first_hit() -> None:
    # Known neighbours: query 0's hit is 1st, query 1's 3rd, query 2 never in the gallery's top 4.
    hits = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_allclose(topk_curve(hits), [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    g = np.array([[1.0, 0], [0, 1.0], [0.7, 0.7]])
    h, idx = retrieval_hits(g, np.array([0, 1, 2]), np.array([[0.9, 0.1]]), np.array([2]), 3)
    assert idx.tolist() == [[0, 2, 1]] and h.tolist() == [[False, True, False]]


def test_unit_rows_keep_direction_at_any_finite_scale() -> None:
    from vidssl.evaluation.retrieval import unit_rows

    x = np.array([[3e30, 4e30], [3e-30, 4e-30], [0.0, 0.0], [3.0, -4.0]], dtype=np.float32)
    np.testing.assert_allclose(unit_rows(x).numpy(), [[0.6, 0.8], [0.6, 0.8], [0, 0], [0.6, -0.8]], atol=1e-6)


class _TwoViews(torch.nn.Module):
    """A stand-in with a second view (1 - x) and a backbone whose map is channel 0: gap = its mean intensity."""

    class _Map(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward_map(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * self.w

    def __init__(self) -> None:
        super().__init__()
        self.backbone = self._Map()

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_map(x)

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, 1 - x]

    def embed(self, clips: torch.Tensor, feature: str, merged: bool) -> torch.Tensor:
        inputs = self.views(clips) if merged else [clips]
        return torch.cat([pool_feature(self.forward_map(x), feature) for x in inputs], dim=1)


def test_second_view_and_clip_transform(tiny_lists: Path) -> None:
    records = read_list(tiny_lists / "test.csv")
    spec = ClipSpec(frames=8, stride=1, resize=40, crop=32)
    kw = dict(n_clips=2, feature="gap", batch_size=2)
    rgb, _ = video_features(_TwoViews(), records, spec, merged=False, **kw)
    second, _ = video_features(_TwoViews(), records, spec, merged=False, view="second", **kw)
    both, _ = video_features(_TwoViews(), records, spec, merged=True, **kw)
    np.testing.assert_allclose(second, 1 - rgb, atol=1e-6)
    np.testing.assert_allclose(both, np.concatenate([rgb, 1 - rgb], axis=1), atol=1e-6)
    zeroed, _ = video_features(_TwoViews(), records, spec, merged=False, transform=lambda x: 0 * x, **kw)
    assert not zeroed.any()
    with pytest.raises(ValueError, match="retrieve.view"):
        video_features(_Probe(), records, spec, merged=False, view="second", **kw)


@pytest.mark.parametrize("ks", [[], [0], [-3], [1, 0]])
def test_impossible_topk_is_refused_when_params_are_read(ks: list) -> None:
    from vidssl.config import ConfigError, parse_params

    with pytest.raises(ConfigError, match="retrieve.topk"):
        parse_params({"retrieve": {"topk": ks}})


def test_the_gallery_is_the_whole_training_split_validation_videos_included(tiny_lists: Path,
                                                                              tmp_path: Path) -> None:
    """IIC ranks test videos against every train-split video (retrieve_clips.py builds its gallery from the
    whole train list); the videos held out to select fine-tuned models (val.csv) stay in the gallery."""
    from vidssl.config import parse_params
    from vidssl.pipeline.stages import retrieval_scores

    lines = (tiny_lists / "train.csv").read_text().splitlines()
    (tiny_lists / "val.csv").write_text("\n".join([lines[0], lines[1]]) + "\n")
    (tiny_lists / "train.csv").write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    cfg = parse_params({"seed": 1, "model": {"backbone": "tiny", "width": 4},
                        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                        "pretrain": {"method": "simclr"},
                        "retrieve": {"clips": 1, "workers": 0, "feature": "gap", "topk": [1]}})
    extras: dict = {}
    retrieval_scores(cfg, tiny_lists, None, tmp_path / "f", extras)
    gallery = np.load(tmp_path / "f" / "train.npz")["video_ids"].tolist()
    pretrain = [row.split(",")[0] for row in (tiny_lists / "pretrain.csv").read_text().splitlines()[1:]]
    held_out = lines[1].split(",")[0]
    assert gallery == pretrain and len(gallery) == 6 and held_out in gallery
    assert extras["idx"].max() < 6 and extras["hits"].shape == (4, 6)  # every query ranks all six
