"""MLflow tracking: one parent run per pipeline id, nested stage runs, lineage tags, and tracking faults
(dead server, server lost mid-run, killed and resumed runs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vidssl.pipeline import tracking
from vidssl.pipeline.tracking import (PIPELINE_TAG, TrackingUnavailableError, check_tracking, dvc_lock_hashes,
                                      git_changes, git_commit, pipeline_id, stage_run, tracking_uri)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module (creating one runs MLflow's migrations: seconds each)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def store(store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    pid = f"flow-{request.node.name}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    monkeypatch.setenv("VIDSSL_PIPELINE_ID", pid)
    monkeypatch.setenv("VIDSSL_FLOW_RUN_ID", pid)
    monkeypatch.chdir(tmp_path)
    return store_uri


def _runs(uri: str, pid: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("vidssl")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{pid}'")


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


def test_commit_tag_is_the_commit_even_when_dvc_lock_changed(tmp_path: Path) -> None:
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True)  # noqa
    git("init", "-q")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = git("rev-parse", "HEAD").stdout.strip()
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # what `dvc repro` does mid-run
    assert git_commit(tmp_path) == sha and git_changes(tmp_path) == []
    (tmp_path / "params.yaml").write_text("seed: 2\n")  # a real local change is still reported, apart
    assert git_commit(tmp_path) == sha and git_changes(tmp_path) == ["params.yaml"]


def test_dvc_lock_hashes_are_per_stage_and_follow_the_entry(tmp_path: Path) -> None:
    lock = "schema: '2.0'\nstages:\n  a:\n    cmd: x\n    outs: [{path: o, md5: %s}]\n  b:\n    cmd: y\n"
    (tmp_path / "dvc.lock").write_text(lock % "1")
    first = dvc_lock_hashes(tmp_path)
    assert set(first) == {"a", "b"} and first["a"] != first["b"]
    (tmp_path / "dvc.lock").write_text(lock % "2")
    second = dvc_lock_hashes(tmp_path)
    assert second["a"] != first["a"] and second["b"] == first["b"]
    assert dvc_lock_hashes(tmp_path / "nowhere") == {}


def test_stages_nest_under_one_parent_run(store: str, tmp_path: Path) -> None:
    import mlflow

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    artifact = tmp_path / "curve.txt"
    artifact.write_text("1,2,3")
    for stage in ("pretrain", "finetune"):
        with stage_run(stage, {"lr": 0.1, "stage": stage}, root=tmp_path) as tracker:
            for step in range(3):
                tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            tracker.log_artifact(artifact)
            tracker.log_pipeline_metrics({"summary.top1": 0.5})
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name("vidssl")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the model-training view
    runs = _runs(store, os.environ["VIDSSL_PIPELINE_ID"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name.startswith("iic · tiny · synthetic · ")  # method, backbone, dataset, date
    assert parent.data.metrics["summary.top1"] == 0.5 and parent.info.status == "FINISHED"
    assert sorted(r.data.tags["vidssl.stage"] for r in children) == ["finetune", "pretrain"]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["lr"] == "0.1" and child.data.tags["git_commit"]
        assert child.data.tags["flow_run_id"] == os.environ["VIDSSL_FLOW_RUN_ID"]
        assert {"torch", "cuda", "dataset_digest"} <= set(child.data.tags)
        history = client.get_metric_history(child.info.run_id, "loss")
        assert [m.step for m in history] == [0, 1, 2]
        assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["curve.txt"]
        assert child.info.status == "FINISHED"
        assert parent.info.end_time >= child.info.end_time  # the parent ends after its children


def test_extract_and_validate_runs_carry_their_reports_even_when_the_gate_fails(store: str, tmp_path: Path) -> None:
    import mlflow

    from vidssl.pipeline.tracking import record_stage

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "extract.json").write_text('{"counts": {"extracted": 3, "quarantined": 1}}')
    (tmp_path / "reports" / "validation.json").write_text('{"success": false}')
    record_stage("extract", {"extract.short_side": 128}, [Path("reports/extract.json")],
                 {"videos.extracted": 3, "videos.quarantined": 1})
    record_stage("validate", {"clip.frames": 16}, [Path("reports/validation.json")], failed=True)
    client = mlflow.MlflowClient(store)
    runs = {r.data.tags["vidssl.stage"]: r for r in _runs(store, os.environ["VIDSSL_PIPELINE_ID"])
            if "vidssl.stage" in r.data.tags}
    assert runs["extract"].info.status == "FINISHED" and runs["validate"].info.status == "FAILED"
    assert runs["extract"].data.metrics == {"videos.extracted": 3, "videos.quarantined": 1}
    assert runs["validate"].data.params == {"clip.frames": "16"}
    for stage, report in (("extract", "extract.json"), ("validate", "validation.json")):
        assert [a.path for a in client.list_artifacts(runs[stage].info.run_id, "reports")] == [f"reports/{report}"]


def test_a_failing_stage_marks_its_run_failed(store: str, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with stage_run("pretrain", {}, root=tmp_path):
            raise RuntimeError("boom")
    assert {r.info.status for r in _runs(store, os.environ["VIDSSL_PIPELINE_ID"])} == {"FAILED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_server_stops_the_stage_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    worked = []
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match=uri):
        with stage_run("pretrain", {}, root=tmp_path):
            worked.append(True)
    assert worked == [] and time.monotonic() - t0 < 15


@pytest.mark.slow
def test_a_server_that_never_answers_fails_within_15_s() -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(TrackingUnavailableError, match=uri):
            check_tracking(uri)
        assert time.monotonic() - t0 < 15


def test_store_lost_mid_run_loses_no_metric(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails for epochs 1-3 and at the stage's end; everything arrives at the next stage's start."""
    import mlflow
    import requests

    real = tracking._apply
    down = {"on": False}

    def flaky(client, run_id, entry):  # noqa: ANN001
        if down["on"]:
            raise requests.exceptions.ConnectionError("Connection refused")
        return real(client, run_id, entry)

    monkeypatch.setattr(tracking, "_apply", flaky)
    monkeypatch.setattr(tracking, "RETRY_OFFLINE_S", 0.0)
    with stage_run("pretrain", {"lr": 0.1}, root=tmp_path) as tracker:
        run_id = tracker.run_id
        for epoch in range(6):
            down["on"] = epoch in (1, 2, 3)
            tracker.log_metrics({"loss": 10.0 - epoch}, step=epoch)
        down["on"] = True  # still down when the stage ends: the end itself is kept too
    outbox = tmp_path / "mlruns" / "outbox" / f"{run_id}.jsonl"
    assert outbox.is_file()
    client = mlflow.MlflowClient(store)
    assert client.get_run(run_id).info.status == "RUNNING"  # the end has not arrived yet
    down["on"] = False
    with stage_run("finetune", {}, root=tmp_path):  # the next start delivers what was kept
        pass
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(e, 10.0 - e) for e in range(6)]
    assert client.get_run(run_id).info.status == "FINISHED" and not outbox.exists()


