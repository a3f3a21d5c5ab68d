"""Moving a pipeline between workspaces (a CPU checkout and a GPU worker's own clone).

Data and models travel through the DVC remote (`dvc push` on one side, `dvc pull` on the other). What the remote
does not carry travels in a small "handoff" that one side's flow run publishes as a Prefect artifact and the other
reads back by flow run id:

- the dvc.lock entries of the stages that ran on the sending side (so the receiver knows which data versions to
  pull, and DVC on the receiving side sees its inputs as up to date);
- those stages' outputs that DVC keeps out of its cache (`cache: false`: metrics, plots, reports), except
  persisted state such as training checkpoints, which stays with the workspace that trains;
- params.yaml and the git commit of the sender, so the receiver runs the same code on the same parameters.

The receiver refuses a handoff whose commit differs from its own checkout, and writes only paths that dvc.yaml
declares as outputs of the handed stages: a handoff cannot place files anywhere else.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ARTIFACT_TYPE = "vidssl-handoff"
MAX_FILE_BYTES = 8 << 20  # an uncached out larger than this belongs in the DVC cache, not in a handoff


class HandoffError(RuntimeError):
    """A handoff that cannot be applied: missing, from another commit, or naming paths it may not write."""


def dvc_command() -> list[str]:
    """The dvc of this interpreter's environment, so a worker never picks up another install."""
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]


def git_commit(repo: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise HandoffError(f"{repo} is not a git checkout ({out.stderr.strip()}); a GPU worker needs its own clone "
                           "of the same commit")
    return out.stdout.strip()


def _stage_specs(repo: Path) -> dict[str, dict[str, Any]]:
    return (yaml.safe_load((repo / "dvc.yaml").read_text()) or {}).get("stages") or {}


def _lock(repo: Path) -> dict[str, Any]:
    path = repo / "dvc.lock"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _uncached_outs(spec: dict[str, Any]) -> list[str]:
    """Outs, metrics and plots of one stage that DVC does not cache and that are not persisted state."""
    paths = []
    for key in ("outs", "metrics", "plots"):
        for entry in spec.get(key) or []:
            if isinstance(entry, str):
                continue  # cached by default
            for path, opts in entry.items():
                opts = opts or {}
                if opts.get("cache", True) is False and not opts.get("persist", False):
                    paths.append(path)
    return paths


def _files_under(repo: Path, rel: str) -> list[Path]:
    path = repo / rel
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return []


def collect(repo: Path, stages: list[str], ran: list[str], with_params: bool) -> dict[str, Any]:
    """The handoff of `stages` from workspace `repo` (after they ran there and their data was pushed)."""
    repo = Path(repo).resolve()
    specs, lock = _stage_specs(repo), _lock(repo).get("stages") or {}
    missing = [s for s in stages if s not in lock]
    if missing:
        raise HandoffError(f"{repo / 'dvc.lock'} has no entry for stage(s) {missing}: they never completed there")
    files: dict[str, str] = {}
    for stage in stages:
        for rel in _uncached_outs(specs[stage]):
            for path in _files_under(repo, rel):
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise HandoffError(f"{path} is {path.stat().st_size} bytes, too large to hand over; give it "
                                       "`cache: true` in dvc.yaml so that it travels through the DVC remote")
                files[str(path.relative_to(repo))] = base64.b64encode(path.read_bytes()).decode()
    return {
        "commit": git_commit(repo),
        "stages": {s: lock[s] for s in stages},
        "files": files,
        "ran": list(ran),
        "params": (repo / "params.yaml").read_text() if with_params and (repo / "params.yaml").is_file() else None,
    }


def _inside(rel: str, declared: list[str]) -> bool:
    norm = os.path.normpath(rel)
    if norm.startswith("..") or os.path.isabs(norm):
        return False
    return any(norm == d or norm.startswith(d.rstrip("/") + "/") for d in map(os.path.normpath, declared))


def apply(repo: Path, handoff: dict[str, Any]) -> list[str]:
    """Write a handoff into workspace `repo`: dvc.lock entries, uncached outs and params.yaml.

    Returns:
        The handed stage names.

    Raises:
        HandoffError: other commit, unknown stage, or a file outside the handed stages' declared outs.
    """
    repo = Path(repo).resolve()
    mine = git_commit(repo)
    if handoff.get("commit") != mine:
        raise HandoffError(f"the pipeline runs commit {handoff.get('commit')} but {repo} is at {mine}: bring "
                           f"this checkout to the same commit (git fetch && git checkout {handoff.get('commit')})")
    specs = _stage_specs(repo)
    stages = dict(handoff.get("stages") or {})
    unknown = sorted(set(stages) - set(specs))
    if unknown:
        raise HandoffError(f"handoff names stage(s) {unknown} that {repo / 'dvc.yaml'} does not declare")
    declared = [p for s in stages for p in _uncached_outs(specs[s])]
    for rel in handoff.get("files") or {}:
        if not _inside(rel, declared):
            raise HandoffError(f"handoff file {rel!r} is not an uncached out of stages {sorted(stages)}; refused")
    if handoff.get("params") is not None:
        (repo / "params.yaml").write_text(handoff["params"])
    for rel, text in (handoff.get("files") or {}).items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".handoff-tmp")
        tmp.write_bytes(base64.b64decode(text))
        os.replace(tmp, path)
    lock = _lock(repo) or {"schema": "2.0"}
    lock.setdefault("stages", {}).update(stages)
    tmp = repo / "dvc.lock.handoff-tmp"
    tmp.write_text(yaml.safe_dump(lock, sort_keys=False))
    os.replace(tmp, repo / "dvc.lock")
    return list(stages)


def run_dvc(repo: Path, *args: str) -> str:
    """Run one dvc command in `repo`; its output on success, a one-paragraph error otherwise."""
    proc = subprocess.run([*dvc_command(), *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise HandoffError(f"`dvc {' '.join(args)}` in {repo} exited with {proc.returncode}:\n{tail}")
    return proc.stdout


def publish(handoff: dict[str, Any], key: str) -> None:
    """Attach a handoff to the current flow run as an artifact (visible in the UI under the flow run)."""
    from prefect.artifacts import Artifact

    summary = (f"handoff of stages {', '.join(handoff['stages'])} at commit {handoff['commit'][:12]}; "
               f"ran here: {', '.join(handoff['ran']) or 'none'}; {len(handoff['files'])} uncached file(s)")
    Artifact(type=ARTIFACT_TYPE, key=key, data=handoff, description=summary).create()


def fetch(flow_run_id: str, key: str) -> dict[str, Any]:
    """The handoff a flow run published under `key`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    if not found:
        raise HandoffError(f"flow run {flow_run_id} published no {key!r} handoff; did it finish its stages?")
    data = found[-1].data
    return data if isinstance(data, dict) else yaml.safe_load(data)
