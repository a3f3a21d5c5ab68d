"""The CLI: instant help (no heavy imports), every stage command present, readable errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidssl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_help_imports_no_heavy_library() -> None:
    code = ("import sys, vidssl.cli; heavy = [m for m in ('torch', 'mlflow', 'prefect', 'great_expectations') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_every_stage_is_a_command() -> None:
    out = run("--help").stdout
    for command in ("synth", "extract", "lists", "validate", "pretrain", "finetune", "retrieve", "evaluate",
                    "pipeline", "ui", "backbones", "methods", "methods-report"):
        assert command in out


@pytest.mark.parametrize("command,state", [
    ("serve", ["PREFECT_HOME", "./.prefect"]),
    ("ui", ["mlruns/mlflow.db", "mlruns/artifacts/"]),
    ("server", ["mlruns/mlflow.db", "postgresql://", "mlruns/server-artifacts"]),
])
def test_server_commands_help_names_host_port_and_where_state_lives(command: str, state: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "vidssl.cli", command, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}).stdout
    for text in ("--host", "--port", "[default: 127.0.0.1]", *state):
        assert text in out, (command, text)


def test_registries_are_listed() -> None:
    from vidssl.methods.registry import METHODS
    from vidssl.models import BACKBONES

    assert all(name in run("backbones").stdout for name in BACKBONES)
    assert all(name in run("methods").stdout for name in METHODS)


def test_bad_params_give_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("pretrain:\n  lr: fast\n")
    proc = run("check-params", cwd=tmp_path)
    assert proc.returncode == 2 and "pretrain.lr" in proc.stderr and "Traceback" not in proc.stderr


def test_methods_report_without_lists_names_the_missing_file(tmp_path: Path) -> None:
    proc = run("methods-report", "--lists", str(tmp_path / "nolists"), "--methods", "iic", "--params",
               str(ROOT / "params.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nolists/pretrain.csv: list not found" in proc.stderr and "dvc repro validate" in proc.stderr
    proc = run("methods-report", "--methods", "iic,nope", "--params", str(ROOT / "params.yaml"), cwd=tmp_path)
    assert proc.returncode == 2 and "['nope'] are not registered" in proc.stderr
    for bad, says in (("1,x", "--seeds '1,x': give whole numbers"), ("1,1", "report.seeds [1, 1] repeats a seed")):
        proc = run("methods-report", "--seeds", bad, "--params", str(ROOT / "params.yaml"), cwd=tmp_path)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_synth_command_writes_ucf101_style_splits(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("synth:\n  videos_per_class: 4\n  size: 32\n  frames: 12\n  n_classes: 8\n")
    # a partial params file: --defaults says the keys it leaves out take the built-in defaults
    proc = run("--defaults", "synth", str(tmp_path / "raw"), "--seed", "3", "--appearances", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    split = (tmp_path / "raw" / "splits" / "trainlist01.txt").read_bytes()
    assert b"\r\n" in split and len(list((tmp_path / "raw" / "videos").rglob("*.mp4"))) == 32
    summary = json.loads((tmp_path / "raw" / "synth.json").read_text())
    assert summary["appearances"] == 2 and {v["appearance"] for v in summary["videos"]} == {0, 1}
    bad = run("--defaults", "synth", str(tmp_path / "bad"), "--appearances", "-1", cwd=tmp_path)
    assert bad.returncode != 0 and "appearances" in bad.stderr


def test_training_stages_without_lists_stop_before_tracking(tmp_path: Path) -> None:
    # A missing input is named in one line, and no MLflow store is created for a run that never started.
    for stage in ("pretrain", "retrieve"):
        proc = run(stage, str(tmp_path / "nolists"), "--params", str(ROOT / "params.yaml"), cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{stage}: {tmp_path / 'nolists'}/pretrain.csv is missing" in proc.stderr, proc.stderr
        assert not (tmp_path / "mlruns").exists()
