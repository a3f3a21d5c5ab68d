"""Prefect flow over the DVC stages: one task per stage, DVC stays the authority on what is up to date.

Run from the repo root (no Prefect server needed; a temporary one on 127.0.0.1 starts by itself):

    python flows/pipeline.py                       # every stage of dvc.yaml, in dependency order
    python flows/pipeline.py --stages pretrain,finetune --force

Each task runs `dvc repro --single-item <stage>`, so a stage whose deps, params and outs are unchanged is
skipped by DVC, not by Prefect (tasks never use Prefect's result cache). Stage names and order come from
dvc.yaml; for vidssl that is synth, extract, lists, validate, pretrain, finetune, retrieve, evaluate.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

WORKSPACE = Path(__file__).resolve().parents[1]

# Telemetry off for every tool the stages touch; also given to each stage's environment.
TELEMETRY_OFF = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def _offline_defaults() -> None:
    """Keep Prefect's state inside the workspace and quiet, unless the caller chose otherwise.

    Runs before `prefect` is imported: Prefect reads its settings once, at import.
    """
    os.environ.setdefault("PREFECT_HOME", str(WORKSPACE / ".prefect"))
    # The temporary server's cold start (import + DB migrations) can pass Prefect's 20 s default on a busy
    # 2-core laptop or CI runner; waiting longer beats failing the run.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


_offline_defaults()

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

IO_STAGES = frozenset({"synth", "extract", "lists"})  # retried: a flaky disk or decoder is worth a second try
GPU_STAGES = frozenset({"pretrain", "finetune", "retrieve"})  # tagged "gpu" so they can be routed
IO_RETRIES = 2
IO_RETRY_DELAY_S = 10.0
TAIL_LINES = 40
# What DVC prints when another dvc process holds the repo lock or a read/write lock on a shared path.
_LOCK_PATTERNS = ("Unable to acquire lock", "is busy, it is being blocked by")
_RAN_RE = re.compile(r"^Running stage '")


class PipelineBusyError(RuntimeError):
    """Another pipeline (or dvc command) holds this workspace's lock."""


class StageFailedError(RuntimeError):
    """`dvc repro` of one stage exited non-zero; the message carries the end of its output."""

    def __init__(self, stage: str, returncode: int, tail: str) -> None:
        super().__init__(
            f"stage {stage!r} failed: `dvc repro --single-item {stage}` exited with {returncode}. "
            f"Last lines of its output:\n{tail}"
        )
        self.stage, self.returncode, self.tail = stage, returncode, tail


_BUSY = ("another pipeline is running in this workspace ({repo}); wait for it to finish (or stop it) and run "
         "again.\n{detail}")


def stage_error(stage: str, repo: Path, returncode: int, tail: str) -> RuntimeError:
    """The exception for a failed `dvc repro`: PipelineBusyError when DVC reports a held lock."""
    if any(pattern in tail for pattern in _LOCK_PATTERNS):
        return PipelineBusyError(_BUSY.format(repo=repo, detail=tail))
    return StageFailedError(stage, returncode, tail)


def _entries(stage: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """Paths listed under `keys` of one dvc.yaml stage (entries are strings or {path: options})."""
    wdir = stage.get("wdir", ".")
    paths = []
    for key in keys:
        for entry in stage.get(key) or []:
            for path in [entry] if isinstance(entry, str) else list(entry):
                paths.append(os.path.normpath(os.path.join(wdir, path)))
    return paths


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + os.sep) or b.startswith(a + os.sep)


