"""The default DVC remote: a folder outside the workspace; `dvc push`, then `dvc pull` in a fresh clone, gives
the clone the frame store, the models and the features of the real dvc.yaml, byte for byte."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
# Outputs of dvc.yaml a GPU worker needs from the CPU part, or gives back.
SHIPPED = ("data/frames", "data/lists", "models/pretrain", "models/finetune", "features")


def _run(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fake_outputs(ws: Path, only: str | None = None) -> None:
    """Small stand-ins for every output of dvc.yaml (their content does not matter to DVC); with ``only``, the
    outputs of that stage that DVC does not cache (what running it on a worker makes besides the cached ones)."""
    import yaml

    stages = yaml.safe_load((ws / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        if only and name != only:
            continue
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                if only and (isinstance(entry, str) or next(iter(entry.values())).get("cache", True)):
                    continue
                path = ws / (entry if isinstance(entry, str) else next(iter(entry)))
                if path.suffix:  # a file
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(b'{"stage": "%s", "path": "%s"}' % (name.encode(), path.name.encode()))
                else:  # a folder with a couple of files, one nested
                    (path / "sub").mkdir(parents=True, exist_ok=True)
                    (path / "a.bin").write_bytes(os.urandom(256))
                    (path / "sub" / "b.bin").write_bytes(os.urandom(128))
    if only:
        return
    for stage in stages.values():  # files other stages read from inside an output folder
        for dep in stage.get("deps") or []:
            if dep.startswith(("models/", "data/frames/", "features/")) and Path(dep).suffix:
                (ws / dep).write_bytes(os.urandom(64))
    raw = ws / "data" / "raw" / "videos"
    (ws / "data" / "raw" / "splits").mkdir(parents=True, exist_ok=True)
    raw.mkdir(parents=True, exist_ok=True)


def test_the_default_remote_is_a_folder_outside_the_workspace() -> None:
    out = subprocess.run([DVC, "remote", "list"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    name, url = out.split()[:2]
    assert "(default)" in out and name == "local"
    remote = Path(url).resolve()
    assert ROOT.resolve() not in remote.parents and remote != ROOT.resolve()


@pytest.mark.slow
def test_push_then_pull_in_a_fresh_clone_restores_frames_models_and_features(tmp_path: Path) -> None:
    ws = tmp_path / "vidssl"
    ws.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, ws / name)
    for folder in ("stages", "vidssl", "presets"):
        shutil.copytree(ROOT / folder, ws / folder, ignore=shutil.ignore_patterns("__pycache__"))
    _run(ws, "git", "init", "-q")
    _run(ws, DVC, "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", ws / ".dvc" / "config")  # the shipped remote settings
    _fake_outputs(ws)
    _run(ws, DVC, "commit", "-f")  # record every output in dvc.lock as if `dvc repro` had made it
    _run(ws, "git", "add", "-A")
    _run(ws, "git", "commit", "-qm", "a pipeline run")
    _run(ws, DVC, "push")
    remote = tmp_path / "vidssl-dvc-remote"  # ../../ from .dvc/: beside the workspace
    assert remote.is_dir() and any(remote.rglob("*"))

    gpu = tmp_path / "vidssl-gpu"  # a worker's own checkout beside the first
    _run(tmp_path, "git", "clone", "-q", str(ws), str(gpu))
    assert not (gpu / "data" / "frames").exists()
    _run(gpu, DVC, "pull")
    for path in SHIPPED:
        assert _tree_digest(gpu / path) == _tree_digest(ws / path), path
    # What the worker trains goes back the same way.
    # (uncached files such as reports/validation.json travel in the flow's handoff, not through DVC)
    (gpu / "reports").mkdir(exist_ok=True)
    shutil.copy(ws / "reports" / "validation.json", gpu / "reports" / "validation.json")
    _fake_outputs(gpu, only="pretrain")
    (gpu / "models" / "pretrain" / "a.bin").write_bytes(b"new weights")
    _run(gpu, DVC, "commit", "-f", "pretrain")
    _run(gpu, DVC, "push")
    _run(gpu, "git", "commit", "-qam", "pretrained on the gpu worker")
    _run(ws, "git", "pull", "-q", str(gpu), "HEAD")
    _run(ws, DVC, "pull")
    assert (ws / "models" / "pretrain" / "a.bin").read_bytes() == b"new weights"
