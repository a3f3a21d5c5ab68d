"""Linear probe: frozen features computed once, a BN + linear head, accuracy on known separable features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidssl.config import parse_params
from vidssl.evaluation import linear
from vidssl.evaluation.retrieval import NonFiniteFeatures


def _cfg(**over: object):
    return parse_params({
        "seed": 3, "model": {"backbone": "tiny", "width": 4},
        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
        "finetune": {"protocol": "linear", "epochs": 30, "workers": 0, "test_clips": 2, **over},
    })


def test_head_separates_known_classes() -> None:
    # Three classes on three axes plus small noise, one nuisance dimension with a large offset: the probe must
    # find the axes whatever the scale (its BatchNorm standardises), and classify held-out points exactly.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = np.eye(4)[y][:, :4] * 2.0 + 0.2 * rng.normal(size=(300, 4))
    x[:, 3] += 500.0
    head, history = linear.train_linear(x[:200], y[:200], 3, epochs=30, seed=0)
    import torch

    pred = head(torch.from_numpy(x[200:].astype(np.float32))).argmax(1).numpy()
    assert (pred == y[200:]).mean() == 1.0
    assert history[-1]["train_loss"] < history[0]["train_loss"] and len(history) == 30
    assert history[-1]["lr"] == pytest.approx(1.0 * 0.1**2)  # x0.1 at 18 and 24 of 30


def test_probe_extracts_features_once_whatever_the_epochs(tiny_lists: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = linear.backbone_features

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(linear, "backbone_features", counting)
    r = linear.linear_probe(_cfg(), tiny_lists, None, tmp_path / "o")
    assert len(calls) == 2 and r["epochs"] == 30  # train and test, once each
    assert len(r["pred"]) == 4 and 0 <= r["test_accuracy"] <= 1
    z = np.load(tmp_path / "o" / "features.npz")
    assert z["train_x"].shape[0] == 6 and z["test_x"].shape[0] == 4
    assert (tmp_path / "o" / "classifier.pt").is_file()


def test_probe_refuses_non_finite_features(tiny_lists: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(backbone, records, *a, **k):
        x = np.zeros((len(records), 8), dtype=np.float32)
        x[1, 2] = np.nan
        return x, np.zeros(len(records), dtype=np.int64)

    monkeypatch.setattr(linear, "backbone_features", broken)
    with pytest.raises(NonFiniteFeatures, match="linear-probe train features .* row 1, video 'v_Right_g04_c01'"):
        linear.linear_probe(_cfg(), tiny_lists, None, tmp_path / "o")


def test_probe_trains_on_the_whole_training_split(tiny_lists: Path, tmp_path: Path) -> None:
    """No model is selected on validation videos, so none are held out: with one moved from train.csv to
    val.csv, the head still trains on all six train-split videos (pretrain.csv), as CoCLR's probe does."""
    lines = (tiny_lists / "train.csv").read_text().splitlines()
    (tiny_lists / "val.csv").write_text("\n".join(lines[:2]) + "\n")
    (tiny_lists / "train.csv").write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    linear.linear_probe(_cfg(epochs=2), tiny_lists, None, tmp_path / "o")
    z = np.load(tmp_path / "o" / "features.npz")
    assert z["train_x"].shape[0] == 6 and z["test_x"].shape[0] == 4
