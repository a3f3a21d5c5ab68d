"""DVC experiments: `dvc exp run -S key=value`, then `dvc exp show` and `dvc metrics diff` show the metrics of the
workspace and of each experiment (metrics are cached outputs, so every experiment keeps its own), and each
experiment and its MLflow runs name each other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def _run(cwd: Path, *cmd: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("VIDSSL_PIPELINE_ID", None)
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_every_metrics_file_of_dvc_yaml_is_cached() -> None:
    """A `cache: false` metrics file that git ignores is `!` in every experiment column."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = [entry for stage in stages.values() for entry in stage.get("metrics") or []]
    assert declared, "dvc.yaml declares metrics"
    for entry in declared:
        if isinstance(entry, dict):
            (path, opts), = entry.items()
            assert opts.get("cache", True), f"{path} is not cached: experiments would not keep it"


def _stage_inputs(ws: Path) -> None:
    """What the evaluate stage reads, as the upstream stages would have left it."""
    import random

    rng = random.Random(0)
    ret = {name: {f"top{k}": round(min(1.0, base + k / 100), 4) for k in (1, 5, 10, 20, 50)}
           for name, base in (("random_init", 0.1), ("pretrained", 0.3))}
    files = {
        "metrics/pretrain.json": {"epochs": 2, "final_loss": 3.1, "seconds": 5.0},
        "metrics/finetune.json": {"pretrained": {"test_accuracy": 0.5, "epochs": 1, "seconds": 1.0},
                                  "random_init": {"test_accuracy": 0.3, "epochs": 1, "seconds": 1.0}},
        "metrics/retrieve.json": ret,
    }
    for rel, body in files.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(json.dumps(body))
    (ws / "models" / "pretrain").mkdir(parents=True)
    (ws / "models" / "pretrain" / "backbone.pt").write_bytes(bytes(rng.getrandbits(8) for _ in range(64)))


@pytest.mark.slow
def test_exp_run_set_param_then_show_and_diff_every_metric(tmp_path: Path) -> None:
    import mlflow

    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("params.yaml", ".gitignore"):
        shutil.copy(ROOT / name, ws / name)
    for folder in ("stages", "vidssl", "presets"):
        shutil.copytree(ROOT / folder, ws / folder, ignore=shutil.ignore_patterns("__pycache__"))
    # The real evaluate stage on its own (upstream stages' outputs stand in as plain files).
    evaluate = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]
    evaluate["deps"] = [d for d in evaluate["deps"] if not str(d).startswith("metrics/")]
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": evaluate}}, sort_keys=False))
    _stage_inputs(ws)
    _run(ws, "git", "init", "-q")
    _run(ws, DVC, "init", "-q")
    _run(ws, DVC, "repro")  # the baseline
    _run(ws, "git", "add", "-A")
    _run(ws, "git", "commit", "-qm", "baseline")
    _run(ws, DVC, "exp", "run", "-S", "retrieve.topk=[1,5]", "--name", "two-ks")
    _run(ws, DVC, "exp", "run", "-S", "retrieve.topk=[1]", "--name", "one-k")

    show = json.loads(_run(ws, DVC, "exp", "show", "--json"))
    rows = {}
    for commit in show:
        rows["workspace" if commit["rev"] == "workspace" else "baseline"] = commit
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                rows[rev["name"]] = rev
    assert {"workspace", "baseline", "two-ks", "one-k"} <= set(rows)
    summary = {}
    for name in ("workspace", "baseline", "two-ks", "one-k"):
        data = rows[name]["data"]["metrics"]["metrics/summary.json"]["data"]
        summary[name] = data
        assert 0 <= data["retrieval"]["pretrained"]["top1"] <= 1  # a value, not the `!` of a missing file
    assert set(summary["baseline"]["retrieval_gain"]) == {"top1", "top5", "top10", "top20", "top50"}
    assert set(summary["two-ks"]["retrieval_gain"]) == {"top1", "top5"}
    assert set(summary["one-k"]["retrieval_gain"]) == {"top1"}

    # Each experiment's evaluate run in MLflow carries the experiment's name; `dvc exp show` carries its id.
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlruns' / 'mlflow.db'}")
    for name in ("two-ks", "one-k"):
        run = client.get_run(summary[name]["mlflow"]["evaluate_run_id"])
        assert run.data.tags["dvc.exp_name"] == name and run.data.tags["vidssl.stage"] == "evaluate"
        parent = client.get_run(summary[name]["mlflow"]["pipeline_run_id"])
        assert parent.data.tags["dvc.exp_name"] == name

    table = _run(ws, DVC, "exp", "show", "--no-pager", "--md")
    assert "!" not in "".join(line for line in table.splitlines() if "two-ks" in line or "one-k" in line)
    # The baseline commit against the workspace, which holds the last experiment (`one-k`): top1 is there on both
    # sides with the same value, top5-top50 only in the baseline.
    diff = json.loads(_run(ws, DVC, "metrics", "diff", "--all", "--json"))["metrics/summary.json"]
    base, last = summary["baseline"]["retrieval_gain"], summary["one-k"]["retrieval_gain"]
    assert diff["retrieval_gain.top1"]["old"] == base["top1"] and diff["retrieval_gain.top1"]["new"] == last["top1"]
    for k in ("top5", "top10", "top20", "top50"):
        assert diff[f"retrieval_gain.{k}"]["old"] == base[k] and diff[f"retrieval_gain.{k}"]["new"] is None, k
