"""Tests for flows/pipeline.py and flows/deploy.py on a tiny throwaway DVC project (real dvc and Prefect)."""

from __future__ import annotations

import fcntl
import importlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# c is declared first on purpose: the flow must order stages by their deps, not by the file.
ABC = {
    "c": {"cmd": 'cat b.txt > c.txt && printf %s "$VIDSSL_PIPELINE_ID" > id.txt',
          "deps": ["b.txt"], "outs": ["c.txt", "id.txt"]},
    "a": {"cmd": "cat src.txt > a.txt", "deps": ["src.txt"], "outs": ["a.txt"]},
    "b": {"cmd": "cat a.txt extra.txt > b.txt", "deps": ["a.txt", "extra.txt"], "outs": ["b.txt"]},
}


@pytest.fixture(scope="session")
def flows(tmp_path_factory: pytest.TempPathFactory):
    """flows.pipeline and flows.deploy, imported with PREFECT_HOME in a tmp dir, under Prefect's harness."""
    home = tmp_path_factory.mktemp("prefect-home")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                           "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1"}.items():
            mp.setenv(key, value)
        mp.syspath_prepend(str(ROOT))
        pipeline, deploy = importlib.import_module("flows.pipeline"), importlib.import_module("flows.deploy")
        from prefect.settings import PREFECT_HOME, temporary_settings
        from prefect.testing.utilities import prefect_test_harness

        with temporary_settings(updates={PREFECT_HOME: home}), prefect_test_harness(120):
            yield SimpleNamespace(pipeline=pipeline, deploy=deploy)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty git + DVC repository, initialised once and copied per test."""
    repo = tmp_path_factory.mktemp("template") / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    return repo


def make_project(template: Path, dest: Path, stages: dict, files: dict[str, str] | None = None) -> Path:
    shutil.copytree(template, dest)
    (dest / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    for name, text in (files or {}).items():
        (dest / name).write_text(text)
    return dest


def task_run_counts(flow_run_id) -> dict[str, int]:
    """Attempts per task run name of one flow run, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run.run_count for run in runs}


