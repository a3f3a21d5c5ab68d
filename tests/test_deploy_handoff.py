"""The handoff between a CPU checkout and a GPU worker's clone: what travels outside the DVC remote, and what a
receiving workspace refuses to write."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows import handoff  # noqa: E402

STAGES = {
    "prep": {"cmd": "true", "deps": ["src.txt"], "outs": ["data/prep",
                                                           {"reports/check.json": {"cache": False}}]},
    "train": {"cmd": "true", "deps": ["data/prep"], "outs": ["models/net",
                                                              {"models/state": {"persist": True, "cache": False}}],
              "metrics": [{"metrics/train.json": {"cache": False}}]},
}
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]


def _repo(path: Path) -> Path:
    path.mkdir()
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": STAGES}))
    (path / "params.yaml").write_text("lr: 0.1\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*GIT, "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=path, check=True)
    return path


def _lock(path: Path, stages: dict) -> None:
    (path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


def test_collect_then_apply_moves_lock_entries_and_uncached_outs_only(tmp_path: Path) -> None:
    sender = _repo(tmp_path / "cpu")
    receiver = tmp_path / "gpu"
    subprocess.run(["git", "clone", "-q", str(sender), str(receiver)], check=True)
    entry = {"cmd": "true", "outs": [{"path": "data/prep", "md5": "abc.dir"}]}
    _lock(sender, {"prep": entry})
    (sender / "reports").mkdir()
    (sender / "reports" / "check.json").write_text('{"ok": true}')
    (sender / "params.yaml").write_text("lr: 0.5\n")  # a params change travels with the run
    sent = handoff.collect(sender, ["prep"], ran=["prep"], with_params=True)
    assert sent["stages"] == {"prep": entry} and sent["ran"] == ["prep"]
    assert set(sent["files"]) == {"reports/check.json"}  # data/prep travels through the DVC remote instead
    assert handoff.apply(receiver, sent) == ["prep"]
    assert (receiver / "reports" / "check.json").read_text() == '{"ok": true}'
    assert (receiver / "params.yaml").read_text() == "lr: 0.5\n"
    assert yaml.safe_load((receiver / "dvc.lock").read_text())["stages"]["prep"] == entry
    # back: persisted training state stays where it was trained; the metrics come back
    _lock(receiver, {"prep": entry, "train": {"cmd": "true"}})
    for rel, text in (("models/state/last.pt", "ckpt"), ("metrics/train.json", '{"loss": 1.5}')):
        (receiver / rel).parent.mkdir(parents=True, exist_ok=True)
        (receiver / rel).write_text(text)
    back = handoff.collect(receiver, ["train"], ran=["train"], with_params=False)
    assert set(back["files"]) == {"metrics/train.json"} and back["params"] is None
    handoff.apply(sender, back)
    lock = yaml.safe_load((sender / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"prep", "train"} and (sender / "params.yaml").read_text() == "lr: 0.5\n"


def test_apply_refuses_other_commits_foreign_paths_and_unknown_stages(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "ws")
    head = handoff.git_commit(repo)
    good = {"commit": head, "stages": {"prep": {}}, "files": {}, "ran": [], "params": None}
    with pytest.raises(handoff.HandoffError, match="git fetch && git checkout 0123"):
        handoff.apply(repo, {**good, "commit": "0123"})
    payload = base64.b64encode(b"x").decode()
    for rel in ("../outside.txt", "/etc/passwd", "src.txt", "reports/../src.txt", "models/state/last.pt"):
        with pytest.raises(handoff.HandoffError, match="not an uncached out"):
            handoff.apply(repo, {**good, "files": {rel: payload}})
    assert not (tmp_path / "outside.txt").exists() and not (repo / "src.txt").exists()
    with pytest.raises(handoff.HandoffError, match=r"stage\(s\) \['evil'\]"):
        handoff.apply(repo, {**good, "stages": {"evil": {}}})
    with pytest.raises(handoff.HandoffError, match="no entry for stage"):
        handoff.collect(repo, ["train"], ran=[], with_params=False)
    assert not (repo / "dvc.lock").exists()  # nothing written by a refused handoff
