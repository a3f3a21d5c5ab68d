"""data.split: all: the config rules, the aggregate's math, a plain `dvc repro` refusing it, and `vidssl pipeline`
running the three splits as DVC experiments (on a dvc.yaml whose first stage stands in for training)."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vidssl.config import ConfigError, load_params, parse_params, resolve_params
from vidssl.pipeline import splits

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))


def _params(tmp_path: Path, dataset: str, split: object) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update({"dataset": dataset, "split": split})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_all_is_valid_for_the_datasets_with_three_official_splits(dataset: str, tmp_path: Path) -> None:
    path = _params(tmp_path, dataset, "all")
    assert resolve_params(path).params.data.split == "all"
    assert load_params(path, any_split=True).data.split == "all"
    assert splits.wants_all_splits(tmp_path)


@pytest.mark.parametrize("dataset", ["synthetic", "kinetics400", "diving48", "folders"])
def test_all_is_refused_for_a_dataset_with_one_split(dataset: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_params(_params(tmp_path, dataset, "all"))
    (line,) = str(err.value).splitlines()
    assert "data.split" in line and repr(dataset) in line and "ucf101 and hmdb51" in line


@pytest.mark.parametrize("bad", [0, 4, "two", "All"])
def test_a_split_other_than_1_to_3_or_all_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="data.split"):
        parse_params({"data": {"dataset": "ucf101", "split": bad}})


def test_stages_and_single_split_commands_refuse_all_in_one_line(tmp_path: Path) -> None:
    path = _params(tmp_path, "ucf101", "all")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    (line,) = str(err.value).splitlines()
    assert "data.split" in line and "`vidssl pipeline`" in line and "1, 2 or 3" in line
    assert load_params(_params(tmp_path, "ucf101", 2)).data.split == 2


def test_a_preset_leaves_the_split_to_params(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    raw = yaml.safe_load(_params(tmp_path, "ucf101", "all").read_text())
    raw["preset"] = "iic_r3d_ucf101"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_params(tmp_path / "params.yaml", any_split=True).data.split == "all"


def test_plain_dvc_repro_fails_at_once_naming_the_key(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    for folder in ("stages", "vidssl", "presets"):
        shutil.copytree(ROOT / folder, ws / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", ws / "dvc.yaml")
    _params(ws, "ucf101", "all")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([DVC, "init", "-q"], cwd=ws, check=True, env=env)
    proc = subprocess.run([DVC, "repro"], cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "data.split" in errors[0] and "`vidssl pipeline`" in errors[0], proc.stderr
    assert not (ws / "data" / "frames").exists() and not (ws / "data" / "lists").exists()


# ---------------------------------------------------------------- the aggregate


def test_aggregate_mean_and_sample_sd_on_known_values() -> None:
    per_split = {1: {"top1": 0.3, "acc": 0.50, "only1": 1.0}, 2: {"top1": 0.5, "acc": 0.62},
                 3: {"top1": 0.4, "acc": 0.56}}
    agg = splits.aggregate(per_split)
    top1 = agg["metrics"]["top1"]
    assert top1["splits"] == {"1": 0.3, "2": 0.5, "3": 0.4}
    assert top1["mean"] == pytest.approx(0.4, abs=1e-12)
    assert top1["sd"] == pytest.approx(0.1, abs=1e-12)  # sqrt(((-0.1)^2 + 0.1^2 + 0) / (3 - 1))
    acc = agg["metrics"]["acc"]
    assert acc["mean"] == pytest.approx(0.56, abs=1e-12)
    assert acc["sd"] == pytest.approx(float(np.std([0.50, 0.62, 0.56], ddof=1)), abs=1e-12)
    assert acc["sd"] == pytest.approx(0.06, abs=1e-12)
    assert agg["partial"] == ["only1"] and "only1" not in agg["metrics"]  # never averaged over fewer splits
    assert agg["splits"] == [1, 2, 3]
    flat = splits.mlflow_metrics(agg)
    assert flat["top1.mean"] == top1["mean"] and flat["top1.sd"] == top1["sd"] and flat["acc.split2"] == 0.62
    with pytest.raises(ValueError, match="two or more splits"):
        splits.aggregate({1: {"top1": 0.3}})


def test_identical_splits_have_zero_sd_and_order_does_not_matter() -> None:
    a = splits.aggregate({3: {"x": 2.0}, 1: {"x": 2.0}, 2: {"x": 2.0}})
    assert a["metrics"]["x"] == {"splits": {"1": 2.0, "2": 2.0, "3": 2.0}, "mean": 2.0, "sd": 0.0}


def test_numeric_leaves_skip_strings_and_booleans() -> None:
    tree = {"retrieval": {"pretrained": {"top1": 0.25}}, "mlflow": {"run": "abc"}, "ok": True, "epochs": 2}
    assert splits.numeric_leaves(tree) == {"retrieval.pretrained.top1": 0.25, "epochs": 2.0}


def test_markdown_table_lists_each_split_mean_and_sd(tmp_path: Path) -> None:
    agg = splits.aggregate({1: {"top1": 0.3}, 2: {"top1": 0.5}, 3: {"top1": 0.4}})
    names = {1: "split1-x", 2: "split2-x", 3: "split3-x"}
    text = splits.write_reports(agg, tmp_path / "s.json", tmp_path / "s.md", names, "ucf101")
    assert "| top1 | 0.3000 | 0.5000 | 0.4000 | 0.4000 | 0.1000 |" in text.splitlines()
    assert (tmp_path / "s.md").read_text() == text
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["experiments"] == {"1": "split1-x", "2": "split2-x", "3": "split3-x"}
    assert saved["metrics"]["top1"]["sd"] == pytest.approx(statistics.stdev([0.3, 0.5, 0.4]))


def test_experiment_command_and_the_metrics_file_of_the_real_dvc_yaml() -> None:
    name = splits.experiment_name("1b2c-3d4e-5f60-7a8b", 2)
    assert name == "split2-1b2c3d4e"
    assert splits.exp_run_command(["dvc"], 2, name, True, ["-s", "lists"]) == [
        "dvc", "exp", "run", "-S", "data.split=2", "--name", name, "--force", "-s", "lists"]
    assert splits.summary_paths(ROOT) == [ROOT / "metrics" / "summary.json"]


# ---------------------------------------------------------------- `vidssl pipeline` with data.split: all

# Stands in for extract ... retrieve: writes what the evaluate stage reads, from the split in params.yaml.
FAKE = """\
import json, pathlib, yaml
split = yaml.safe_load(open("params.yaml"))["data"]["split"]
out = pathlib.Path("metrics"); out.mkdir(exist_ok=True)
ks = (1, 5, 10, 20, 50)
ret = {"pretrained": {f"top{k}": round(0.1 * split + 0.2 + k / 100, 4) for k in ks},
       "random_init": {f"top{k}": round(0.05 * split + k / 200, 4) for k in ks}}
