"""Tests for flows/pipeline.py and flows/deploy.py on a tiny throwaway DVC project (real dvc and Prefect)."""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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

    assert state.message == "reran 3 of 3 stage(s): a, b, c"
    second = flows.pipeline.pipeline(repo=str(repo), return_state=True)
    assert [r["ran"] for r in second.result()] == [False, False, False]  # DVC skipped the unchanged stages
    assert second.message == "nothing new: all 3 stage(s) up to date, nothing reran"

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
    assert state.name == "WorkspaceBusy"  # a named state with a message, not a crash
    exc = state.result(raise_on_failure=False)
    assert isinstance(exc, flows.pipeline.PipelineBusyError), exc
    assert "another pipeline is running in this workspace" in str(exc) and "is busy" in str(exc)
    assert task_run_counts(state.state_details.flow_run_id) == {"lists": 1}  # an I/O stage, yet no retry
    assert not (repo / "b.txt").exists()


def test_workspace_lock_and_cli_exit_codes(flows, template, tmp_path, capsys):
    repo = make_project(template, tmp_path / "proj", ABC, {"src.txt": "src\n", "extra.txt": "extra\n"})
    lock = repo / ".dvc" / "tmp" / "vidssl-workspace.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as held:  # another run (a stage started by hand, say) holds the workspace
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"holder": "stage pretrain", "pid": 4242, "host": "box"}))
        held.flush()
        state = flows.pipeline.pipeline(repo=str(repo), return_state=True)
        assert state.is_failed() and state.name == "WorkspaceBusy"  # a named state, not a crash
        assert "stage pretrain (pid 4242 on box)" in state.message and "vidssl-workspace.lock" in state.message
        assert flows.pipeline.main(["--repo", str(repo)]) == 75
    assert "is busy: stage pretrain" in capsys.readouterr().err
    assert not (repo / "a.txt").exists()
    assert flows.pipeline.main(["--repo", str(repo), "--stages", "a,nope"]) == 2
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err


@pytest.mark.slow
def test_colliding_runs_queue_or_refuse_by_flag(flows, template, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from vidssl.pipeline.lock import workspace_lock

    repo = make_project(template, tmp_path / "proj", ABC, {"src.txt": "src\n", "extra.txt": "extra\n"})
    name = flows.pipeline.workspace_limit(repo)
    assert name == flows.pipeline.workspace_limit(Path(str(repo) + "/."))  # one name per workspace
    outcome: dict = {}
    taken, release = threading.Event(), threading.Event()

    def other_run() -> None:  # another pipeline run holds this workspace until told to finish
        with workspace_lock("pipeline nightly-run", repo, wait=0):
            taken.set()
            release.wait(120)

    holder = threading.Thread(target=other_run)
    holder.start()
    assert taken.wait(30)
    try:
        refused = flows.pipeline.pipeline(repo=str(repo), wait_s=0, return_state=True)
        assert refused.name == "WorkspaceBusy" and "pipeline nightly-run" in refused.message
        waiter = threading.Thread(target=lambda: outcome.update(
            state=flows.pipeline.pipeline(repo=str(repo), wait_s=None, return_state=True)))
        waiter.start()
        time.sleep(4)
        assert waiter.is_alive() and not (repo / "a.txt").exists()  # queued, not failed, not running
    finally:
        release.set()
        holder.join()
    waiter.join(timeout=120)
    assert outcome["state"].is_completed(), outcome["state"]
    assert (repo / "c.txt").read_text() == "src\nextra\n"
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0  # given back
        # A run that died with its slot taken (its lease lost with a restarted server) blocks nobody: the file
        # lock is free, so the slot is stale and is given back.
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))
        again = flows.pipeline.pipeline(repo=str(repo), wait_s=0, force=True, stages=["a"], return_state=True)
        assert again.is_completed(), again
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0


