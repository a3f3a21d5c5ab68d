"""Prefect flows over the DVC stages: one task per stage, DVC stays the authority on what is up to date.

Run from the repo root:

    python flows/pipeline.py                       # every stage of dvc.yaml, in dependency order
    python flows/pipeline.py --stages pretrain,finetune --force
    python flows/pipeline.py --wait 3600           # queue behind a run that holds this workspace

It reports to the Prefect server in PREFECT_API_URL, else to the one `vidssl serve` keeps for this workspace,
else to a temporary local one started for the run.

Each task runs `dvc repro --single-item <stage>`, so a stage whose deps, params and outs are unchanged is
skipped by DVC, not by Prefect (tasks never use Prefect's result cache). Stage names and order come from
dvc.yaml; for vidssl that is synth, extract, lists, validate, pretrain, finetune, retrieve, evaluate.

Flows here:
- `pipeline`: the run of a given workspace (`--repo`), for the command line.
- `workspace_pipeline`: what the deployments run. It has no repo parameter: it works in the checkout its own
  code was loaded from, which the deployment fixed when it was built. With `gpu_deployment` it sends the GPU
  stages to that deployment (a worker of the `gpu` pool, in its own clone) and waits for it.
- `gpu_stages`: the GPU side. It takes the CPU side's handoff (flows/handoff.py), `dvc pull`s the inputs, runs
  pretrain/finetune/retrieve, `dvc push`es the models and hands the results back.

Guard rails: one pipeline per workspace (a Prefect global concurrency limit, so a colliding run queues, plus
the workspace file lock that every stage also takes) and one training stage per GPU (a second limit); retries
only on the I/O stages and on `dvc push`/`dvc pull`.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

WORKSPACE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(WORKSPACE))  # loaded by a worker from a checkout: import this checkout's library

from flows import handoff  # noqa: E402
from vidssl.entry import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_FAILURE  # noqa: E402
from vidssl.pipeline import splits  # noqa: E402
from vidssl.pipeline.lock import WorkspaceBusyError, workspace_lock  # noqa: E402

# Telemetry off for every tool the stages touch; also given to each stage's environment.
TELEMETRY_OFF = {
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
SERVER_RECORD = "server.json"  # written by `vidssl serve` in PREFECT_HOME: the standing server of this workspace


def standing_server(home: Path) -> str | None:
    """The API URL of the server `vidssl serve` runs for this workspace, if it is still running."""
    try:
        record = json.loads((home / SERVER_RECORD).read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(record.get("api_url") or "") or None


def _offline_defaults() -> None:
    """Keep Prefect's state inside the workspace and quiet, unless the caller chose otherwise.

    Runs before `prefect` is imported: Prefect reads its settings once, at import.
    """
    os.environ.setdefault("PREFECT_HOME", str(WORKSPACE / ".prefect"))
    if not os.environ.get("PREFECT_API_URL"):
        url = standing_server(Path(os.environ["PREFECT_HOME"]))
        if url:
            os.environ["PREFECT_API_URL"] = url
    # The temporary server's cold start (import + DB migrations) can pass Prefect's 20 s default on a busy
    # 2-core laptop or CI runner; waiting longer beats failing the run.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)


_offline_defaults()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402
from prefect.states import Completed, Failed  # noqa: E402

IO_STAGES = frozenset({"synth", "extract", "lists"})  # retried: a flaky disk or decoder is worth a second try
GPU_STAGES = frozenset({"pretrain", "finetune", "retrieve"})  # tagged "gpu"; sent to the gpu pool when asked
IO_RETRIES = 2
IO_RETRY_DELAY_S = 10.0
TAIL_LINES = 40
LEASE_S = 60.0  # a concurrency slot of a killed run is given back this long after its holder stopped renewing
# What DVC prints when another dvc process holds the repo lock or a read/write lock on a shared path.
_LOCK_PATTERNS = ("Unable to acquire lock", "is busy, it is being blocked by")
_RAN_RE = re.compile(r"^Running stage '")
TO_GPU, FROM_GPU = "vidssl-to-gpu", "vidssl-from-gpu"  # handoff artifact keys


class PipelineBusyError(WorkspaceBusyError):
    """Another pipeline (or dvc command) holds this workspace's lock."""


