"""SIGKILL at every long step of the pipeline: the rerun ends with the uninterrupted run's results, nothing left over.

One uninterrupted `dvc repro` of the real dvc.yaml on a tiny config is the reference. Each fault then starts from
a copy of that workspace with one stage's outputs (and everything downstream of it) removed, so `dvc repro` has
to run that stage again; the stage is killed with SIGKILL while it works; `dvc repro` runs once more. What must
hold: the rerun exits 0, every output DVC hashes (frames, lists, models, features) has the reference's hash,
every metric equals the reference's (timings aside), and no process of the killed run is still alive.
The outcome of each fault is recorded (see conftest.py), and `scripts/reliability.sh` turns the records into
docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from tinyrepo import DVC, tiny_params, tiny_repo

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[2]

# Long enough that each stage is still working when it is killed, small enough for CI.
LONGER = {"extract": {"workers": 1}, "pretrain": {"epochs": 8}, "finetune": {"epochs": 6}, "retrieve": {"clips": 4}}
# Outputs whose bytes must come back identical (DVC's hashes in dvc.lock); metrics are compared as values.
HASHED = ("data/raw", "data/frames", "data/lists", "models/pretrain", "models/finetune", "features")
DOWNSTREAM = {
    "extract": ["extract", "lists", "validate", "pretrain", "finetune", "retrieve", "evaluate"],
    "pretrain": ["pretrain", "finetune", "retrieve", "evaluate"],
    "finetune": ["finetune", "evaluate"],
    "retrieve": ["retrieve", "evaluate"],
}


def _env(repo: Path) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}",
           "PYTHONPATH": str(ROOT)}
    env.pop("VIDSSL_PIPELINE_ID", None)
    return env


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([DVC, *args], cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=900)


def _outs(repo: Path) -> dict[str, str]:
    """Every output path in dvc.lock with its hash."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o.get("md5", "") for s in lock["stages"].values() for o in s.get("outs", [])}


# Throughput and wall-clock telemetry differ between any two runs; everything else must not.
_TIMING = ("second", "time", "clips_per_s", "data_wait", "peak_gpu_mem")


def _untimed(obj: object) -> object:
    """A metrics tree without its wall-clock and throughput fields."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if not any(t in k for t in _TIMING)}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def results(repo: Path) -> dict[str, object]:
    """What a run produced: the hashes of its data and models, and its metrics."""
    outs = _outs(repo)
    found: dict[str, object] = {p: outs.get(p) for p in HASHED}
    for name in ("pretrain", "finetune", "retrieve"):
        found[f"metrics/{name}.json"] = _untimed(json.loads((repo / "metrics" / f"{name}.json").read_text()))
    return found


def workspace_processes(repo: Path) -> list[str]:
    """Live processes whose working directory is inside ``repo`` (what a killed run could leave behind)."""
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cwd = proc.cwd()
        except (psutil.Error, OSError):
            continue
        if proc.pid != os.getpid() and (cwd == str(repo) or cwd.startswith(str(repo) + os.sep)):
            left.append(f"{proc.pid}: {' '.join(proc.info['cmdline'] or [])[:120]}")
    return left


def _wait_gone(repo: Path, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := workspace_processes(repo)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("faults") / "reference"
    tiny_repo(repo, tiny_params(**LONGER), env=_env(repo))
    proc = dvc(repo, "repro")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return repo


def _copy_without(reference: Path, dest: Path, stage: str) -> Path:
    """The reference workspace with ``stage``'s outputs and everything downstream removed (and no run cache)."""
    shutil.copytree(reference, dest, symlinks=True)
    shutil.rmtree(dest / ".dvc" / "cache" / "runs", ignore_errors=True)  # or DVC would restore, not rerun
    lock = yaml.safe_load((dest / "dvc.lock").read_text())
    for name in DOWNSTREAM[stage]:
        for out in lock["stages"][name].get("outs", []):
            path = dest / out["path"]
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    for state in ("models/pretrain_state", "models/finetune_state"):
        if state.split("/")[1].split("_")[0] in DOWNSTREAM[stage]:
            shutil.rmtree(dest / state, ignore_errors=True)
    return dest


def _any_file(folder: str, pattern: str) -> Callable[[Path], bool]:
    return lambda repo: any((repo / folder).rglob(pattern)) if (repo / folder).is_dir() else False


# When each stage has demonstrably started its work (and is not done): the moment to kill it.
STARTED: dict[str, Callable[[Path], bool]] = {
    "extract": _any_file("data/frames", "*.zip"),
    "pretrain": _any_file("models/pretrain_state", "*.pt"),
    "finetune": _any_file("models/finetune_state", "*.pt"),
    "retrieve": _any_file("features", "*.npz"),
}


def _kill_when(repo: Path, started: Callable[[Path], bool], whole_group: bool, timeout: float = 600) -> str:
    """Run `dvc repro` and SIGKILL it (its whole process group, or dvc alone) once ``started`` holds."""
    proc = subprocess.Popen([DVC, "repro"], cwd=repo, env=_env(repo), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not started(repo):
            if proc.poll() is not None:
                pytest.fail(f"dvc repro ended (rc {proc.returncode}) before the fault point:\n"
                            f"{proc.stdout.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the fault point was never reached")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            if whole_group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    return proc.stdout.read()


def _check_rerun(repo: Path, reference: Path, record, fault: str, orphans: list[str]) -> None:
    rerun = dvc(repo, "repro")
    got = results(repo) if rerun.returncode == 0 else {}
    want = results(reference)
    lost = sorted(k for k in want if got.get(k) != want[k])
    record(fault=fault, survived=rerun.returncode == 0 and not lost, lost=lost, orphans=len(orphans))
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert not orphans, f"processes of the killed run still alive: {orphans}"
    assert not lost, f"outputs that differ from the uninterrupted run: {lost}"


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["extract", "pretrain", "finetune", "retrieve"])
def test_sigkill_during_a_stage_then_rerun_gives_the_same_results(reference: Path, tmp_path: Path, record,
                                                                  stage: str) -> None:
    repo = _copy_without(reference, tmp_path / "ws", stage)
    _kill_when(repo, STARTED[stage], whole_group=True)
    orphans = _wait_gone(repo, 5)
    _check_rerun(repo, reference, record, f"SIGKILL during {stage} (dvc and the stage)", orphans)


@pytest.mark.slow
def test_sigkill_of_dvc_repro_alone_leaves_no_orphan_stage(reference: Path, tmp_path: Path, record) -> None:
    """Only `dvc repro` dies: the stage it started must notice and stop itself, and the rerun must succeed."""
    repo = _copy_without(reference, tmp_path / "ws", "pretrain")
    _kill_when(repo, STARTED["pretrain"], whole_group=False)
    orphans = _wait_gone(repo, 30)
    for line in orphans:  # do not leave them running past the test, whatever the verdict
        psutil.Process(int(line.split(":")[0])).kill()
    _check_rerun(repo, reference, record, "SIGKILL of `dvc repro` alone during pretrain", orphans)