(out / "retrieve.json").write_text(json.dumps(ret))
(out / "finetune.json").write_text(json.dumps({"pretrained": {"test_accuracy": [0.5, 0.62, 0.56][split - 1]},
                                               "random_init": {"test_accuracy": 0.2}}))
(out / "pretrain.json").write_text(json.dumps({"epochs": 2, "final_loss": 3.0 - split / 10, "seconds": 1.0}))
pathlib.Path("models/pretrain").mkdir(parents=True, exist_ok=True)
pathlib.Path("models/pretrain/backbone.pt").write_bytes(bytes([split]) * 64)
"""


@pytest.mark.slow
def test_pipeline_runs_three_experiments_and_reports_mean_and_sd(tmp_path: Path) -> None:
    import mlflow

    ws = tmp_path / "ws"
    ws.mkdir()
    for folder in ("stages", "vidssl", "presets", "flows"):
        shutil.copytree(ROOT / folder, ws / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", ws / ".gitignore")
    (ws / "fake.py").write_text(FAKE)
    evaluate = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]  # the real stage
    fake = {"cmd": "python fake.py", "deps": ["fake.py"], "params": ["data.split"],
            "outs": ["models/pretrain/backbone.pt"],
            "metrics": ["metrics/pretrain.json", "metrics/finetune.json", "metrics/retrieve.json"]}
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fake": fake, "evaluate": evaluate}}, sort_keys=False))
    params = _params(ws, "ucf101", "all")
    before = params.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(ws), "PREFECT_HOME": str(tmp_path / "prefect"), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for key in ("MLFLOW_TRACKING_URI", "VIDSSL_PIPELINE_ID", "PREFECT_API_URL"):
        env.pop(key, None)
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "ws"]):
        subprocess.run(cmd, cwd=ws, check=True, env=env)

    proc = subprocess.run([sys.executable, "-m", "vidssl.cli", "pipeline"], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert params.read_bytes() == before  # data.split: all again, byte for byte

    # The aggregate: FAKE's values per split, their mean and sample sd.
    agg = json.loads((ws / "reports" / "splits.json").read_text())
    top1 = agg["metrics"]["retrieval.pretrained.top1"]
    assert top1["splits"] == pytest.approx({"1": 0.31, "2": 0.41, "3": 0.51})
    assert top1["mean"] == pytest.approx(0.41) and top1["sd"] == pytest.approx(0.1)
    ft = agg["metrics"]["finetune.pretrained.test_accuracy"]
    assert ft["mean"] == pytest.approx(0.56) and ft["sd"] == pytest.approx(0.06)
    gain = agg["metrics"]["retrieval_gain.top1"]  # computed by the real evaluate stage in each experiment
    assert gain["splits"] == pytest.approx({"1": 0.31 - 0.055, "2": 0.41 - 0.105, "3": 0.51 - 0.155})
    names = agg["experiments"]
    assert "| retrieval.pretrained.top1 | 0.3100 | 0.4100 | 0.5100 | 0.4100 | 0.1000 |" in \
        (ws / "reports" / "splits.md").read_text().splitlines()

    # DVC knows the three experiments, each at its split, each with its own metrics.
    show = json.loads(subprocess.run([DVC, "exp", "show", "--json"], cwd=ws, env=env, capture_output=True,
                                     text=True, check=True).stdout)
    exps = {rev["name"]: rev["data"] for commit in show for exp in commit.get("experiments") or []
            for rev in exp["revs"]}
    for split, name in names.items():
        data = exps[name]
        assert data["params"]["params.yaml"]["data"]["data"]["split"] == int(split)
        summary = data["metrics"]["metrics/summary.json"]["data"]
        assert summary["retrieval"]["pretrained"]["top1"] == pytest.approx(top1["splits"][split])

    # MLflow: one run over the splits, the three pipeline runs nested under it, each named by its experiment.
    client = mlflow.MlflowClient(f"sqlite:///{ws / 'mlruns' / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("vidssl").experiment_id
    (parent,) = client.search_runs([exp_id], filter_string="tags.`vidssl.role` = 'splits'")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["retrieval.pretrained.top1.mean"] == pytest.approx(0.41)
    assert parent.data.metrics["retrieval.pretrained.top1.sd"] == pytest.approx(0.1)
    assert parent.data.metrics["finetune.pretrained.test_accuracy.split2"] == pytest.approx(0.62)
    children = client.search_runs([exp_id], filter_string="tags.`vidssl.role` = 'pipeline'")
    assert sorted(r.data.tags["dvc.exp_name"] for r in children) == sorted(names.values())
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)


def test_commands_refuse_all_except_those_that_only_read_params(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from vidssl.cli import app

    path = _params(tmp_path, "hmdb51", "all")
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["check-params", "--params", str(path)])
    assert shown.exit_code == 0 and "split: all" in shown.output
    refused = CliRunner().invoke(app, ["evaluate", "--params", str(path)])
    assert refused.exit_code == 2
    (line,) = [x for x in refused.output.splitlines() if x.startswith("error: ")]
    assert "data.split" in line and "`vidssl pipeline`" in line
    assert not (tmp_path / "metrics").exists()


def test_pipeline_with_all_needs_evaluate_and_a_git_commit_before_anything_starts(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "fake": {"cmd": "true", "outs": ["x"]}, "evaluate": {"cmd": "true", "deps": ["x"], "outs": ["y"]}}}))
    _params(ws, "ucf101", "all")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([sys.executable, str(ROOT / "flows" / "pipeline.py"), "--repo", str(ws), "--stages", "fake"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("error: data.split: all reports each split's evaluate metrics: "
                                                   "add evaluate to --stages, or leave --stages out")
    # Experiments are git commits: a workspace without one is told so before any stage runs.
    proc = subprocess.run([sys.executable, str(ROOT / "flows" / "pipeline.py"), "--repo", str(ws)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data.split: all runs each split as a DVC experiment, which needs a git commit")
    assert not (ws / "x").exists()
