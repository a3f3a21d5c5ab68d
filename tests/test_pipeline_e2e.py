"""End to end: `dvc repro` of the real dvc.yaml on a tiny config, then DVC's rerun rules and MLflow's run tree.

Runs in a throwaway git+DVC copy of the workspace files (dvc.yaml, stages/, vidssl/ sources for dependency
hashing); the stage processes import the installed vidssl package.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tinyrepo import tiny_repo


def _dvc(repo: Path, *args: str) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"}
    env.pop("VIDSSL_PIPELINE_ID", None)
    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.run([str(dvc), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_repo(tmp_path_factory.mktemp("pipeline"))


@pytest.mark.slow
def test_repro_runs_every_stage_then_nothing(repo: Path) -> None:
    out = _dvc(repo, "repro")
    assert _ran(out) == ["synth", "extract", "lists", "validate", "pretrain", "finetune", "retrieve", "evaluate"]
    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    for name in ("random_init", "pretrained"):
        assert set(summary["retrieval"][name]) >= {"top1", "top5", "top10", "top20", "top50"}
        assert 0 <= summary["finetune"][name]["test_accuracy"] <= 1
    report = (repo / "reports" / "results.md").read_text()
    assert "| random init |" in report and "| pretrained |" in report
    assert (repo / "features" / "pretrained" / "test.npz").is_file()
    assert list((repo / "models" / "pretrain_state").glob("*/e*-s*-*.pt"))  # per run key, checksummed
    extract = json.loads((repo / "reports" / "extract.json").read_text())
    assert extract["counts"]["extracted"] == 32 and extract["counts"].get("quarantined", 0) == 0
    assert "metrics/summary.json" in _dvc(repo, "metrics", "show")
    assert _ran(_dvc(repo, "repro")) == []


@pytest.mark.slow
def test_mlflow_has_one_parent_with_nested_stage_runs(repo: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vidssl").experiment_id])
    parents = [r for r in runs if r.data.tags.get("vidssl.role") == "pipeline"]
    assert len(parents) == 1
    stages = {r.data.tags["vidssl.stage"]: r for r in runs if "vidssl.stage" in r.data.tags}
    assert set(stages) == {"synth", "extract", "lists", "validate", "pretrain", "finetune", "retrieve", "evaluate"}
    for run in stages.values():
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.end_time <= parents[0].info.end_time  # the parent ends after its children
    reports = {stage: {a.path for a in client.list_artifacts(stages[stage].info.run_id, "reports")}
               for stage in ("synth", "extract", "lists", "validate")}
    assert reports == {"synth": {"reports/synth.json"}, "extract": {"reports/extract.json"},
                       "lists": {"reports/lists.json"},
                       "validate": {"reports/validation.json", "reports/validation.md"}}
    assert stages["lists"].data.metrics["videos.test"] > 0 and stages["extract"].data.metrics["videos.extracted"] == 32
    assert {a.path for a in client.list_artifacts(stages["finetune"].info.run_id, "weights/pretrained")} == {
        "weights/pretrained/classifier.pt"}  # the fine-tuned model
    assert "results.md" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    pre = stages["pretrain"]
    assert len(client.get_metric_history(pre.info.run_id, "loss")) == 2  # one point per epoch
    assert pre.data.params["pretrain.method"] == "iic"
    names = {a.path for a in client.list_artifacts(pre.info.run_id)}
    assert {"pretrain_loss.png", "backbone.pt"} <= names


def _set(repo: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_a_finetune_param_reruns_only_finetune_and_evaluate(repo: Path) -> None:
    _set(repo, "finetune", "lr", 0.02)
    assert _ran(_dvc(repo, "repro")) == ["finetune", "evaluate"]


@pytest.mark.slow
def test_a_synth_param_reruns_everything_downstream(repo: Path) -> None:
    _set(repo, "synth", "seed", 1)
    assert _ran(_dvc(repo, "repro")) == ["synth", "extract", "lists", "validate", "pretrain", "finetune",
                                         "retrieve", "evaluate"]
