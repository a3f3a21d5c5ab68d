"""Diagnostics: clip variants, the background gap on known predictions, and a run over real packs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidssl.config import parse_params
from vidssl.evaluation.diagnose import (
    VARIANTS, background_gap, clip_transform, diagnose, diagnose_table, flat_metrics, shuffled_order,
)


def test_clip_variants_edit_time_only() -> None:
    x = torch.arange(2 * 3 * 6 * 2 * 2, dtype=torch.float32).view(2, 3, 6, 2, 2)
    assert clip_transform("original", 6) is None
    assert torch.equal(clip_transform("reversed", 6)(x)[:, :, 0], x[:, :, 5])
    frozen = clip_transform("frozen", 6)(x)
    assert all(torch.equal(frozen[:, :, t], x[:, :, 3]) for t in range(6))
    perm = shuffled_order(6, 0)
    assert sorted(perm.tolist()) == list(range(6)) and all(perm[t] != t for t in range(6))  # every frame moves
    shuffled = clip_transform("shuffled", 6, 0)(x)
    assert torch.equal(shuffled, x[:, :, perm]) and torch.equal(shuffled.sort(2).values, x.sort(2).values)
    with pytest.raises(ValueError, match="unknown clip variant"):
        clip_transform("sideways", 6)


def test_background_gap_on_known_predictions() -> None:
    # Training ties class 0 to background "a" and class 1 to "b" (one stray "b" in class 0).
    train_y = np.array([0, 0, 0, 1, 1])
    train_bg = ["a", "a", "b", "b", "b"]
    # Test: videos 0, 2 are biased (own class's family); 1, 3 are not. A scene model gets the biased ones right
    # and the unbiased ones wrong: 100% vs 0%, gap +1.
    true = np.array([0, 0, 1, 1])
    test_bg = ["a", "b", "b", "a"]
    pred = np.array([0, 1, 1, 0])
    g = background_gap(pred, true, test_bg, train_y, train_bg)
    assert g == {"biased": 1.0, "unbiased": 0.0, "gap": 1.0, "n_biased": 2, "n_unbiased": 2}
    g = background_gap(true, true, test_bg, train_y, train_bg)  # a motion model: no gap
    assert g["gap"] == 0.0


def test_diagnose_over_real_packs(tiny_lists: Path, tmp_path: Path) -> None:
    cfg = parse_params({"seed": 1, "model": {"backbone": "tiny", "width": 4},
                        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                        "pretrain": {"method": "simclr"},
                        "retrieve": {"clips": 2, "workers": 0, "feature": "gap"},
                        "finetune": {"epochs": 1, "batch_size": 4, "workers": 0, "test_clips": 2}})
    from vidssl.engine.train import finetune

    finetune(cfg, tiny_lists, None, tmp_path / "s", tmp_path / "ft")
    # Each video's background: "a" for the first two of each class, else "b".
    vids = [line.split(",")[0] for n in ("pretrain", "test") for line in (tiny_lists / f"{n}.csv").read_text()
            .splitlines()[1:]]
    synth = {"videos": [{"path": f"{v.split('_')[1]}/{v}.mp4", "background": "a" if v.endswith(("01_c01", "02_c01"))
                         else "b", "shape": "square"} for v in vids]}
    (tmp_path / "synth.json").write_text(json.dumps(synth))
    r = diagnose(cfg, tiny_lists, None, tmp_path / "ft" / "classifier.pt", tmp_path / "synth.json")
    assert set(r["retrieval_top1"]) == set(VARIANTS) == set(r["finetune_accuracy"])
    assert all(0 <= v <= 1 for v in [*r["retrieval_top1"].values(), *r["finetune_accuracy"].values()])
    assert set(r["background"]) == {"retrieval", "finetune"}
    table = diagnose_table(r)
    assert "| reversed |" in table and "gap (points)" in table
    assert "background.finetune.gap" in flat_metrics(r) or np.isnan(r["background"]["finetune"]["gap"])


def test_run_diagnose_writes_table_json_and_mlflow_metrics(tiny_lists: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from vidssl.pipeline.stages import run_diagnose
    from vidssl.pipeline.tracking import open_client

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = parse_params({"seed": 1, "model": {"backbone": "tiny", "width": 4},
                        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                        "pretrain": {"method": "simclr"}, "retrieve": {"clips": 1, "workers": 0, "feature": "gap"}})
    r = run_diagnose(cfg, tiny_lists, None, None, None, tmp_path / "d.md", tmp_path / "d.json")
    assert "| frozen |" in (tmp_path / "d.md").read_text()
    assert json.loads((tmp_path / "d.json").read_text())["retrieval_top1"] == r["retrieval_top1"]
    client, _, exp = open_client(tmp_path)
    run = client.search_runs([exp], "tags.`vidssl.stage` = 'diagnose'")[0]
    assert run.data.metrics["retrieval_top1.reversed"] == pytest.approx(r["retrieval_top1"]["reversed"])


def test_diagnose_scores_a_linear_probe_as_the_probe_did(tiny_lists: Path, tmp_path: Path) -> None:
    """finetune.protocol linear leaves a probe head on the frozen backbone; diagnose runs the two as one
    classifier, and on the unedited clips it scores what the probe scored."""
    from vidssl.engine.checkpoint import save_state_dict
    from vidssl.engine.train import build_model_backbone
    from vidssl.evaluation.linear import linear_probe

    cfg = parse_params({"seed": 1, "model": {"backbone": "tiny", "width": 4},
                        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                        "pretrain": {"method": "simclr"}, "retrieve": {"clips": 1, "workers": 0, "feature": "gap"},
                        "finetune": {"protocol": "linear", "epochs": 5, "workers": 0, "test_clips": 2}})
    torch.manual_seed(3)
    save_state_dict(tmp_path / "bb.pt", {"backbone": build_model_backbone(cfg).state_dict()})
    probe = linear_probe(cfg, tiny_lists, tmp_path / "bb.pt", tmp_path / "probe")
    r = diagnose(cfg, tiny_lists, tmp_path / "bb.pt", tmp_path / "probe" / "classifier.pt")
    assert r["finetune_accuracy"]["original"] == probe["test_accuracy"]
    assert set(r["finetune_accuracy"]) == set(VARIANTS)


class _Shapes(torch.nn.Module):
    """A classifier stand-in that records each batch's (clips, frames) and answers class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.shape[0], x.shape[2]))
        return torch.tensor([[1.0, 0.0]]).expand(len(x), 2) + self.w