def _start_server(db: Path, artifacts: Path, port: int) -> subprocess.Popen:
    """`vidssl server`'s command line, started in its own process group and waited for until healthy."""
    import urllib.request

    from vidssl.pipeline.servers import server_command, sqlite_uri

    proc = subprocess.Popen(server_command(sqlite_uri(db), str(artifacts), "127.0.0.1", port, workers=1),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180  # a cold start (imports, migrations) on a busy 2-core runner
    while True:
        assert proc.poll() is None, f"mlflow server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc
        except OSError:
            assert time.monotonic() < deadline, "mlflow server did not answer"
            time.sleep(0.3)


@pytest.mark.slow
def test_a_real_server_stopped_and_restarted_mid_run_loses_no_metric(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A real tracking server goes away between epochs 1 and 4 and comes back on the same port and database:
    every epoch's metric arrives, in order, and the run ends FINISHED with an empty outbox."""
    import mlflow

    from vidssl.pipeline.servers import stop_group

    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("VIDSSL_PIPELINE_ID", "outage")
    monkeypatch.setattr(tracking, "RETRY_OFFLINE_S", 0.0)  # try the server at every call, not every 30 s
    monkeypatch.chdir(tmp_path)
    db, artifacts = tmp_path / "server" / "mlflow.db", tmp_path / "server" / "artifacts"
    server = _start_server(db, artifacts, port)
    try:
        with stage_run("pretrain", {"lr": 0.1}, root=tmp_path) as tracker:
            run_id = tracker.run_id
            for epoch in range(6):
                if epoch == 2:
                    stop_group(server)
                if epoch == 4:
                    assert (tmp_path / "mlruns" / "outbox" / f"{run_id}.jsonl").is_file()  # epochs 2-3 kept
                    server = _start_server(db, artifacts, port)
                tracker.log_metrics({"loss": 10.0 - epoch}, step=epoch)
        history = mlflow.MlflowClient(uri).get_metric_history(run_id, "loss")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(e, 10.0 - e) for e in range(6)]
        assert sorted(m.timestamp for m in history) == [m.timestamp for m in sorted(history, key=lambda m: m.step)]
        assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
        assert not (tmp_path / "mlruns" / "outbox" / f"{run_id}.jsonl").exists()
    finally:
        stop_group(server)


_KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vidssl.pipeline.tracking import stage_run
    with stage_run(sys.argv[1], {"lr": 0.1}, root=Path(sys.argv[2])) as t:
        for epoch in range(2):
            t.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
        print(t.run_id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.slow
def test_killed_runs_are_continued_or_marked_killed(store: str, tmp_path: Path) -> None:
    import mlflow

    mlflow.MlflowClient(store).search_experiments()  # create the store first: two migrations at once would race
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {stage: subprocess.Popen([sys.executable, "-c", _KILLED, stage, str(tmp_path)], env=env,
                                     stdout=subprocess.PIPE, text=True)
             for stage in ("pretrain", "finetune")}
    killed = {}
    for stage, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL
        killed[stage] = out.strip()
    client = mlflow.MlflowClient(store)
    assert {client.get_run(r).info.status for r in killed.values()} == {"RUNNING"}  # what SIGKILL leaves
    # The rerun of pretrain with the same params continues its run; the dead finetune run is marked KILLED.
    with stage_run("pretrain", {"lr": 0.1}, root=tmp_path) as t:
        assert t.run_id == killed["pretrain"]
        for epoch in range(2, 4):
            t.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
    run = client.get_run(killed["pretrain"])
    assert run.info.status == "FINISHED" and run.data.tags["vidssl.resumed"] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2, 3]
    dead = client.get_run(killed["finetune"])
    assert dead.info.status == "KILLED" and "gone" in dead.data.tags["vidssl.end_reason"]
    # Other params are another training: a new run, not a continuation.
    with stage_run("pretrain", {"lr": 0.2}, root=tmp_path) as t:
        assert t.run_id != killed["pretrain"]