class StageFailedError(RuntimeError):
    """`dvc repro` of one stage exited non-zero; the message carries the end of its output."""

    def __init__(self, stage: str, returncode: int, tail: str, command: str | None = None) -> None:
        super().__init__(
            f"stage {stage!r} failed: `{command or f'dvc repro --single-item {stage}'}` exited with {returncode}. "
            f"Last lines of its output:\n{tail}"
        )
        self.stage, self.returncode, self.tail = stage, returncode, tail


_BUSY = ("another pipeline is running in this workspace ({repo}); wait for it to finish (or stop it) and run "
         "again.\n{detail}")


def stage_error(stage: str, repo: Path, returncode: int, tail: str, command: str | None = None) -> RuntimeError:
    """The exception for a failed `dvc repro`: PipelineBusyError when DVC or the workspace lock says busy."""
    if any(pattern in tail for pattern in _LOCK_PATTERNS) or returncode == WorkspaceBusyError.exit_code:
        return PipelineBusyError(_BUSY.format(repo=repo, detail=tail))
    return StageFailedError(stage, returncode, tail, command)


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


def stage_graph(repo: str | Path) -> dict[str, set[str]]:
    """Each stage of `<repo>/dvc.yaml` -> the stages it depends on directly (file order kept in the keys).

    A stage depends on another when one of its deps overlaps one of the other's outs, metrics or plots,
    the same rule DVC uses to build its graph.

    Raises:
        FileNotFoundError: no dvc.yaml in `repo`.
        ValueError: dvc.yaml has no stages.
    """
    path = Path(repo) / "dvc.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the pipeline from a DVC workspace (--repo <dir>)")
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    if not stages:
        raise ValueError(f"{path} declares no stages under 'stages:'")
    outs = {name: _entries(spec, ("outs", "metrics", "plots")) for name, spec in stages.items()}
    deps = {name: _entries(spec, ("deps",)) for name, spec in stages.items()}
    return {name: {other for other in stages if other != name and any(
        _overlaps(d, o) for d in deps[name] for o in outs[other])} for name in stages}


def stage_order(repo: str | Path) -> list[str]:
    """Stage names of `<repo>/dvc.yaml` in dependency order (ties keep the file's order).

    Raises:
        FileNotFoundError: no dvc.yaml in `repo`.
        ValueError: dvc.yaml has no stages, or they form a cycle.
    """
    upstream = stage_graph(repo)
    order: list[str] = []
    while len(order) < len(upstream):
        ready = [n for n in upstream if n not in order and upstream[n] <= set(order)]
        if not ready:
            raise ValueError(f"{Path(repo) / 'dvc.yaml'}: stages {sorted(set(upstream) - set(order))} form a "
                             "dependency cycle")
        order.append(ready[0])
    return order


def upstream_of(repo: str | Path, stages: list[str]) -> list[str]:
    """Every stage that `stages` depend on, directly or not, that is not itself in `stages` (pipeline order)."""
    graph, found, todo = stage_graph(repo), set(), list(stages)
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in found:
                found.add(dep)
                todo.append(dep)
    return [s for s in stage_order(repo) if s in found - set(stages)]


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


_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def with_parent_death_signal(cmd: list[str]) -> list[str]:
    """`cmd` run so that it gets SIGTERM when the flow process dies (util-linux setpriv's PR_SET_PDEATHSIG): no
    `dvc repro` outlives its flow. Without setpriv, the stage's own orphan watch still stops the stage."""
    return [_SETPRIV, "--pdeathsig", "TERM", *cmd] if _SETPRIV else cmd


def _retry_unless_busy(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: a busy workspace will still be busy in a few seconds; fail at once."""
    return not isinstance(state.data, WorkspaceBusyError)


# --- concurrency limits (Prefect global concurrency: a run that finds the slot taken waits in line) ----------

def workspace_limit(root: Path) -> str:
    """Name of the global concurrency limit of one workspace: this host and this path."""
    digest = hashlib.sha1(f"{socket.gethostname()}:{Path(root).resolve()}".encode()).hexdigest()[:12]
    return f"vidssl-workspace-{digest}"


def gpu_limit() -> str:
    """Name of the global concurrency limit of the GPU this process trains on (host + first visible device)."""
    device = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip() or "0"
    host = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())
    return f"vidssl-gpu-{host}-{device}"


def ensure_limit(name: str, limit: int = 1) -> None:
    """Create global concurrency limit `name` with `limit` slots unless it exists (limits are created, not
    implied, in Prefect 3)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))
        except ObjectAlreadyExists:
            pass  # created by a run that started at the same moment


