"""``data.split: all``: the three official splits as three DVC experiments, and their mean and sample sd.

`vidssl pipeline` (flows/pipeline.py) runs ``dvc exp run -S data.split=N`` for N = 1, 2, 3 in the workspace, one
after the other, so DVC stays the authority on what ran: each split is an experiment of its own (`dvc exp show`
lists them, `dvc exp apply` brings one back). After each, the evaluate stage's metrics file is read; at the end
this module writes the aggregate (per-split values, mean, sample sd) as JSON and Markdown and logs it to MLflow as a
run that is the parent of the three splits' pipeline runs. dvc.yaml's stage graph is unchanged.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SPLITS = (1, 2, 3)
ROLE = "splits"  # vidssl.role tag of the parent run over the three splits' pipeline runs
SUMMARY_STAGE = "evaluate"


def wants_all_splits(root: Path) -> bool:
    """Whether ``root``'s params.yaml says ``data.split: all`` (False without one: a workspace of other stages).

    Raises:
        ConfigError: it says ``all`` and the params are invalid (e.g. a dataset with one official split).
    """
    from vidssl.config import load_params

    path = Path(root) / "params.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict) or data.get("split") != "all":
        return False
    return load_params(path, any_split=True).data.split == "all"


def check_experiments(root: Path) -> None:
    """Raise ValueError, saying what to do, when ``root`` cannot hold DVC experiments (they are git commits on
    top of HEAD, so the workspace must be a git repository with a commit)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=30)
    except OSError as err:
        raise ValueError(f"data.split: all runs each split as a DVC experiment, which needs git ({err})") from None
    if head.returncode != 0:
        raise ValueError(f"data.split: all runs each split as a DVC experiment, which needs a git commit in "
                         f"{Path(root).resolve()}; commit the workspace (git add -A && git commit), or set "
                         "data.split to 1, 2 or 3")


def experiment_name(pipeline_id: str, split: int) -> str:
    """The DVC experiment name of one split of one pipeline run: ``split<N>-<id>`` (a valid git ref name)."""
    tag = re.sub(r"[^A-Za-z0-9]", "", pipeline_id)[:8] or "run"
    return f"split{split}-{tag}"


def exp_run_command(dvc: Sequence[str], split: int, name: str, force: bool = False,
                    targets: Sequence[str] = ()) -> list[str]:
    """``dvc exp run -S data.split=N --name NAME [--force] [targets]``: one split as a workspace experiment."""
    return [*dvc, "exp", "run", "-S", f"data.split={split}", "--name", name, *(["--force"] if force else []),
            *targets]


def summary_paths(root: Path, stage: str = SUMMARY_STAGE) -> list[Path]:
    """The metrics files ``stage`` declares in ``root/dvc.yaml`` (for vidssl: metrics/summary.json)."""
    stages = (yaml.safe_load((Path(root) / "dvc.yaml").read_text()) or {}).get("stages") or {}
    spec = stages.get(stage)
    if spec is None:
        raise ValueError(f"{Path(root) / 'dvc.yaml'}: no stage {stage!r}, whose metrics each split reports")
    wdir = Path(root) / spec.get("wdir", ".")
    paths = [wdir / (entry if isinstance(entry, str) else next(iter(entry))) for entry in spec.get("metrics") or []]
    if not paths:
        raise ValueError(f"{Path(root) / 'dvc.yaml'}: stage {stage!r} declares no metrics file")
    return paths


def numeric_leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Dotted keys of every number in a metrics tree (booleans and strings, such as run ids, left out)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_leaves(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def read_metrics(root: Path, stage: str = SUMMARY_STAGE) -> dict[str, float]:
    """The numbers of ``stage``'s metrics files in the workspace (one experiment's results, right after it ran)."""
    out: dict[str, float] = {}
    for path in summary_paths(root, stage):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the {stage} stage's metrics file is missing after the experiment")
        out.update(numeric_leaves(json.loads(path.read_text(encoding="utf-8"))))
    return out


def aggregate(per_split: Mapping[int, Mapping[str, float]]) -> dict[str, Any]:
    """Per metric: each split's value, the mean and the sample sd (n - 1) over the splits.

    Only metrics every split reports are aggregated; the others are listed under ``"partial"`` so nothing is
    averaged over fewer splits than the table claims.
    """
    splits = sorted(per_split)
    if len(splits) < 2:
        raise ValueError(f"aggregate needs two or more splits, got {splits}")
    keys = [k for k in per_split[splits[0]] if all(k in per_split[s] for s in splits)]
    metrics = {}
    for key in keys:
        values = [float(per_split[s][key]) for s in splits]
        metrics[key] = {"splits": dict(zip(map(str, splits), values)), "mean": statistics.fmean(values),
                        "sd": statistics.stdev(values)}
    partial = sorted({k for s in splits for k in per_split[s]} - set(keys))
    return {"splits": splits, "metrics": metrics, "partial": partial}


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.1f}"


