"""Model registry: every evaluate registers the backbone with lineage; `champion` moves only on a better metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidssl.pipeline.registry import beats, list_versions, metric_value, model_name

ROOT = Path(__file__).resolve().parents[1]


def test_beats_is_strict_and_respects_direction() -> None:
    assert beats(0.6, 0.5, True) and not beats(0.5, 0.5, True) and not beats(0.4, 0.5, True)
    assert beats(0.4, 0.5, False) and not beats(0.6, 0.5, False)
    assert beats(0.1, None, True)  # no champion yet
    assert not beats(math.nan, 0.1, True) and not beats(math.inf, 0.1, True)  # a broken run never wins


def test_metric_value_names_a_missing_key() -> None:
    summary = {"retrieval": {"pretrained": {"top1": 0.25}}}
    assert metric_value(summary, "retrieval.pretrained.top1") == 0.25
    with pytest.raises(ValueError, match="retrieval.pretrained.top9.*'top9'"):
        metric_value(summary, "retrieval.pretrained.top9")
    with pytest.raises(ValueError, match="not a number"):
        metric_value(summary, "retrieval.pretrained")


def test_model_name_placeholders() -> None:
    assert model_name("vidssl-{backbone}-{dataset}", "iic", "r3d", "ucf101") == "vidssl-r3d-ucf101"
    with pytest.raises(ValueError, match="registry.model.*unknown placeholder"):
        model_name("vidssl-{arch}", "iic", "r3d", "ucf101")


def _workspace(tmp: Path, top1: float) -> None:
    """The evaluate stage's inputs: three stage metric files and a backbone file."""
    (tmp / "metrics").mkdir(exist_ok=True)
    ret = {n: {f"top{k}": v for k, v in zip((1, 5, 10, 20, 50), (t, t + .1, t + .2, t + .3, t + .4))}
           for n, t in (("random_init", 0.1), ("pretrained", top1))}
    (tmp / "metrics" / "retrieve.json").write_text(json.dumps(ret))
    (tmp / "metrics" / "finetune.json").write_text(json.dumps({"pretrained": {"test_accuracy": 0.5},
                                                               "random_init": {"test_accuracy": 0.3}}))
    (tmp / "metrics" / "pretrain.json").write_text(json.dumps({"epochs": 2, "final_loss": 1.0, "seconds": 3.0}))
    (tmp / "models" / "pretrain").mkdir(parents=True, exist_ok=True)
    (tmp / "models" / "pretrain" / "backbone.pt").write_bytes(f"weights {top1}".encode())


def test_each_evaluate_registers_and_champion_moves_only_on_a_better_metric(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from vidssl.cli import app
    from vidssl.config import load_params
    from vidssl.pipeline.stages import run_evaluate

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages:\n  pretrain:\n    cmd: python stages/pretrain.py\n")
    cfg = load_params(tmp_path / "params.yaml")
    client = mlflow.MlflowClient(uri)
    name = "vidssl-tiny-synthetic"
    champions = []
    for i, top1 in enumerate((0.40, 0.30, 0.55)):  # better, worse, better
        monkeypatch.setenv("VIDSSL_PIPELINE_ID", f"flow-{i}")
        monkeypatch.setenv("VIDSSL_FLOW_RUN_ID", f"flow-{i}")
        _workspace(tmp_path, top1)
        run_evaluate(cfg, Path("metrics"), Path("reports/results.md"), Path("metrics/summary.json"))
        champions.append(str(client.get_model_version_by_alias(name, "champion").version))
        assert str(client.get_model_version_by_alias(name, "candidate").version) == str(i + 1)
    assert champions == ["1", "1", "3"]
    v3 = client.get_model_version(name, "3")
    for tag in ("git_commit", "dvc.lock.pretrain", "dataset_digest", "torch", "cuda"):
        assert tag in v3.tags, tag
    assert v3.tags["flow_run_id"] == "flow-2" and v3.tags["metric.retrieval.pretrained.top1"] == "0.55"
    # The evaluate run's summary names its MLflow runs (for `dvc exp show`); the parent carries summary + report.
    summary = json.loads((tmp_path / "metrics" / "summary.json").read_text())
    parent = client.get_run(summary["mlflow"]["pipeline_run_id"])
    assert parent.data.metrics["retrieval.pretrained.top1"] == pytest.approx(0.55)
    assert summary["mlflow"]["model_version"] == "3"
    assert "results.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # The version's source is a file that exists in the store.
    local = mlflow.artifacts.download_artifacts(v3.source, dst_path=str(tmp_path / "dl"), tracking_uri=uri)
    assert Path(local).read_bytes() == b"weights 0.55"

    rows = list_versions(client, name)
    assert [(r["version"], r["aliases"]) for r in rows] == [(1, []), (2, []), (3, ["candidate", "champion"])]
    out = CliRunner().invoke(app, ["models", "--store", uri]).output
    lines = [line for line in out.splitlines() if line.startswith(name)]
    assert len(lines) == 3 and "candidate,champion" in lines[2] and "0.55" in lines[2]


def test_champion_moves_only_when_it_is_beaten_on_the_metric_chosen_now(tmp_path: Path) -> None:
    """A rerun that scores the same keeps the champion; after `registry.metric` changes, a new version must still
    beat the champion's own value of the new metric (every version carries every summary metric)."""
    import mlflow

    from vidssl.pipeline.registry import register_backbone

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("registry", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp).info.run_id
    (tmp_path / "backbone.pt").write_bytes(b"weights")
    client.log_artifact(run, str(tmp_path / "backbone.pt"))
    top1, top5 = "retrieval.pretrained.top1", "retrieval.pretrained.top5"

    def register(a: float, b: float, metric: str = top1) -> bool:
        return register_backbone(client, "m", run, "backbone.pt", {top1: a, top5: b}, metric, True, {})["champion"]

    assert register(1 / 3, 0.9)  # v1: the first version is the champion
    assert not register(1 / 3, 0.5)  # v2 scores the same top1 (stored as 0.333333): no move
    assert not register(0.1, 0.8, top5)  # v3, judged by top5 now, is below v1's 0.9
    assert register(0.1, 0.95, top5)  # v4 beats it
    assert str(client.get_model_version_by_alias("m", "champion").version) == "4"
    assert str(client.get_model_version_by_alias("m", "candidate").version) == "4"
