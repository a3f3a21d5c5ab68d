"""MLflow tracking: one parent run per pipeline run, one nested run per stage.

Stages run as separate processes (DVC runs each), so they find their parent run by a pipeline id: the Prefect
flow run id (env ``VIDSSL_PIPELINE_ID``), else the identity of the ``dvc repro`` process that launched them,
else a fresh id (a stage run by hand gets a parent of its own). mlflow is imported lazily.

Faults are handled here, not in the stages:
- a tracking server that does not answer stops the stage before any work (``check_tracking``), naming the URI;
- a server that goes away mid-run loses nothing: calls that fail are written to an outbox file under
  ``mlruns/outbox/`` and replayed, in order and with their original timestamps, when the server answers again
  (later in the same run, or at the next stage's start);
- a stage killed and rerun with the same params and data continues the same MLflow run;
- runs left RUNNING by a process that no longer exists (SIGKILL, power loss) are marked KILLED at the next start.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

log = logging.getLogger(__name__)

EXPERIMENT = "vidssl"
PIPELINE_TAG = "vidssl.pipeline_id"
OWNER_TAG = "vidssl.owner"  # host:pid:start-time of the process that holds a RUNNING run
RESUME_TAG = "vidssl.resume_key"  # stage + params + data: a rerun with the same key continues the run
DVC_EXP_TAG = "dvc.exp_name"
# MLflow 3 opens an experiment in the GenAI view unless told it holds model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
CHECK_TIMEOUT_S = 4.0  # per try; three tries stay well inside the 15 s a dead server may cost a run
RETRY_OFFLINE_S = 30.0  # while the server is away, try it again at most this often
# Written by DVC during a run: a change there is not a change to the code that ran.
_RUN_WRITTEN = ("dvc.lock",)


class TrackingUnavailableError(ConnectionError):
    """The tracking store does not answer; raised before any work so no training is lost."""


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the sqlite store under ``<root>/mlruns`` (file stores are refused)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(root or Path.cwd()).resolve()
    (root / "mlruns").mkdir(exist_ok=True)
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def _http_defaults() -> None:
    """Short HTTP timeouts and no retry storm: MLflow's defaults spend minutes on a dead server."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def check_tracking(uri: str, tries: int = 3, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Fail fast when an HTTP tracking server does not answer ``/health`` (local stores always pass).

    Raises:
        TrackingUnavailableError: naming the URI and what to do, after at most ``tries * timeout_s`` seconds.
    """
    if not uri.startswith(("http://", "https://")):
        return
    error: Exception | None = None
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as reply:
                if reply.status == 200:
                    return
                error = RuntimeError(f"HTTP {reply.status}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            error = exc
        if attempt + 1 < tries:
            time.sleep(0.5)
    raise TrackingUnavailableError(
        f"MLflow tracking server {uri} does not answer ({error}); start it (`vidssl server`) or unset "
        "MLFLOW_TRACKING_URI to track in the local store mlruns/. Nothing was trained.")


def _dvc_ancestor() -> str | None:
    """'<pid>-<start time>' of the nearest ancestor process running `dvc repro`/`dvc exp run`, if any (Linux)."""
    pid = os.getppid()
    for _ in range(12):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        words = [Path(w.decode(errors="replace")).name for w in cmd if w]
        if any(w.startswith("dvc") for w in words) and ("repro" in words or "exp" in words):
            return f"dvc-{pid}-{stat[19]}"
        pid = int(stat[1])
        if pid <= 1:
            return None
    return None


def pipeline_id() -> str:
    """The id that groups this process's stage run with the other stages of the same pipeline run."""
    return os.environ.get("VIDSSL_PIPELINE_ID") or _dvc_ancestor() or f"solo-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- lineage


