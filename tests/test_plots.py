"""Evaluation plots: stratified t-SNE sample, and every figure rendered from a real retrieval over packs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidssl.config import parse_params
from vidssl.evaluation.plots import tsne_sample


def test_tsne_sample_keeps_every_class_in_proportion() -> None:
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    idx = tsne_sample(labels, 100, seed=0)
    counts = np.bincount(labels[idx])
    assert counts.tolist() == [90, 9, 1] and len(np.unique(idx)) == len(idx)
    assert tsne_sample(labels[:50], 100).tolist() == list(range(50))  # small sets: everything


def test_retrieval_plots_from_a_real_ranking(tiny_lists: Path, tmp_path: Path) -> None:
    from vidssl.pipeline.stages import retrieval_plots, retrieval_scores

    cfg = parse_params({"seed": 1, "model": {"backbone": "tiny", "width": 4},
                        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                        "pretrain": {"method": "simclr"},
                        "retrieve": {"clips": 2, "workers": 0, "feature": "gap", "topk": [1, 5]}})
    extras: dict = {"random_init": {}, "pretrained": {}}
    for name in extras:
        scores = retrieval_scores(cfg, tiny_lists, None, tmp_path / "f" / name, extras[name])
    ex = extras["pretrained"]
    assert len(ex["curve"]) == 6  # k = 1..6: the whole gallery of 6 train videos
    assert ex["curve"][-1] == 1.0 and scores["top1"] == ex["curve"][0] and scores["top5"] == ex["curve"][4]
    assert np.all(np.diff(ex["curve"]) >= 0)  # a top-k curve never falls
    paths = retrieval_plots(extras, ["Right", "Left"], tmp_path / "plots")
    assert [p.name for p in paths] == ["retrieval_topk.png", "tsne_test.png", "retrieval_examples.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_confusion_matrix_on_known_predictions(tmp_path: Path) -> None:
    import pytest

    from vidssl.evaluation.plots import confusion_matrix, plot_confusion

    # Class 0: two right, one taken for class 1; class 1: both right; class 2: its one video taken for 0;
    # class 3 has no test video (a zero row, not a division by zero).
    true, pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 0]
    np.testing.assert_allclose(confusion_matrix(true, pred, 4),
                               [[2 / 3, 1 / 3, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert np.trace(confusion_matrix(true, true, 4)) == 3  # perfect predictions: ones on the diagonal
    with pytest.raises(ValueError, match="label 5 is outside the 4 classes"):
        confusion_matrix([0, 5], [0, 1], 4)
    path = plot_confusion(true, pred, ["a", "b", "c", "d"], tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