def stage_order(repo: str | Path) -> list[str]:
    """Stage names of `<repo>/dvc.yaml` in dependency order (ties keep the file's order).

    A stage depends on another when one of its deps overlaps one of the other's outs, metrics or plots,
    the same rule DVC uses to build its graph.

    Raises:
        FileNotFoundError: no dvc.yaml in `repo`.
        ValueError: dvc.yaml has no stages, or they form a cycle.
    """
    path = Path(repo) / "dvc.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the pipeline from a DVC workspace (--repo <dir>)")
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    if not stages:
        raise ValueError(f"{path} declares no stages under 'stages:'")
    outs = {name: _entries(spec, ("outs", "metrics", "plots")) for name, spec in stages.items()}
    deps = {name: _entries(spec, ("deps",)) for name, spec in stages.items()}
    upstream = {name: {other for other in stages if other != name and any(
        _overlaps(d, o) for d in deps[name] for o in outs[other])} for name in stages}
    order: list[str] = []
    while len(order) < len(stages):
        ready = [n for n in stages if n not in order and upstream[n] <= set(order)]
        if not ready:
            raise ValueError(f"{path}: stages {sorted(set(stages) - set(order))} form a dependency cycle")
        order.append(ready[0])
    return order


def select_stages(repo: str | Path, stages: list[str] | None) -> list[str]:
    """The stages to run, in dependency order.

    `None` means all of them, except `synth` when params.yaml says `data.dataset` is not `synthetic`
    (synth only writes the embedded dataset). Requested stages are run in pipeline order, not argument order.

    Raises:
        ValueError: a requested stage is not in dvc.yaml.
    """
    order = stage_order(repo)
    if stages is None:
        params = Path(repo) / "params.yaml"
        data = (yaml.safe_load(params.read_text()) or {}).get("data") if params.is_file() else None
        dataset = data.get("dataset", "synthetic") if isinstance(data, dict) else "synthetic"
        return [s for s in order if s != "synth" or dataset == "synthetic"]
    unknown = sorted(set(stages) - set(order))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown} for {Path(repo) / 'dvc.yaml'}; choose from {order}")
    return [s for s in order if s in stages]


def stage_env(pipeline_id: str, flow_run_id: str) -> dict[str, str]:
    """Variables added to each stage's environment (on top of the worker's own os.environ)."""
    return {
        "VIDSSL_PIPELINE_ID": pipeline_id,  # MLflow nests every stage's run under one parent run by this id
        "VIDSSL_FLOW_RUN_ID": flow_run_id,
        "PYTHONUNBUFFERED": "1",  # stage output reaches the Prefect log line by line, not at exit
        **TELEMETRY_OFF,
    }


def _dvc_command() -> list[str]:
    """The dvc of this interpreter's environment, so a worker never picks up another install."""
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]