def _reset_limit(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))


@contextmanager
def limit_slot(name: str) -> Iterator[None]:
    """Occupy the one slot of global concurrency limit `name`, for a run that already holds the file lock
    guarding the same thing.

    The file lock is what queues runs: the OS frees it the moment its holder dies. A slot still taken while
    we hold that lock was left by a run that is gone (killed worker, restarted server: Prefect frees a lease
    only while the server that granted it lives), so it is given back with a warning instead of blocking the
    workspace for good. The slot shows the running pipeline in the Prefect UI and API.
    """
    from prefect.concurrency.sync import concurrency

    ensure_limit(name)
    stack = ExitStack()
    try:
        stack.enter_context(concurrency(name, occupy=1, timeout_seconds=5, lease_duration=LEASE_S, strict=True))
    except TimeoutError:
        get_run_logger().warning("concurrency limit %r was held by a run that is gone (its lock is free); "
                                 "giving its slot back", name)
        _reset_limit(name)
        stack.enter_context(concurrency(name, occupy=1, timeout_seconds=30, lease_duration=LEASE_S, strict=True))
    with stack:
        yield


@contextmanager
def gpu_guard() -> Iterator[None]:
    """One training stage per GPU on this host: a host-wide file lock (runs queue on it) plus the GPU's limit."""
    name = gpu_limit()
    folder = Path(os.environ.get("VIDSSL_GPU_LOCK_DIR") or tempfile.gettempdir())
    with open(folder / f"{name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            get_run_logger().warning("the GPU (%s) trains for another run: this stage waits in line", name)
            start = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            get_run_logger().info("the GPU is free after %.0f s of waiting", time.monotonic() - start)
        try:
            with limit_slot(name):
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def workspace_guard(root: Path, what: str, wait_s: float | None) -> Iterator[None]:
    """One pipeline per workspace: the workspace file lock (wait `wait_s` seconds, None = in line for as long
    as it takes, 0 = refuse at once), handed down to the stages, plus the workspace's concurrency limit."""
    stack = ExitStack()
    try:
        stack.enter_context(workspace_lock(what, root, wait=0, hand_down=True))
    except WorkspaceBusyError as busy:
        if wait_s is not None and wait_s <= 0:
            raise
        get_run_logger().warning("%s; this run waits in line", str(busy).split("; ")[0])
        start = time.monotonic()
        stack.enter_context(workspace_lock(what, root, wait=float("inf") if wait_s is None else wait_s,
                                           hand_down=True))
        get_run_logger().info("workspace free after %.0f s of waiting", time.monotonic() - start)
    with stack, limit_slot(workspace_limit(root)):
        yield


# --- tasks ---------------------------------------------------------------------------------------------------

@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE, retry_condition_fn=_retry_unless_busy)
def run_stage(stage: str, repo: str, env: dict[str, str], force: bool = False) -> dict[str, Any]:
    """Run `dvc repro --single-item <stage>` in `repo`, streaming its output to the Prefect log.

    Args:
        stage: stage name in dvc.yaml.
        repo: the DVC workspace.
        env: variables added to this process's os.environ for the stage (the worker's own environment stays,
            so a GPU worker keeps its CUDA settings, and the workspace lock is handed down).
        force: pass `--force` (run even if DVC finds nothing changed).

    Returns:
        {"stage", "returncode", "seconds", "ran"}; `ran` is False when DVC skipped the unchanged stage.

    Raises:
        PipelineBusyError: another dvc process or stage holds a lock this stage needs (not retried).
        StageFailedError: dvc exited non-zero; the message holds its last 40 lines.
    """
    cmd = [*handoff.dvc_command(), "repro", "--single-item", stage, *(["--force"] if force else [])]
    returncode, tail, ran, seconds = _stream(cmd, repo, env)
    if returncode != 0:
        raise stage_error(stage, Path(repo), returncode, tail)
    return {"stage": stage, "returncode": returncode, "seconds": seconds, "ran": ran}


