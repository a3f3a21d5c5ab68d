"""Nearest-neighbour factor agreement: known neighbours, chance from frequencies, id matching, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vidssl.evaluation.retrieval import save_features
from vidssl.evaluation.factors import features_agreement, load_factors, neighbour_agreement, video_key


def _synth(path: Path, videos: list[tuple[str, str, str, str]]) -> Path:
    """synth.json with (class, stem, background, shape) records, as MotionShapes writes them."""
    recs = [{"path": f"{c}/{s}.mp4", "background": b, "shape": sh, "label": 0, "split": "train"}
            for c, s, b, sh in videos]
    path.write_text(json.dumps({"dataset": "MotionShapes", "videos": recs}))
    return path


def test_video_key_matches_ids_with_or_without_class_folder() -> None:
    assert video_key("MoveLeft/v_MoveLeft_g01_c01") == "v_MoveLeft_g01_c01"
    assert video_key("v_MoveLeft_g01_c01") == "v_MoveLeft_g01_c01"
    assert video_key("MoveLeft/v_MoveLeft_g01_c01.mp4") == "v_MoveLeft_g01_c01"


def test_partners_share_a_motion_pair(tmp_path: Path) -> None:
    videos = [("MoveLeft", "a", "noise", "ell"), ("MoveRight", "b", "noise", "ell"), ("MoveUp", "c", "noise", "ell")]
    f = load_factors(_synth(tmp_path / "s.json", videos))
    assert f["a"]["motion_pair"] == f["b"]["motion_pair"] != f["c"]["motion_pair"]
    assert f["a"]["class"] == "MoveLeft" and f["a"]["background"] == "noise"
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: no 'videos' list"):
        load_factors(tmp_path / "bad.json")


def test_agreement_counts_the_nearest_train_video(tmp_path: Path) -> None:
    factors = load_factors(_synth(tmp_path / "s.json", [
        ("MoveLeft", "t0", "noise", "ell"), ("MoveRight", "t1", "stripes", "tee"),
        ("MoveUp", "t2", "noise", "tee"), ("MoveDown", "t3", "stripes", "ell"),
        ("MoveLeft", "q0", "stripes", "ell"), ("MoveUp", "q1", "noise", "ell"),
    ]))
    train = np.eye(4)
    # q0 is nearest t1 (partner class, other shape), q1 nearest t2 (same class, same background).
    test = np.array([[0.1, 1.0, 0.0, 0.0], [0.0, 0.2, 1.0, 0.1]])
    out = neighbour_agreement(train, ["L/t0", "R/t1", "U/t2", "D/t3"], test, ["L/q0", "U/q1"], factors)
    assert out["class"]["agree"] == 0.5 and out["motion_pair"]["agree"] == 1.0
    assert out["background"]["agree"] == 1.0 and out["shape"]["agree"] == 0.0
    # chance = sum over values of p_test * p_train: classes L (1/2 * 1/4) + U (1/2 * 1/4) = 1/4
    assert out["class"]["chance"] == pytest.approx(0.25)
    assert out["motion_pair"]["chance"] == pytest.approx(0.5)  # pairs: L/R 2 of 4, U/D 2 of 4
    assert out["shape"]["chance"] == pytest.approx(0.5)  # test all ell, train half ell
    # Cosine, not dot product: scaling a train vector does not change the neighbour.
    again = neighbour_agreement(train * np.array([[1.0], [50.0], [1.0], [1.0]]), ["t0", "t1", "t2", "t3"],
                                test, ["q0", "q1"], factors)
    assert again == out
    with pytest.raises(KeyError, match="'q9' is not in synth.json"):
        neighbour_agreement(train, ["t0", "t1", "t2", "t3"], test, ["q0", "q9"], factors)


def test_features_agreement_reads_saved_retrieval_features(tmp_path: Path) -> None:
    synth = _synth(tmp_path / "s.json", [("Grow", "a", "noise", "ell"), ("Shrink", "b", "blobs", "tee"),
                                         ("Grow", "c", "blobs", "ell")])
    save_features(tmp_path / "f" / "train.npz", np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]),
                  ["Grow/a", "Shrink/b"])
    save_features(tmp_path / "f" / "test.npz", np.array([[0.9, 0.1]]), np.array([0]), ["Grow/c"])
    out = features_agreement(tmp_path / "f", synth)
    assert out["class"]["agree"] == 1.0 and out["background"]["agree"] == 0.0 and out["shape"]["agree"] == 1.0


def test_pooled_looks_are_a_factor_and_unique_looks_are_not(tmp_path: Path) -> None:
    recs = [{"path": f"{c}/{s}.mp4", "background": "noise", "shape": "ell", "label": 0, "split": "train",
             "appearance": look} for c, s, look in
            [("MoveLeft", "t0", 0), ("MoveUp", "t1", 1), ("MoveLeft", "q0", 1), ("MoveUp", "q1", 1)]]
    (tmp_path / "p.json").write_text(json.dumps({"videos": recs}))
    factors = load_factors(tmp_path / "p.json")
    # q0 is nearest t1: another class, the same look. q1 is nearest t0: same class, another look.
    out = neighbour_agreement(np.eye(2), ["t0", "t1"], np.array([[0.0, 1.0], [1.0, 0.0]]), ["q0", "q1"], factors)
    assert out["look"] == {"agree": 0.5, "chance": 0.5}  # test looks (1, 1) against train looks (0, 1)
    assert out["class"]["agree"] == 0.0
    # A look per video (appearance -1, or files written before looks were pooled): no "look" factor at all.
    for r in recs:
        r["appearance"] = -1
    (tmp_path / "u.json").write_text(json.dumps({"videos": recs}))
    unique = neighbour_agreement(np.eye(2), ["t0", "t1"], np.eye(2), ["q0", "q1"], load_factors(tmp_path / "u.json"))
    assert "look" not in unique and set(unique) == {"class", "motion_pair", "background", "shape"}