def _git(root: Path | None, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(root: Path | None = None) -> str:
    """The commit checked out in ``root`` ("unknown" outside git)."""
    return _git(root, "rev-parse", "HEAD") or "unknown"


def git_changes(root: Path | None = None) -> list[str]:
    """Tracked files changed since the commit, less those DVC itself rewrites during a run (dvc.lock)."""
    out = _git(root, "diff", "--name-only", "HEAD")
    paths = [line.strip() for line in (out or "").splitlines() if line.strip()]
    return [p for p in paths if Path(p).name not in _RUN_WRITTEN]


def _digest(obj: Any) -> str:
    return hashlib.md5(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def dvc_lock_hashes(root: Path) -> dict[str, str]:
    """One digest per stage entry of ``dvc.lock`` (deps, params and outs as DVC recorded them)."""
    path = root / "dvc.lock"
    try:
        lock = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {name: _digest(entry)[:12] for name, entry in (lock.get("stages") or {}).items()}


def dataset_digest(root: Path) -> str:
    """DVC's hash of data/frames (from dvc.lock) plus the lists' bytes: what a run's data was."""
    parts: list[str] = []
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
        for out in ((lock.get("stages") or {}).get("extract") or {}).get("outs") or []:
            if out.get("path") == "data/frames":
                parts.append(str(out.get("md5")))
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    lists = root / "data" / "lists"
    if lists.is_dir():
        for csv in sorted(lists.glob("*.csv")):
            parts.append(hashlib.md5(csv.read_bytes()).hexdigest())
    return _digest(parts)[:16] if parts else "unknown"


def lineage_tags(root: Path) -> dict[str, str]:
    """Tags that say exactly what ran: commit, local changes, dvc.lock stage hashes, data, flow run, versions."""
    import torch

    commit = git_commit(root)
    changes = git_changes(root)
    tags = {
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "git_changes": ",".join(changes)[:500] if changes else "none",
        "dataset_digest": dataset_digest(root),
        "flow_run_id": os.environ.get("VIDSSL_FLOW_RUN_ID", ""),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "host": platform.node(),
    }
    tags.update({f"dvc.lock.{stage}": h for stage, h in dvc_lock_hashes(root).items()})
    exp = dvc_experiment_name()
    if exp:
        tags[DVC_EXP_TAG] = exp
    return tags


def dvc_experiment_name() -> str | None:
    """The DVC experiment this process runs under (`dvc exp run` sets DVC_EXP_NAME), if any."""
    return os.environ.get("DVC_EXP_NAME") or None


def pipeline_title(root: Path) -> str:
    """'<method> · <backbone> · <dataset> · <date>' from params.yaml: what a parent run is, at a glance."""
    today = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    try:
        from vidssl.config import load_params

        cfg = load_params(root / "params.yaml")
        return f"{cfg.pretrain.method} · {cfg.model.backbone} · {cfg.data.dataset} · {today}"
    except Exception:  # noqa: BLE001 - a title never stops a run; the params are checked by the stage itself
        return f"pipeline · {today}"


# ---------------------------------------------------------------- process ownership


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_id() -> str:
    """host:pid:start-time of this process (start time tells a reused pid apart)."""
    return f"{platform.node()}:{os.getpid()}:{_start_time(os.getpid()) or '?'}"


def owner_alive(owner: str) -> bool:
    """Whether the process named by ``owner`` still runs; another host's process is assumed alive."""
    try:
        host, pid, start = owner.rsplit(":", 2)
    except ValueError:
        return True
    if host != platform.node() or start == "?" or not Path("/proc").is_dir():
        return True
    return _start_time(int(pid)) == start


# ---------------------------------------------------------------- outbox: nothing lost while the server is away


def _is_connection_error(exc: BaseException) -> bool:
    """A failure to reach the store (worth buffering), as opposed to a bad request (a bug to surface)."""
    import requests

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                        TimeoutError)):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in ("Max retries exceeded", "Connection refused", "ConnectionError",
                                   "timed out", "NewConnectionError", "RemoteDisconnected",
                                   "API request to", "database is locked"))