def test_stage_order_selection_and_error_classes(flows, tmp_path):
    fp = flows.pipeline
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": ABC}, sort_keys=False))
    assert fp.stage_order(tmp_path) == ["a", "b", "c"]
    assert fp.select_stages(tmp_path, ["c", "a"]) == ["a", "c"]  # pipeline order, not argument order
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['zzz'\].*choose from \['a', 'b', 'c'\]"):
        fp.select_stages(tmp_path, ["a", "zzz"])
    # synth runs only for the embedded dataset; a dir out feeds a dep inside it
    stages = {"extract": {"cmd": "true", "deps": ["data/raw/videos"], "outs": ["data/frames"]},
              "synth": {"cmd": "true", "outs": [{"data/raw": {"persist": True}}]}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (tmp_path / "params.yaml").write_text("data:\n  dataset: ucf101\n")
    assert fp.select_stages(tmp_path, None) == ["extract"]
    (tmp_path / "params.yaml").write_text("data:\n  dataset: synthetic\n")
    assert fp.select_stages(tmp_path, None) == ["synth", "extract"]
    stages["synth"]["deps"] = ["data/frames"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    with pytest.raises(ValueError, match="cycle"):
        fp.stage_order(tmp_path)
    with pytest.raises(FileNotFoundError, match="dvc.yaml not found"):
        fp.stage_order(tmp_path / "nowhere")
    # DVC's own repo-lock message means "busy"; anything else is a stage failure carrying the output
    from dvc.lock import FAILED_TO_LOCK_MESSAGE
    from prefect.states import Failed

    busy = fp.stage_error("a", tmp_path, 255, f"ERROR: {FAILED_TO_LOCK_MESSAGE}")
    failed = fp.stage_error("a", tmp_path, 255, "Traceback ...\nKeyError: 'x'")
    assert isinstance(busy, fp.PipelineBusyError) and "another pipeline is running" in str(busy)
    assert isinstance(failed, fp.StageFailedError) and "KeyError: 'x'" in str(failed)
    assert fp._retry_unless_busy(None, None, Failed(data=busy)) is False
    assert fp._retry_unless_busy(None, None, Failed(data=failed)) is True
    # GPU stages carry the "gpu" tag for routing; only I/O stages retry
    configured = {s: fp.task_for(s) for s in ["synth", "extract", "lists", "validate", "pretrain", "finetune",
                                             "retrieve", "evaluate"]}
    assert {s for s, t in configured.items() if "gpu" in t.tags} == {"pretrain", "finetune", "retrieve"}
    retried = {s: t.retries for s, t in configured.items() if t.retries}
    assert retried == {"synth": 2, "extract": 2, "lists": 2}


@pytest.mark.slow
def test_flow_runs_in_order_skips_and_reruns_downstream(flows, template, tmp_path):
    repo = make_project(template, tmp_path / "proj", ABC, {"src.txt": "src\n", "extra.txt": "extra\n"})
    state = flows.pipeline.pipeline(repo=str(repo), return_state=True)
    first = state.result()
    assert [(r["stage"], r["ran"], r["returncode"]) for r in first] == [("a", True, 0), ("b", True, 0),
                                                                       ("c", True, 0)]
    assert (repo / "c.txt").read_text() == "src\nextra\n"
    assert (repo / "id.txt").read_text() == str(state.state_details.flow_run_id)  # pipeline id reached it

    second = flows.pipeline.pipeline(repo=str(repo))
    assert [r["ran"] for r in second] == [False, False, False]  # DVC skipped the unchanged stages

    (repo / "extra.txt").write_text("changed\n")  # a dep of b only: b and c rerun, a does not
    third = flows.pipeline.pipeline(repo=str(repo))
    assert [(r["stage"], r["ran"]) for r in third] == [("a", False), ("b", True), ("c", True)]
    assert (repo / "c.txt").read_text() == "src\nchanged\n"

    forced = flows.pipeline.pipeline(repo=str(repo), stages=["c"], force=True, pipeline_id="parent-42")
    assert [(r["stage"], r["ran"]) for r in forced] == [("c", True)]
    assert (repo / "id.txt").read_text() == "parent-42"  # a part run elsewhere keeps its parent's id


@pytest.mark.slow
def test_io_stage_retries_failure_stops_the_flow(flows, template, tmp_path, monkeypatch):
    monkeypatch.setattr(flows.pipeline, "IO_RETRY_DELAY_S", 0)
    stages = {  # extract (an I/O stage) fails once then works; b fails every time; c must never run
        "extract": {"cmd": "echo try >> ../e.log && test $(wc -l < ../e.log) -ge 2 && echo x > e.txt",
                    "outs": ["e.txt"]},
        "b": {"cmd": "echo try >> ../b.log && echo boom-output && exit 3", "deps": ["e.txt"],
              "outs": ["b.txt"]},
        "c": {"cmd": "cat b.txt > c.txt", "deps": ["b.txt"], "outs": ["c.txt"]},
    }
    repo = make_project(template, tmp_path / "proj", stages)
    state = flows.pipeline.pipeline(repo=str(repo), return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, flows.pipeline.StageFailedError) and exc.stage == "b" and exc.returncode != 0
    assert "boom-output" in str(exc) and "failed to reproduce 'b'" in exc.tail
    assert (tmp_path / "e.log").read_text().count("try") == 2  # one retry made it pass
    assert (tmp_path / "b.log").read_text().count("try") == 1  # training-like stages are not retried
    assert (repo / "e.txt").exists() and not (repo / "c.txt").exists()
    assert task_run_counts(state.state_details.flow_run_id) == {"extract": 2, "b": 1}


@pytest.mark.slow
def test_dvc_lock_contention_is_busy_not_retried(flows, template, tmp_path, monkeypatch):
    monkeypatch.setattr(flows.pipeline, "IO_RETRY_DELAY_S", 0)
    # The background stage holds DVC's lock until the test releases it (at most 60 s), not for a fixed time: on
    # a slow machine the flow below can take longer than any sleep, and the lock would be gone before it ran.
    release = tmp_path / "release"
    hold = f'i=0; while [ ! -f "{release}" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done'
    stages = {"slow": {"cmd": f"{hold}; cat src.txt > a.txt", "deps": ["src.txt"], "outs": ["a.txt"]},
              "lists": {"cmd": "cat a.txt > b.txt", "deps": ["a.txt"], "outs": ["b.txt"]}}
    repo = make_project(template, tmp_path / "proj", stages, {"src.txt": "s\n"})
    other = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", "slow"], cwd=repo,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rwlock, deadline = repo / ".dvc" / "tmp" / "rwlock", time.monotonic() + 60
        while not (rwlock.exists() and json.loads(rwlock.read_text() or "{}").get("write")):
            assert time.monotonic() < deadline and other.poll() is None, "background dvc never took its lock"
            time.sleep(0.05)
        state = flows.pipeline.pipeline(repo=str(repo), stages=["lists"], return_state=True)
        busy_while_running = other.poll() is None
    finally:
        release.touch()
        assert other.wait(timeout=60) == 0
    assert busy_while_running
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, flows.pipeline.PipelineBusyError), exc
    assert "another pipeline is running in this workspace" in str(exc) and "is busy" in str(exc)
    assert task_run_counts(state.state_details.flow_run_id) == {"lists": 1}  # an I/O stage, yet no retry
    assert not (repo / "b.txt").exists()


def test_workspace_lock_and_cli_exit_codes(flows, template, tmp_path, capsys):
    repo = make_project(template, tmp_path / "proj", ABC, {"src.txt": "src\n", "extra.txt": "extra\n"})
    lock = repo / ".dvc" / "tmp" / "vidssl-pipeline.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as held:  # another flow in this workspace holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(flows.pipeline.PipelineBusyError, match="vidssl-pipeline.lock"):
            flows.pipeline.pipeline(repo=str(repo))
        assert flows.pipeline.main(["--repo", str(repo)]) == 75
    assert "another pipeline is running" in capsys.readouterr().err
    assert not (repo / "a.txt").exists()
    assert flows.pipeline.main(["--repo", str(repo), "--stages", "a,nope"]) == 2
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err


def test_deploy_dry_run_lists_nightly_and_on_demand(flows, template, tmp_path, capsys):
    repo = make_project(template, tmp_path / "proj", ABC)
    assert flows.deploy.main(["--dry-run", "--repo", str(repo)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"vidssl-pipeline/nightly: cron '0 2 * * *' (UTC); parameters {{'repo': '{repo}'}}",
        f"vidssl-pipeline/on-demand: on demand; parameters {{'repo': '{repo}'}}",
    ]
    assert flows.deploy.main(["--dry-run", "--repo", str(tmp_path / "empty")]) == 2
    assert "dvc.yaml not found" in capsys.readouterr().err
