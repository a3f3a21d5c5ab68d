"""MLflow tracking: one parent run per pipeline id, nested stage runs with params, metrics, tags, artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidssl.pipeline.tracking import PIPELINE_TAG, pipeline_id, stage_run, tracking_uri


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("VIDSSL_PIPELINE_ID", "flow-123")
    monkeypatch.setenv("VIDSSL_FLOW_RUN_ID", "flow-123")
    return uri


def test_default_store_is_sqlite_under_mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_pipeline_id_prefers_the_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSSL_PIPELINE_ID", "abc")
    assert pipeline_id() == "abc"
    monkeypatch.delenv("VIDSSL_PIPELINE_ID")
    assert pipeline_id() != pipeline_id() or pipeline_id().startswith("dvc-")  # solo runs get fresh ids


def test_stages_nest_under_one_parent_run(store: str, tmp_path: Path) -> None:
    import mlflow

    artifact = tmp_path / "curve.txt"
    artifact.write_text("1,2,3")
    for stage in ("pretrain", "finetune"):
        with stage_run(stage, {"lr": 0.1, "stage": stage}, root=tmp_path) as tracker:
            for step in range(3):
                tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            tracker.log_artifact(artifact)
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("vidssl")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags[PIPELINE_TAG] == "flow-123"
    assert sorted(r.data.tags["vidssl.stage"] for r in children) == ["finetune", "pretrain"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.params["lr"] == "0.1" and child.data.tags["git_commit"]
        assert child.data.tags["flow_run_id"] == "flow-123"
        history = client.get_metric_history(child.info.run_id, "loss")
        assert [m.step for m in history] == [0, 1, 2]
        assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["curve.txt"]
        assert child.info.status == "FINISHED"


def test_a_failing_stage_marks_its_run_failed(store: str, tmp_path: Path) -> None:
    import mlflow

    with pytest.raises(RuntimeError):
        with stage_run("pretrain", {}, root=tmp_path):
            raise RuntimeError("boom")
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("vidssl").experiment_id])
    assert {r.info.status for r in runs} == {"FAILED"}