class Outbox:
    """An append-only JSON-lines file of tracking calls that could not be delivered, replayed in order."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.path = folder / f"{run_id}.jsonl"
        self.run_id = run_id

    def put(self, op: str, **data: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if op == "artifact":  # copy now: the file may change or vanish before the server is back
            keep = self.folder / "files" / uuid.uuid4().hex / Path(data["path"]).name
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data["path"], keep)
            data["path"] = str(keep)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"op": op, **data}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def pending(self) -> int:
        return len(self.path.read_text().splitlines()) if self.path.is_file() else 0

    def replay(self, client: Any) -> int:
        """Send every buffered call; returns how many were sent. Stops (keeping the rest) at the first failure."""
        if not self.path.is_file():
            return 0
        lines = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        sent = 0
        try:
            for entry in lines:
                _apply(client, self.run_id, entry)
                sent += 1
        finally:
            rest = lines[sent:]
            if rest:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(e) + "\n" for e in rest), encoding="utf-8")
                os.replace(tmp, self.path)
            else:
                self.path.unlink(missing_ok=True)
        return sent


def _apply(client: Any, run_id: str, entry: dict[str, Any]) -> None:
    """Perform one tracking call described by an outbox entry."""
    from mlflow.entities import Metric, Param, RunTag

    op = entry["op"]
    if op == "metrics":
        metrics = [Metric(k, float(v), int(entry["ts"]), int(entry.get("step") or 0))
                   for k, v in entry["values"].items()]
        client.log_batch(run_id, metrics=metrics, synchronous=True)
    elif op == "params":
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in entry["values"].items()], synchronous=True)
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in entry["values"].items()], synchronous=True)
    elif op == "artifact":
        client.log_artifact(run_id, entry["path"], artifact_path=entry.get("folder"))
    elif op == "terminate":
        client.set_terminated(run_id, status=entry["status"], end_time=entry.get("end_time"))
    elif op == "running":
        client.update_run(run_id, status="RUNNING")
    else:
        raise ValueError(f"unknown outbox entry {op!r}")


def sync_outbox(client: Any, root: Path) -> int:
    """Replay every run's outbox under ``root/mlruns/outbox``; returns the number of calls delivered."""
    folder = root / "mlruns" / "outbox"
    sent = 0
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        box = Outbox(folder, path.stem)
        try:
            sent += box.replay(client)
        except Exception as exc:  # noqa: BLE001 - still away; kept for the next start
            if not _is_connection_error(exc):
                raise
            log.warning("tracking: %d buffered calls for run %s still waiting (%s)", box.pending(), path.stem, exc)
            break
    if sent:
        log.info("tracking: delivered %d buffered calls from %s", sent, folder)
    return sent


class _Channel:
    """Delivers one run's calls, or buffers them in its outbox while the store does not answer."""

    def __init__(self, client: Any, run_id: str, outbox_dir: Path) -> None:
        self.client, self.run_id = client, run_id
        self.outbox = Outbox(outbox_dir, run_id)
        self._offline_since: float | None = None

    def send(self, op: str, **data: Any) -> None:
        entry = {"op": op, **data}
        if self._offline_since is not None:
            if time.monotonic() - self._offline_since < RETRY_OFFLINE_S or not self._try_flush():
                self.outbox.put(op, **data)
                return
        try:
            _apply(self.client, self.run_id, entry)
        except Exception as exc:  # noqa: BLE001 - only connection faults are buffered; others are raised
            if not _is_connection_error(exc):
                raise
            log.warning("tracking store unreachable (%s); buffering in %s until it answers", exc, self.outbox.path)
            self._offline_since = time.monotonic()
            self.outbox.put(op, **data)

    def _try_flush(self) -> bool:
        try:
            self.outbox.replay(self.client)
        except Exception as exc:  # noqa: BLE001
            if not _is_connection_error(exc):
                raise
            self._offline_since = time.monotonic()
            return False
        log.info("tracking store answers again; buffered calls delivered")
        self._offline_since = None
        return True

    def flush(self) -> bool:
        """Try to deliver what is buffered; True when nothing is left."""
        return self.outbox.pending() == 0 or self._try_flush()


# ---------------------------------------------------------------- runs


def _experiment_id(mlflow: Any, client: Any, root: Path) -> str:
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (root / "mlruns" / "artifacts").resolve().as_uri()
    return client.create_experiment(EXPERIMENT, artifact_location=location, tags=dict(EXPERIMENT_KIND))