def markdown(agg: Mapping[str, Any], names: Mapping[int, str] | None = None, dataset: str = "") -> str:
    """The aggregate as a Markdown table: one line per metric, each split, mean and sample sd."""
    splits = agg["splits"]
    head = " | ".join(f"split {s}" for s in splits)
    lines = [f"# Official splits{f' of {dataset}' if dataset else ''}: mean and sd", "",
             f"Each split is a DVC experiment ({', '.join(f'`{names[s]}`' for s in splits) if names else 'dvc exp'}"
             "); values as the evaluate stage wrote them (fractions for accuracies); sd is the sample standard "
             f"deviation over the {len(splits)} splits.", "",
             f"| metric | {head} | mean | sd |", "|---|" + "---|" * (len(splits) + 2)]
    for key, m in agg["metrics"].items():
        cells = " | ".join(_fmt(m["splits"][str(s)]) for s in splits)
        lines.append(f"| {key} | {cells} | {_fmt(m['mean'])} | {_fmt(m['sd'])} |")
    if agg.get("partial"):
        lines += ["", "Not reported by every split, so not averaged: " + ", ".join(agg["partial"]) + "."]
    return "\n".join(lines) + "\n"


def write_reports(agg: Mapping[str, Any], json_path: Path, md_path: Path, names: Mapping[int, str],
                  dataset: str = "") -> str:
    """Write the aggregate (with each split's experiment name) as JSON and Markdown; return the Markdown."""
    from vidssl.io import write_json, write_text

    write_json(json_path, {**agg, "dataset": dataset, "experiments": {str(s): names[s] for s in agg["splits"]}})
    text = markdown(agg, names, dataset)
    write_text(md_path, text)
    return text


def mlflow_metrics(agg: Mapping[str, Any]) -> dict[str, float]:
    """``<metric>.mean``, ``<metric>.sd`` and ``<metric>.split<N>`` for the parent run."""
    out: dict[str, float] = {}
    for key, m in agg["metrics"].items():
        out[f"{key}.mean"], out[f"{key}.sd"] = m["mean"], m["sd"]
        out.update({f"{key}.split{s}": v for s, v in m["splits"].items()})
    return out


def log_parent(root: Path, pipeline_id: str, agg: Mapping[str, Any], children: Mapping[int, str],
               names: Mapping[int, str], files: Sequence[Path], dataset: str = "") -> str:
    """One MLflow run over the splits: their mean, sd and values as metrics, the reports as artifacts, and each
    split's pipeline run (``children``: split -> its pipeline id; ``names``: split -> DVC experiment) nested
    under it. Returns its run id."""
    from mlflow.entities import Metric, Param, RunTag

    from vidssl.pipeline.tracking import PIPELINE_TAG, lineage_tags, open_client

    client, _uri, exp_id = open_client(Path(root))
    tags = {**lineage_tags(Path(root)), PIPELINE_TAG: pipeline_id, "vidssl.role": ROLE}
    tags.pop("dvc.exp_name", None)
    run_id = client.create_run(exp_id, run_name=f"splits {'/'.join(map(str, agg['splits']))} · {dataset}".strip(" ·"),
                               tags=tags).info.run_id
    params = {"data.split": "all", "data.dataset": dataset,
              **{f"experiment.split{s}": name for s, name in names.items()}}
    items = [Metric(k, float(v), 0, 0) for k, v in mlflow_metrics(agg).items()]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i:i + 500], synchronous=True)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items() if v], synchronous=True)
    for path in files:
        if Path(path).is_file():
            client.log_artifact(run_id, str(path))
    for split, pid in children.items():
        query = f"tags.`{PIPELINE_TAG}` = '{pid}' and tags.`vidssl.role` = 'pipeline'"
        for run in client.search_runs([exp_id], filter_string=query, max_results=1):
            client.log_batch(run.info.run_id, tags=[RunTag("mlflow.parentRunId", run_id),
                                                    RunTag("vidssl.split", str(split))], synchronous=True)
    client.set_terminated(run_id, status="FINISHED")
    return run_id