def test_diagnose_tests_the_classifier_on_its_protocols_views(tiny_lists: Path) -> None:
    """The edited clips are the finetune stage's test views: mlfo's half-overlapping windows in ten crops, be's
    64-frame windows (one per 24-frame video), each edit drawn for that clip length."""
    from vidssl.data.clips import read_list
    from vidssl.engine.protocols import get_protocol
    from vidssl.engine.train import clip_spec, evaluate_videos
    from vidssl.evaluation.diagnose import _classify

    cfg = parse_params({"seed": 1, "model": {"backbone": "tiny", "width": 4},
                        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
                        "finetune": {"batch_size": 4, "workers": 0, "test_clips": 2}})
    test = read_list(tiny_lists / "test.csv")
    model = _Shapes()
    r = _classify(model, test, clip_spec(cfg), cfg, "reversed", get_protocol("mlfo"), evaluate_videos)
    assert model.seen == [(20, 8)] * 4 and r["accuracy"] == 0.5  # windows at 0 and 7, x 10 crops; class 0 twice
    model.seen.clear()
    _classify(model, test, clip_spec(cfg), cfg, "shuffled", get_protocol("be"), evaluate_videos)
    assert model.seen == [(1, 64)] * 4
    model.seen.clear()
    _classify(model, test, clip_spec(cfg), cfg, "frozen", None, evaluate_videos)  # a linear probe: test_clips
    assert model.seen == [(4, 8)] * 2  # two videos of two clips per batch