def test_deployed_runs_wait_in_line_for_the_workspace(flows, monkeypatch):
    """The deployments' flow (nightly, on-demand) waits without a time limit for a workspace another run holds,
    where `vidssl pipeline` refuses unless given --wait (test_colliding_runs_queue_or_refuse_by_flag)."""
    calls = []
    monkeypatch.setattr(flows.pipeline, "run_pipeline", lambda *args: calls.append(args))
    flows.pipeline.workspace_pipeline.fn(gpu_deployment="vidssl-gpu-stages/gpu")
    (root, _stages, _force, _pipeline_id, wait_s, gpu), = calls
    assert (root, wait_s, gpu) == (flows.pipeline.WORKSPACE, None, "vidssl-gpu-stages/gpu")


@pytest.mark.slow
def test_one_training_stage_per_gpu_the_second_waits_in_line(flows, tmp_path, monkeypatch):
    """Two runs (of any workspaces) training on the same GPU of this host: the second starts when the first ends."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("VIDSSL_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    name = flows.pipeline.gpu_limit()
    assert name.startswith("vidssl-gpu-") and name.endswith("-1")  # the first visible device
    spans: dict[str, list[float]] = {}
    inside, release = threading.Event(), threading.Event()

    @flow(name="gpu-stage")
    def train(who: str) -> None:
        with flows.pipeline.gpu_guard():
            spans[who] = [time.monotonic()]
            if who == "first":
                inside.set()
                release.wait(120)
            spans[who].append(time.monotonic())

    first = threading.Thread(target=train, args=("first",))
    first.start()
    try:
        assert inside.wait(120)
        second = threading.Thread(target=train, args=("second",))
        second.start()
        time.sleep(4)
        assert "second" not in spans and second.is_alive()  # waiting for the GPU, not training, not failed
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(name).active_slots == 1  # shown as busy
    finally:
        release.set()
        first.join(120)
    second.join(120)
    assert spans["second"][0] >= spans["first"][1]
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(name).active_slots == 0  # given back


def test_deploy_dry_run_binds_the_deployments_to_this_checkout(flows, capsys):
    assert flows.deploy.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"vidssl-pipeline/nightly: cron '0 2 * * *' (UTC); workspace {ROOT}",
        f"vidssl-pipeline/on-demand: on demand; workspace {ROOT}",
    ]
    for deployment in flows.deploy.build_deployments():  # nothing a run could point at another directory
        assert "repo" not in deployment._parameter_openapi_schema.properties
    assert flows.deploy.main(["--dry-run", "--cron", "not a cron"]) == 2
    assert "--cron 'not a cron'" in capsys.readouterr().err
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    assert {d["work_pool"]["name"] for d in deployments.values()} == {"cpu", "gpu"}
    assert all("pull" not in d for d in deployments.values()) and "pull" not in spec  # bound at deploy time


@pytest.mark.slow
def test_new_videos_alone_are_extracted_and_nothing_new_reruns_nothing(flows, template, tmp_path):
    real = ROOT / "tests" / "data" / "real" / "ucf101" / "videos"
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["extract"]
    stages = {"extract": spec,  # the real extract stage, and a downstream stage that lists what it packed
              "count": {"cmd": "find data/frames -name '*.zip' | sort > packs.txt", "deps": ["data/frames"],
                        "outs": ["packs.txt"]}}
    repo = make_project(template, tmp_path / "proj", stages)
    for folder in ("stages", "vidssl", "presets"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(dataset="ucf101", raw_dir="incoming")
    params["extract"].update(short_side=32, workers=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "incoming" / "Archery").mkdir(parents=True)
    shutil.copy(real / "Archery" / "v_Archery_g07_c01.avi", repo / "incoming" / "Archery")

    first = flows.pipeline.pipeline(repo=str(repo), return_state=True)
    assert first.message == "reran 2 of 2 stage(s): extract, count", first.message
    old = repo / "data" / "frames" / "Archery" / "v_Archery_g07_c01.zip"
    before = old.stat()
    (repo / "incoming" / "ApplyLipstick").mkdir()  # a video arrives
    shutil.copy(real / "ApplyLipstick" / "v_ApplyLipstick_g21_c01.avi", repo / "incoming" / "ApplyLipstick")
    second = flows.pipeline.pipeline(repo=str(repo), return_state=True)
    assert second.message == "reran 2 of 2 stage(s): extract, count", second.message
    after = old.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not decoded again
    assert (repo / "packs.txt").read_text().split() == ["data/frames/ApplyLipstick/v_ApplyLipstick_g21_c01.zip",
                                                       "data/frames/Archery/v_Archery_g07_c01.zip"]
    third = flows.pipeline.pipeline(repo=str(repo), return_state=True)
    assert third.message == "nothing new: all 2 stage(s) up to date, nothing reran"
    assert [r["ran"] for r in third.result()] == [False, False]


def test_dead_tracking_server_fails_the_run_before_any_stage(flows, template, tmp_path, monkeypatch):
    repo = make_project(template, tmp_path / "proj", ABC, {"src.txt": "src\n", "extra.txt": "extra\n"})
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    state = flows.pipeline.pipeline(repo=str(repo), return_state=True)
    assert state.name == "TrackingUnavailable" and uri in state.message, state
    assert time.monotonic() - start < 15 and not (repo / "a.txt").exists()


def test_pipeline_finds_the_standing_server_of_its_workspace(flows, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert flows.pipeline.standing_server(home) is None
    record = home / flows.pipeline.SERVER_RECORD
    record.write_text(json.dumps({"api_url": "http://127.0.0.1:4321/api", "pid": os.getpid()}))
    assert flows.pipeline.standing_server(home) == "http://127.0.0.1:4321/api"
    dead = subprocess.Popen(["true"])
    dead.wait()
    record.write_text(json.dumps({"api_url": "http://127.0.0.1:4321/api", "pid": dead.pid}))
    assert flows.pipeline.standing_server(home) is None  # `vidssl serve` is gone: not reported to
    record.write_text("{not json")
    assert flows.pipeline.standing_server(home) is None


@pytest.mark.slow
def test_killed_flow_process_leaves_the_workspace_usable(template, tmp_path):
    # The stage is a vidssl stage runner (it holds the workspace lock and watches its parent); it runs long
    # while `hold` exists. The flow process is killed outright, as when a worker loses its job.
    stage = ("import os, sys, time\nfrom pathlib import Path\nfrom vidssl.entry import run_main\n"
             "from vidssl.pipeline.lock import locked_stage\n\n@locked_stage('work')\ndef work():\n"
             "    Path('stage.pid').write_text(str(os.getpid()))\n"
             "    while Path('hold').exists():\n        time.sleep(0.2)\n    Path('out.txt').write_text('done')\n\n"
             "run_main(work)\n")
    repo = make_project(template, tmp_path / "proj", {"work": {"cmd": "python stage.py", "deps": ["stage.py"],
                                                               "outs": ["out.txt"]}}, {"stage.py": stage})
    (repo / "hold").touch()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, str(ROOT / "flows" / "pipeline.py"), "--repo", str(repo)]
    flow = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (repo / "stage.pid").exists():
            assert flow.poll() is None and time.monotonic() < deadline, "the stage never started"
            time.sleep(0.2)
        stage_pid = int((repo / "stage.pid").read_text())
        flow.kill()  # SIGKILL: no cleanup of any kind in the flow process
        flow.wait()
        deadline = time.monotonic() + 30
        while Path(f"/proc/{stage_pid}").exists() and \
                Path(f"/proc/{stage_pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the stage outlived its flow"
            time.sleep(0.2)
    finally:
        try:
            os.killpg(flow.pid, signal.SIGKILL)  # what Prefect's temporary server left behind
        except ProcessLookupError:
            pass
    (repo / "hold").unlink()
    rerun = subprocess.run([*cmd, "--wait", "120"], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (repo / "out.txt").read_text() == "done"