def _retry_unless_busy(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: a busy workspace will still be busy in a few seconds; fail at once."""
    return not isinstance(state.data, PipelineBusyError)


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE, retry_condition_fn=_retry_unless_busy)
def run_stage(stage: str, repo: str, env: dict[str, str], force: bool = False) -> dict[str, Any]:
    """Run `dvc repro --single-item <stage>` in `repo`, streaming its output to the Prefect log.

    Args:
        stage: stage name in dvc.yaml.
        repo: the DVC workspace.
        env: variables added to this process's os.environ for the stage (the worker's own environment stays,
            so a GPU worker keeps its CUDA settings).
        force: pass `--force` (run even if DVC finds nothing changed).

    Returns:
        {"stage", "returncode", "seconds", "ran"}; `ran` is False when DVC skipped the unchanged stage.

    Raises:
        PipelineBusyError: another dvc process holds a lock this stage needs (not retried).
        StageFailedError: dvc exited non-zero; the message holds its last 40 lines.
    """
    logger = get_run_logger()
    cmd = [*_dvc_command(), "repro", "--single-item", stage, *(["--force"] if force else [])]
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    ran = False
    start = time.monotonic()
    with subprocess.Popen(
        cmd, cwd=repo, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip().rsplit("\r", 1)[-1]  # keep only the last frame of a progress bar
            if not line:
                continue
            tail.append(line)
            logger.info("%s", line)
            ran = ran or bool(_RAN_RE.match(line))
        returncode = proc.wait()
    seconds = round(time.monotonic() - start, 3)
    if returncode != 0:
        raise stage_error(stage, Path(repo), returncode, "\n".join(tail))
    return {"stage": stage, "returncode": returncode, "seconds": seconds, "ran": ran}


def task_for(stage: str) -> Any:
    """`run_stage` configured for one stage: retries for I/O stages, tag "gpu" for GPU stages."""
    io = stage in IO_STAGES
    return run_stage.with_options(
        retries=IO_RETRIES if io else 0,
        retry_delay_seconds=IO_RETRY_DELAY_S if io else 0,
        tags={"vidssl", "gpu"} if stage in GPU_STAGES else {"vidssl"},
    )


@contextmanager
def workspace_lock(repo: Path) -> Iterator[None]:
    """Hold `.dvc/tmp/vidssl-pipeline.lock` so two flows never interleave stages in one workspace.

    DVC alone only refuses a second run when the two touch the same paths; this makes it one pipeline per
    workspace. flock is released by the OS when the process dies, so a crash leaves no stale lock.
    """
    if not (repo / ".dvc").is_dir():
        raise FileNotFoundError(f"{repo} is not a DVC repository (no .dvc/): run `dvc init` there first")
    lock_path = repo / ".dvc" / "tmp" / "vidssl-pipeline.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineBusyError(_BUSY.format(repo=repo, detail=f"lock held: {lock_path}")) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _summary(results: list[dict[str, Any]], planned: list[str]) -> str:
    done = {r["stage"]: r for r in results}
    rows = []
    for stage in planned:
        r = done.get(stage)
        status = "not run" if r is None else ("ran" if r["ran"] else "up to date")
        rows.append(f"  {stage:<10} {status:<11}" + ("" if r is None else f" {r['seconds']:8.1f} s"))
    return "pipeline summary:\n" + "\n".join(rows)


@flow(name="vidssl-pipeline")
def pipeline(
    repo: str = ".", stages: list[str] | None = None, force: bool = False, pipeline_id: str | None = None
) -> list[dict[str, Any]]:
    """Run the DVC stages in dependency order, one task each, stopping at the first failure.

    Args:
        repo: the DVC workspace (holds dvc.yaml and .dvc/).
        stages: stage names to run (pipeline order is kept); None runs all of them (see `select_stages`).
        force: pass `--force` to every `dvc repro`.
        pipeline_id: id that links the stages' MLflow runs; default this flow run's id (a part of a pipeline
            run elsewhere, e.g. the GPU stages, passes the id of the run that started it).

    Returns:
        One `run_stage` result per stage run.
    """
    logger = get_run_logger()
    root = Path(repo).resolve()
    planned = select_stages(root, stages)
    env = stage_env(pipeline_id or str(flow_run.id), str(flow_run.id))
    results: list[dict[str, Any]] = []
    logger.info("stages: %s (pipeline id %s)", ", ".join(planned), env["VIDSSL_PIPELINE_ID"])
    with workspace_lock(root):
        try:
            for stage in planned:
                results.append(task_for(stage)(stage, str(root), env, force=force))
        finally:
            logger.info(_summary(results, planned))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line: run the flow once.

    Returns:
        Exit code: 0 success, 1 a stage failed, 2 bad arguments, 75 workspace busy (try again later).
    """
    parser = argparse.ArgumentParser(description="Run the vidssl DVC pipeline as a Prefect flow.")
    parser.add_argument("--repo", default=".", help="DVC workspace (default: current directory)")
    parser.add_argument("--stages", default=None, help="comma-separated stage names (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun stages even if DVC finds them up to date")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        select_stages(args.repo, stages)  # fail fast, before a Prefect server is started
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        pipeline(repo=args.repo, stages=stages, force=args.force)
    except (PipelineBusyError, StageFailedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 75 if isinstance(exc, PipelineBusyError) else 1  # 75 = EX_TEMPFAIL: try again later
    return 0


if __name__ == "__main__":
    sys.exit(main())