def mark_killed_runs(client: Any, exp_id: str, keep: set[str] = frozenset()) -> list[str]:
    """Mark KILLED every RUNNING run whose owning process on this host is gone; returns their ids."""
    killed = []
    for run in client.search_runs([exp_id], filter_string="attributes.status = 'RUNNING'", max_results=500):
        owner = run.data.tags.get(OWNER_TAG)
        if run.info.run_id in keep or not owner or owner_alive(owner):
            continue
        client.set_tag(run.info.run_id, "vidssl.end_reason", f"its process ({owner}) was gone at the next start")
        client.set_terminated(run.info.run_id, status="KILLED")
        killed.append(run.info.run_id)
    if killed:
        log.warning("tracking: marked %d run(s) of dead processes KILLED: %s", len(killed), ", ".join(killed))
    return killed


def _resumable_run(client: Any, exp_id: str, stage: str, key: str) -> Any | None:
    """The newest run of ``stage`` with resume key ``key`` whose process died before it finished."""
    query = (f"tags.`vidssl.stage` = '{stage}' and tags.`{RESUME_TAG}` = '{key}' "
             "and attributes.status = 'RUNNING'")
    for run in client.search_runs([exp_id], filter_string=query, max_results=20,
                                  order_by=["attributes.start_time DESC"]):
        if not owner_alive(run.data.tags.get(OWNER_TAG, "")):
            return run
    return None


def _parent_run(client: Any, exp_id: str, pid: str, tags: dict[str, str], root: Path) -> str:
    query = f"tags.`{PIPELINE_TAG}` = '{pid}' and tags.`vidssl.role` = 'pipeline'"
    found = client.search_runs([exp_id], filter_string=query, max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=_tags({**tags, OWNER_TAG: owner_id()}), synchronous=True)
        return run_id
    run = client.create_run(exp_id, run_name=pipeline_title(root),
                            tags={PIPELINE_TAG: pid, "vidssl.role": "pipeline", OWNER_TAG: owner_id(), **tags})
    return run.info.run_id


