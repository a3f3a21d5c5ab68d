"""MLflow tracking: one parent run per pipeline run, one nested run per stage.

Stages run as separate processes (DVC runs each), so they find their parent run by a pipeline id: the Prefect
flow run id (env ``VIDSSL_PIPELINE_ID``), else the identity of the ``dvc repro`` process that launched them,
else a fresh id (a stage run by hand gets a parent of its own). mlflow is imported lazily.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

EXPERIMENT = "vidssl"
PIPELINE_TAG = "vidssl.pipeline_id"


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the sqlite store under ``<root>/mlruns`` (file stores are refused)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(root or Path.cwd()).resolve()
    (root / "mlruns").mkdir(exist_ok=True)
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


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


def git_commit(root: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def _experiment_id(mlflow: Any, root: Path) -> str:
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        location = (root / "mlruns" / "artifacts").resolve().as_uri()
    return mlflow.create_experiment(EXPERIMENT, artifact_location=location)


def _parent_run(client: Any, exp_id: str, pid: str, tags: dict[str, str]) -> str:
    query = f"tags.`{PIPELINE_TAG}` = '{pid}' and tags.`vidssl.role` = 'pipeline'"
    found = client.search_runs([exp_id], filter_string=query, max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=f"pipeline {pid}",
                            tags={PIPELINE_TAG: pid, "vidssl.role": "pipeline", **tags})
    return run.info.run_id


class MlflowTracker:
    """The tracker handed to training: per-epoch metrics and artifacts on the active stage run."""

    def __init__(self, mlflow: Any) -> None:
        self._mlflow = mlflow

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        self._mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def log_artifact(self, path: str | os.PathLike[str], folder: str | None = None) -> None:
        if Path(path).exists():
            self._mlflow.log_artifact(str(path), artifact_path=folder)

    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)


@contextmanager
def stage_run(stage: str, params: dict[str, Any], root: Path | None = None) -> Iterator[MlflowTracker]:
    """Open a nested MLflow run for ``stage`` under its pipeline's parent run."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import torch

    root = Path(root or Path.cwd())
    mlflow.set_tracking_uri(tracking_uri(root))
    exp_id = _experiment_id(mlflow, root)
    client = mlflow.MlflowClient()
    tags = {
        "git_commit": git_commit(root),
        "flow_run_id": os.environ.get("VIDSSL_FLOW_RUN_ID", ""),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "host": platform.node(),
    }
    pid = pipeline_id()
    parent = _parent_run(client, exp_id, pid, tags)
    status = "FAILED"
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, parent_run_id=parent, nested=True,
                          tags={**tags, "vidssl.stage": stage, PIPELINE_TAG: pid}):
        tracker = MlflowTracker(mlflow)
        tracker.log_params(params)
        try:
            yield tracker
            status = "FINISHED"
        finally:
            # Keeps the parent's end time and status current; the last stage to finish leaves the final word.
            client.set_terminated(parent, status=status)