def _stream(cmd: list[str], repo: str, env: dict[str, str]) -> tuple[int, str, bool, float]:
    """Run a dvc command in `repo`, each output line to the Prefect log: (exit code, last lines, whether a
    stage ran, seconds). The command gets SIGTERM if this process dies."""
    logger = get_run_logger()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    ran = False
    start = time.monotonic()
    with subprocess.Popen(
        with_parent_death_signal(cmd), cwd=repo, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
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
    return returncode, "\n".join(tail), ran, round(time.monotonic() - start, 3)


@task(name="dvc-experiment", task_run_name="split {split}", cache_policy=NO_CACHE,
      retry_condition_fn=_retry_unless_busy)
def run_split(split: int, repo: str, env: dict[str, str], name: str, stages: list[str],
              force: bool = False) -> dict[str, Any]:
    """One official split as a DVC experiment in `repo`'s workspace: `dvc exp run -S data.split=N --name NAME
    --single-item <stages in pipeline order>`, streaming its output to the Prefect log.

    Returns:
        {"stage": "split N", "experiment", "returncode", "seconds", "ran"}.

    Raises:
        PipelineBusyError: another dvc process holds a lock the experiment needs.
        StageFailedError: `dvc exp run` exited non-zero; the message holds its last 40 lines.
    """
    cmd = splits.exp_run_command(handoff.dvc_command(), split, name, force, ["--single-item", *stages])
    returncode, tail, ran, seconds = _stream(cmd, repo, env)
    if returncode != 0:
        shown = "dvc " + " ".join(cmd[len(handoff.dvc_command()):])
        raise stage_error(f"split {split}", Path(repo), returncode, tail, shown)
    return {"stage": f"split {split}", "experiment": name, "returncode": returncode, "seconds": seconds, "ran": ran}


@task(name="dvc-transfer", task_run_name="dvc {verb}", cache_policy=NO_CACHE, retries=IO_RETRIES,
      retry_delay_seconds=IO_RETRY_DELAY_S)
def dvc_transfer(verb: str, repo: str, stages: list[str]) -> str:
    """`dvc push` or `dvc pull` of the outs of `stages` (through the workspace's default DVC remote)."""
    out = handoff.run_dvc(Path(repo), verb, *stages)
    get_run_logger().info("dvc %s %s: %s", verb, " ".join(stages), out.strip().splitlines()[-1:] or "done")
    return out


def task_for(stage: str) -> Any:
    """`run_stage` configured for one stage: retries for I/O stages, tag "gpu" for GPU stages."""
    io = stage in IO_STAGES
    return run_stage.with_options(
        retries=IO_RETRIES if io else 0,
        retry_delay_seconds=IO_RETRY_DELAY_S if io else 0,
        tags={"vidssl", "gpu"} if stage in GPU_STAGES else {"vidssl"},
    )


def _run_one(stage: str, root: Path, env: dict[str, str], force: bool) -> dict[str, Any]:
    if stage in GPU_STAGES:  # one training stage per GPU, across every workspace of this host
        with gpu_guard():
            return task_for(stage)(stage, str(root), env, force=force)
    return task_for(stage)(stage, str(root), env, force=force)


def _summary(results: list[dict[str, Any]], planned: list[str]) -> str:
    done = {r["stage"]: r for r in results}
    rows = []
    for stage in planned:
        r = done.get(stage)
        status = "not run" if r is None else ("ran" if r["ran"] else "up to date")
        where = "" if r is None or not r.get("where") else f" (on {r['where']})"
        rows.append(f"  {stage:<10} {status:<11}" + ("" if r is None else f" {r['seconds']:8.1f} s{where}"))
    return "pipeline summary:\n" + "\n".join(rows)


def final_message(results: list[dict[str, Any]]) -> str:
    """The flow run's final state message: what reran, or that nothing did."""
    ran = [r["stage"] for r in results if r["ran"]]
    if not ran:
        return f"nothing new: all {len(results)} stage(s) up to date, nothing reran"
    return f"reran {len(ran)} of {len(results)} stage(s): {', '.join(ran)}"


def _send_to_gpu(root: Path, gpu_part: list[str], deployment: str, pid: str, force: bool,
                 ran_before: list[str]) -> list[dict[str, Any]]:
    """Run `gpu_part` as a run of the GPU deployment, data and models moving through the DVC remote."""
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    inputs = upstream_of(root, gpu_part)
    if inputs:
        dvc_transfer("push", str(root), inputs)
    handoff.publish(handoff.collect(root, inputs, ran_before, with_params=True), TO_GPU)
    logger.info("sending %s to deployment %s", ", ".join(gpu_part), deployment)
    run = run_deployment(deployment, parameters={"source_run": str(flow_run.id), "pipeline_id": pid,
                                                 "stages": gpu_part, "force": force}, timeout=None)
    if not run.state or not run.state.is_completed():
        state = run.state
        raise StageFailedError(",".join(gpu_part), 1, f"GPU run {run.name} ({run.id}) of {deployment} ended "
                               f"{state.name if state else 'without a state'}: {state.message if state else ''}")
    back = handoff.fetch(str(run.id), FROM_GPU)
    handoff.apply(root, {**back, "params": None})
    dvc_transfer("pull", str(root), gpu_part)
    return [{"stage": s, "returncode": 0, "seconds": back.get("seconds", {}).get(s, 0.0), "ran": s in back["ran"],
             "where": f"gpu run {run.name}"} for s in gpu_part]


def run_pipeline(root: Path, stages: list[str] | None, force: bool, pipeline_id: str | None, wait_s: float | None,
                 gpu_deployment: str | None = None) -> Any:
    """The body of the pipeline flows: slot, lock, stages in order (GPU ones sent away when asked).

    Returns:
        The final state: Completed with a message saying what reran (or that nothing did), or a Failed state
        named "WorkspaceBusy" when the workspace was taken and the run was not to wait.
    """
    logger = get_run_logger()
    planned = select_stages(root, stages)
    if splits.wants_all_splits(root):
        return run_all_splits(root, planned, force, pipeline_id, wait_s, gpu_deployment)
    pid = pipeline_id or str(flow_run.id)
    env = stage_env(pid, str(flow_run.id))
    results: list[dict[str, Any]] = []
    logger.info("workspace %s; stages: %s (pipeline id %s)", root, ", ".join(planned), pid)
    down = tracking_down()
    if down:  # before any stage: a run must not train for hours and then lose its tracking
        logger.error("%s", down)
        return Failed(name="TrackingUnavailable", message=down)
    status = "FAILED"
    try:
        with workspace_guard(root, f"pipeline {pid}", wait_s):
            try:
                gpu_part = [s for s in planned if s in GPU_STAGES] if gpu_deployment else []
                for stage in planned:
                    if stage in gpu_part:
                        if stage == gpu_part[0]:
                            ran = [r["stage"] for r in results if r["ran"]]
                            results += _send_to_gpu(root, gpu_part, gpu_deployment, pid, force, ran)
                        continue
                    results.append(_run_one(stage, root, env, force))
            finally:
                logger.info(_summary(results, planned))
            status = "FINISHED"
    except WorkspaceBusyError as err:
        busy = err if isinstance(err, PipelineBusyError) else PipelineBusyError(str(err))
        logger.error("%s", busy)
        return Failed(name="WorkspaceBusy", message=str(busy), data=busy)
    finally:
        if results:
            end_parent_run(root, pid, status)
    return Completed(message=final_message(results), data=results)


def run_all_splits(root: Path, planned: list[str], force: bool, pipeline_id: str | None, wait_s: float | None,
                   gpu_deployment: str | None = None) -> Any:
    """`data.split: all`: each official split as a DVC experiment in the workspace (`dvc exp run -S
    data.split=N`), one after the other; then their mean and sample sd in reports/splits.{json,md} and an MLflow
    run over the three splits' pipeline runs. params.yaml is given back as it was (`data.split: all`); the
    workspace holds the last split's results, and `dvc exp apply <name>` brings back another's."""
    logger = get_run_logger()
    if gpu_deployment:
        message = ("data.split: all runs its three experiments in this workspace; run it without a GPU deployment "
                   "(`vidssl pipeline` on the GPU machine), or one split at a time")
        logger.error("%s", message)
        return Failed(name="SplitsHere", message=message)
    if splits.SUMMARY_STAGE not in planned:
        message = f"data.split: all reports each split's {splits.SUMMARY_STAGE} metrics; include that stage"
        logger.error("%s", message)
        return Failed(name="SplitsNeedEvaluate", message=message)
    try:
        splits.check_experiments(root)
    except ValueError as err:
        logger.error("%s", err)
        return Failed(name="NoGitCommit", message=str(err))
    pid = pipeline_id or str(flow_run.id)
    down = tracking_down()
    if down:
        logger.error("%s", down)
        return Failed(name="TrackingUnavailable", message=down)
    params = root / "params.yaml"
    original, mode = params.read_bytes(), params.stat().st_mode & 0o777
    from vidssl.config import load_params
    from vidssl.io import atomic_path

    dataset = load_params(params, any_split=True).data.dataset
    results: list[dict[str, Any]] = []
    per_split: dict[int, dict[str, float]] = {}
    names = {n: splits.experiment_name(pid, n) for n in splits.SPLITS}
    children = {n: f"{pid}-split{n}" for n in splits.SPLITS}
    logger.info("workspace %s; data.split: all -> experiments %s over stages %s", root,
                ", ".join(names.values()), ", ".join(planned))
    try:
        with workspace_guard(root, f"pipeline {pid}", wait_s):
            try:
                for n in splits.SPLITS:
                    status = "FAILED"
                    try:
                        with gpu_guard():  # the experiment trains: one per GPU, as a training stage
                            results.append(run_split(n, str(root), stage_env(children[n], str(flow_run.id)),
                                                     names[n], planned, force))
                        per_split[n] = splits.read_metrics(root)
                        status = "FINISHED"
                    finally:
                        end_parent_run(root, children[n], status)
            finally:
                with atomic_path(params) as tmp:  # `dvc exp run -S` left the last split's value in the file
                    tmp.write_bytes(original)
                    tmp.chmod(mode)
                logger.info(_summary(results, [f"split {n}" for n in splits.SPLITS]))
    except WorkspaceBusyError as err:
        busy = err if isinstance(err, PipelineBusyError) else PipelineBusyError(str(err))
        logger.error("%s", busy)
        return Failed(name="WorkspaceBusy", message=str(busy), data=busy)
    agg = splits.aggregate(per_split)
    out_json, out_md = root / "reports" / "splits.json", root / "reports" / "splits.md"
    logger.info("%s", splits.write_reports(agg, out_json, out_md, names, dataset))
    if os.environ.get("MLFLOW_TRACKING_URI") or (root / "mlruns" / "mlflow.db").is_file():
        try:
            run_id = splits.log_parent(root, pid, agg, children, names, [out_json, out_md], dataset)
            logger.info("MLflow run %s holds the mean and sd over the splits", run_id)
        except Exception as err:  # noqa: BLE001 - tracking must not fail a finished run; the reports are written
            logger.warning("could not log the splits' summary to MLflow: %s", err)
    return Completed(message=f"ran data.split 1-3 as experiments {', '.join(names.values())}; mean and sd in "
                             f"{out_md}", data=results)


def tracking_down() -> str | None:
    """Why the MLflow tracking server in MLFLOW_TRACKING_URI cannot be used (None: it answers, or is local)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        return None
    from vidssl.pipeline.tracking import check_tracking

    try:
        check_tracking(uri)
    except (OSError, RuntimeError) as err:  # TrackingUnavailableError is a ConnectionError
        return str(err)
    return None


def end_parent_run(root: Path, pid: str, status: str) -> None:
    """End the pipeline's MLflow parent run once every stage has ended (tracking-only: never fails the run)."""
    if not (os.environ.get("MLFLOW_TRACKING_URI") or (root / "mlruns" / "mlflow.db").is_file()):
        return  # nothing was tracked
    try:
        from vidssl.pipeline.tracking import finish_pipeline

        finish_pipeline(pid, status, root)
    except Exception as err:  # noqa: BLE001 - tracking must not turn a finished pipeline into a failed one
        get_run_logger().warning("could not end the MLflow parent run of pipeline %s: %s", pid, err)


@flow(name="vidssl-pipeline")
def pipeline(repo: str = ".", stages: list[str] | None = None, force: bool = False, pipeline_id: str | None = None,
             wait_s: float | None = 0, gpu_deployment: str | None = None) -> Any:
    """Run the DVC stages of `repo` in dependency order, one task each, stopping at the first failure.

    Args:
        repo: the DVC workspace (holds dvc.yaml and .dvc/).
        stages: stage names to run (pipeline order is kept); None runs all of them (see `select_stages`).
        force: pass `--force` to every `dvc repro`.
        pipeline_id: id that links the stages' MLflow runs; default this flow run's id.
        wait_s: seconds to wait for a workspace another run holds (None: no limit; 0: refuse at once).
        gpu_deployment: "flow/deployment" to send the GPU stages to; None runs them here.

    Returns:
        One `run_stage` result per stage; the flow run's final message says what reran.
    """
    return run_pipeline(Path(repo).resolve(), stages, force, pipeline_id, wait_s, gpu_deployment)


@flow(name="vidssl-pipeline")
def workspace_pipeline(stages: list[str] | None = None, force: bool = False,
                       gpu_deployment: str | None = None) -> Any:
    """The deployed pipeline: runs in the checkout this flow's code was loaded from (no repo parameter), and
    waits in line behind another run of the same workspace instead of failing.

    Args:
        stages: stage names to run; None runs all of them.
        force: pass `--force` to every `dvc repro`.
        gpu_deployment: "flow/deployment" (e.g. "vidssl-gpu-stages/gpu") to send pretrain, finetune and
            retrieve to; None runs them here.
    """
    return run_pipeline(WORKSPACE, stages, force, None, None, gpu_deployment)


@flow(name="vidssl-gpu-stages")
def gpu_stages(source_run: str, pipeline_id: str, stages: list[str] | None = None, force: bool = False) -> Any:
    """The GPU side of a pipeline run, in this checkout: take the handoff of flow run `source_run`, pull the
    inputs, run the GPU stages, push the models, hand the results back.

    Args:
        source_run: id of the flow run that sent the stages (its handoff artifact is read).
        pipeline_id: the pipeline's id, so the stages' MLflow runs nest under its parent run.
        stages: which GPU stages to run (default all of pretrain, finetune, retrieve that dvc.yaml has).
        force: pass `--force` to every `dvc repro`.
    """
    logger = get_run_logger()
    root = WORKSPACE
    wanted = select_stages(root, stages if stages is not None else sorted(GPU_STAGES & set(stage_order(root))))
    env = stage_env(pipeline_id, str(flow_run.id))
    results: list[dict[str, Any]] = []
    try:
        with workspace_guard(root, f"GPU stages of pipeline {pipeline_id}", None):
            sent = handoff.fetch(source_run, TO_GPU)
            inputs = handoff.apply(root, sent)
            logger.info("handoff from flow run %s: stages %s at commit %s", source_run, ", ".join(inputs),
                        sent["commit"][:12])
            if inputs:
                dvc_transfer("pull", str(root), inputs)
            for stage in wanted:
                results.append(_run_one(stage, root, env, force))
            dvc_transfer("push", str(root), wanted)
            back = handoff.collect(root, wanted, [r["stage"] for r in results if r["ran"]], with_params=False)
            back["seconds"] = {r["stage"]: r["seconds"] for r in results}
            handoff.publish(back, FROM_GPU)
            logger.info(_summary(results, wanted))
    except WorkspaceBusyError as err:
        return Failed(name="WorkspaceBusy", message=str(err), data=err)
    return Completed(message=final_message(results), data=results)


def main(argv: list[str] | None = None) -> int:
    """Command line: run the flow once.

    Returns:
        Exit code (vidssl.entry's table): 0 success, 1 a stage failed, 2 bad arguments, 75 workspace busy.
    """
    parser = argparse.ArgumentParser(description="Run the vidssl DVC pipeline as a Prefect flow.")
    parser.add_argument("--repo", default=".", help="DVC workspace (default: current directory)")
    parser.add_argument("--stages", default=None, help="comma-separated stage names (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun stages even if DVC finds them up to date")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait this long for a workspace another run holds (default 0: refuse at once; "
                             "-1: no limit)")
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
    try:
        planned = select_stages(args.repo, stages)  # fail fast, before a Prefect server is started
        if splits.wants_all_splits(Path(args.repo)):
            if splits.SUMMARY_STAGE not in planned:
                raise ValueError(f"data.split: all reports each split's {splits.SUMMARY_STAGE} metrics: add "
                                 f"{splits.SUMMARY_STAGE} to --stages, or leave --stages out")
            splits.check_experiments(Path(args.repo))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    print(f"reporting to the Prefect server at {url}" if url else
          "no Prefect server configured (PREFECT_API_URL, `vidssl serve`): a temporary local one records this run",
          file=sys.stderr)
    try:
        pipeline(repo=args.repo, stages=stages, force=args.force, wait_s=None if args.wait < 0 else args.wait)
    except (WorkspaceBusyError, StageFailedError, handoff.HandoffError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY if isinstance(exc, WorkspaceBusyError) else EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
