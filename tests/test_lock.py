"""The workspace lock: one pipeline or stage per DVC workspace, handed down to a pipeline's own stages, and a
stage that stops itself when the process that started it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vidssl.pipeline import lock

ROOT = Path(__file__).resolve().parents[1]

# A stand-in stage: the decorated runner writes its pid, then sleeps (or returns at once with "quick").
STAGE = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from vidssl.entry import run_main
    from vidssl.pipeline.lock import locked_stage

    @locked_stage("fake")
    def runner():
        Path("stage.pid").write_text(str(os.getpid()))
        if sys.argv[1:] != ["quick"]:
            time.sleep(120)
        Path("done.txt").write_text("done")

    run_main(runner)
""")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (lock.TOKEN_ENV, lock.WAIT_ENV)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "stage.py").write_text(STAGE)
    return tmp_path


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its new parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_second_holder_refused_with_the_holder_named_then_waits(ws: Path) -> None:
    holder = subprocess.Popen([sys.executable, "stage.py"], cwd=ws, env=_env())
    try:
        _wait_for(lambda: (ws / "stage.pid").exists())
        with pytest.raises(lock.WorkspaceBusyError) as err:
            with lock.workspace_lock("stage other", ws, wait=0):
                pass
        text = str(err.value)
        assert "stage fake" in text and f"pid {holder.pid}" in text and "vidssl-workspace.lock" in text
        assert "stage other was not started" in text and "--wait" in text
        # a second stage run as a program: one line, exit code 75, its body never ran
        second = subprocess.run([sys.executable, "stage.py", "quick"], cwd=ws, env=_env(), capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 75, second.stderr
        assert second.stderr.strip().startswith("error: workspace") and "Traceback" not in second.stderr
        assert not (ws / "done.txt").exists()
        # with a wait it queues behind the holder and runs once the holder is gone
        waiter = subprocess.Popen([sys.executable, "stage.py", "quick"], cwd=ws, env=_env(**{lock.WAIT_ENV: "60"}),
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert waiter.poll() is None and not (ws / "done.txt").exists()
    finally:
        holder.kill()
        holder.wait()
    assert waiter.wait(timeout=60) == 0
    assert (ws / "done.txt").read_text() == "done"
    assert "waiting for the workspace lock" in waiter.stderr.read()


def test_pipeline_hands_its_lock_down_to_its_own_stages_only(ws: Path) -> None:
    with lock.workspace_lock("pipeline p1", ws, wait=0, hand_down=True) as info:
        assert os.environ[lock.TOKEN_ENV] == info["token"]
        assert lock.read_holder(ws)["holder"] == "pipeline p1"
        own = subprocess.run([sys.executable, "stage.py", "quick"], cwd=ws, env={**_env(), lock.TOKEN_ENV:
                             info["token"]}, capture_output=True, text=True, timeout=60)
        assert own.returncode == 0, own.stderr
        stranger = subprocess.run([sys.executable, "stage.py", "quick"], cwd=ws,
                                  env={**_env(), lock.TOKEN_ENV: "not-the-token"}, capture_output=True, text=True,
                                  timeout=60)
        assert stranger.returncode == 75 and "pipeline p1" in stranger.stderr
        with lock.workspace_lock("nested runner", ws):  # an inner runner of this process does not deadlock
            pass
    assert lock.TOKEN_ENV not in os.environ
    # the token of a pipeline that is gone opens nothing, and the lock is free again
    with lock.workspace_lock("next", ws, wait=0):
        assert lock.read_holder(ws)["holder"] == "next"
    assert lock.read_holder(ws) == {}


def test_wait_from_env_rejects_bad_values(monkeypatch) -> None:
    monkeypatch.setenv(lock.WAIT_ENV, "inf")
    assert lock.wait_from_env() == float("inf")
    monkeypatch.setenv(lock.WAIT_ENV, "soon")
    with pytest.raises(ValueError, match="VIDSSL_LOCK_WAIT='soon'"):
        lock.wait_from_env()
    monkeypatch.setenv(lock.WAIT_ENV, "-1")
    with pytest.raises(ValueError, match="0 or more"):
        lock.wait_from_env()
    assert lock.find_workspace(Path("/")) is None


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_stage_whose_parent_is_killed_stops_itself_and_frees_the_lock(ws: Path, sigint: str) -> None:
    # The parent stands in for `dvc repro`: it starts the stage and waits; SIGKILL gives it no chance to clean up.
    # "ignored": the stage inherits SIGINT ignored, as everything started by `nohup dvc repro &` does.
    ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN); " if sigint == "ignored" else ""
    parent = subprocess.Popen([sys.executable, "-c", f"import signal, subprocess, sys; {ignore}"
                               f"subprocess.run([sys.executable, 'stage.py'])"], cwd=ws, env=_env(),
                              stderr=subprocess.DEVNULL)
    _wait_for(lambda: (ws / "stage.pid").exists())
    stage_pid = int((ws / "stage.pid").read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _wait_for(lambda: not _alive(stage_pid), timeout=20)
    assert not (ws / "done.txt").exists()
    with lock.workspace_lock("rerun", ws, wait=5):  # the rerun gets the workspace
        pass


def test_stage_of_a_dead_pipeline_stops_itself(ws: Path) -> None:
    # The holder hands its lock down, starts the stage through an intermediate process (as a flow starts
    # `dvc repro`), and dies; the intermediate lives on, but the stage notices that its pipeline is gone.
    holder_code = textwrap.dedent("""
        import subprocess, sys, time
        from pathlib import Path
        from vidssl.pipeline.lock import workspace_lock
        with workspace_lock("pipeline doomed", Path.cwd(), wait=0, hand_down=True):
            subprocess.Popen(["sh", "-c", f"{sys.executable} stage.py; sleep 60"])
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", holder_code], cwd=ws, env=_env(), start_new_session=True)
    try:
        _wait_for(lambda: (ws / "stage.pid").exists())
        stage_pid = int((ws / "stage.pid").read_text())
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        _wait_for(lambda: not _alive(stage_pid), timeout=20)
        assert not (ws / "done.txt").exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the intermediate `sh` of this test


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash", None])
def test_killed_dvc_repro_leaves_no_orphan_and_the_rerun_completes(ws: Path, shell: str | None) -> None:
    """DVC runs a stage through ``$SHELL -c`` (/bin/sh without $SHELL); dash keeps itself between dvc and the
    stage, bash execs the stage. Either way the stage stops when dvc is killed."""
    import yaml

    if shell is not None and not Path(shell).exists():
        pytest.skip(f"{shell} is not installed")
    dvc = str(Path(sys.executable).with_name("dvc"))
    env = {k: v for k, v in _env().items() if k != "SHELL"}
    if shell is not None:
        env["SHELL"] = shell
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q", "--force"]):
        subprocess.run(cmd, cwd=ws, check=True, env=env)
    # The stage sleeps while `hold` exists, like a long pretrain; its out is written at the end.
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fake": {
        "cmd": "python stage.py $(test -f hold || echo quick)", "deps": ["stage.py"], "outs": ["done.txt"]}}}))
    (ws / "hold").touch()
    first = subprocess.Popen([dvc, "repro"], cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: (ws / "stage.pid").exists(), timeout=60)
    stage_pid = int((ws / "stage.pid").read_text())
    first.send_signal(signal.SIGKILL)
    first.wait()
    _wait_for(lambda: not _alive(stage_pid), timeout=20)
    (ws / "hold").unlink()
    rerun = subprocess.run([dvc, "repro"], cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (ws / "done.txt").read_text() == "done"