def _tags(tags: dict[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in tags.items()]


class MlflowTracker:
    """The tracker handed to training: per-epoch metrics and artifacts on the stage run, a few on the parent.

    Every call is delivered at once or, while the store does not answer, kept in an outbox and delivered later.
    """

    def __init__(self, client: Any, run_id: str, parent_id: str, outbox_dir: Path) -> None:
        self.run_id, self.parent_id = run_id, parent_id
        self._run = _Channel(client, run_id, outbox_dir)
        self._parent = _Channel(client, parent_id, outbox_dir)

    @property
    def client(self) -> Any:
        """The MlflowClient of this run's store."""
        return self._run.client

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._run.send("metrics", values={k: float(v) for k, v in metrics.items()}, step=step,
                       ts=int(time.time() * 1000))

    def log_params(self, params: dict[str, Any]) -> None:
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._run.send("params", values={k: str(v)[:500] for k, v in items[i:i + 100]})

    def log_artifact(self, path: str | os.PathLike[str], folder: str | None = None) -> None:
        if Path(path).is_file():
            self._run.send("artifact", path=str(path), folder=folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._run.send("tags", values=dict(tags))

    def log_pipeline_metrics(self, metrics: dict[str, float]) -> None:
        """Summary metrics on the parent (pipeline) run, where a reader looks first."""
        self._parent.send("metrics", values={k: float(v) for k, v in metrics.items()}, step=0,
                          ts=int(time.time() * 1000))

    def log_pipeline_artifact(self, path: str | os.PathLike[str], folder: str | None = None) -> None:
        if Path(path).is_file():
            self._parent.send("artifact", path=str(path), folder=folder)

    def set_pipeline_tags(self, tags: dict[str, str]) -> None:
        self._parent.send("tags", values=dict(tags))

    def _end(self, status: str, lineage: dict[str, str]) -> None:
        # The parent ends after its child, so its end time and status always cover every stage run so far.
        self._run.send("terminate", status=status, end_time=int(time.time() * 1000))
        self._parent.send("tags", values=lineage)
        self._parent.send("terminate", status=status, end_time=int(time.time() * 1000) + 1)
        for channel in (self._run, self._parent):
            if not channel.flush():
                log.warning("tracking: %d calls kept in %s; they are delivered at the next start",
                            channel.outbox.pending(), channel.outbox.path)


def resume_key(stage: str, params: dict[str, Any], root: Path) -> str:
    """Stage, params and data: what a checkpoint resume also requires, so resumed training shares its run."""
    return _digest({"stage": stage, "params": params, "data": dataset_digest(root)})[:16]


def open_client(root: Path) -> tuple[Any, str, str]:
    """(client, uri, experiment id) for ``root``'s store, after a fast reachability check."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    _http_defaults()
    uri = tracking_uri(root)
    check_tracking(uri)
    import mlflow

    client = mlflow.MlflowClient(uri)
    try:
        exp_id = _experiment_id(mlflow, client, root)
    except Exception as exc:  # noqa: BLE001
        if _is_connection_error(exc):
            raise TrackingUnavailableError(f"tracking store {uri} does not answer ({exc}). Nothing was trained.")
        raise
    return client, uri, exp_id


@contextmanager
def stage_run(stage: str, params: dict[str, Any], root: Path | None = None) -> Iterator[MlflowTracker]:
    """Open a nested MLflow run for ``stage`` under its pipeline's parent run.

    Before yielding: the store is checked (a dead server stops here, naming the URI), buffered calls of
    earlier runs are delivered, runs of dead processes are marked KILLED, and a run of this stage with the same
    params and data left by a killed process is continued instead of a new one being opened.
    """
    root = Path(root or Path.cwd()).resolve()
    client, _uri, exp_id = open_client(root)
    outbox_dir = root / "mlruns" / "outbox"
    sync_outbox(client, root)
    key = resume_key(stage, params, root)
    previous = _resumable_run(client, exp_id, stage, key)
    mark_killed_runs(client, exp_id, keep={previous.info.run_id} if previous else set())
    lineage = lineage_tags(root)
    pid = pipeline_id()
    parent = _parent_run(client, exp_id, pid, lineage, root)
    run_tags = {**lineage, "vidssl.stage": stage, PIPELINE_TAG: pid, RESUME_TAG: key, OWNER_TAG: owner_id(),
                "mlflow.parentRunId": parent}
    if previous is not None:
        run_id = previous.info.run_id
        resumed = int(previous.data.tags.get("vidssl.resumed", "0")) + 1
        client.log_batch(run_id, tags=_tags({**run_tags, "vidssl.resumed": str(resumed)}), synchronous=True)
        log.info("tracking: continuing run %s of %s (its process was killed)", run_id, stage)
    else:
        run_id = client.create_run(exp_id, run_name=stage, tags=run_tags).info.run_id
    tracker = MlflowTracker(client, run_id, parent, outbox_dir)
    if previous is None:
        tracker.log_params(params)
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker._end(status, {f"dvc.lock.{s}": h for s, h in dvc_lock_hashes(root).items()})


def finish_pipeline(pid: str, status: str = "FINISHED", root: Path | None = None) -> None:
    """End a pipeline's parent run (for an orchestrator that knows the pipeline is over)."""
    root = Path(root or Path.cwd()).resolve()
    client, _uri, exp_id = open_client(root)
    query = f"tags.`{PIPELINE_TAG}` = '{pid}' and tags.`vidssl.role` = 'pipeline'"
    for run in client.search_runs([exp_id], filter_string=query, max_results=1):
        client.set_terminated(run.info.run_id, status=status)


def with_fallback(fn: Callable[[], Any], what: str) -> Any:
    """Run a tracking-only step; a store fault there is logged, never fatal to the stage's results."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        log.warning("tracking: %s skipped (%s)", what, exc)
        return None


class _StageFailed(Exception):
    """Raised inside ``record_stage`` to close its run as FAILED."""


def record_stage(stage: str, params: dict[str, Any], reports: list[Path], metrics: dict[str, float] | None = None,
                 failed: bool = False, root: Path | None = None) -> None:
    """A stage run for a stage that trains nothing (extract, validate): params, counts and its report files."""
    try:
        with stage_run(stage, params, root) as tracker:
            if metrics:
                tracker.log_metrics(metrics)
            for path in reports:
                tracker.log_artifact(path, "reports")
            if failed:
                raise _StageFailed
    except _StageFailed:
        pass
