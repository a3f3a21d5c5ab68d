"""MLflow model registry: every pipeline run registers its pretrained backbone; the best one is `champion`.

Each new version gets the alias ``candidate`` and the run's lineage as tags (commit, dvc.lock stage hashes,
dataset digest, Prefect flow run id, torch and CUDA versions). ``champion`` moves to the new version only when
its chosen metric (``registry.metric``, a key of metrics/summary.json) beats the current champion's.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
METRIC_TAG = "vidssl.metric"  # name of the chosen metric, beside its value, on every version


def model_name(template: str, method: str, backbone: str, dataset: str) -> str:
    """The registered model's name from ``registry.model`` (e.g. ``vidssl-{backbone}-{dataset}``)."""
    try:
        return template.format(method=method, backbone=backbone, dataset=dataset)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"registry.model {template!r}: unknown placeholder {exc}; use {{method}}, {{backbone}} "
                         "or {dataset}") from None


def metric_value(summary: dict[str, Any], key: str) -> float:
    """``summary[a][b][c]`` for key ``a.b.c``; a clear error naming the key when it is not there."""
    node: Any = summary
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"registry.metric {key!r} is not in metrics/summary.json (no {part!r}); choose one of "
                             f"its numeric keys, e.g. retrieval.pretrained.top1")
        node = node[part]
    if not isinstance(node, (int, float)) or isinstance(node, bool):
        raise ValueError(f"registry.metric {key!r} is not a number in metrics/summary.json")
    return float(node)


def _stored(value: float) -> str:
    """A metric as a version tag holds it (6 significant digits)."""
    return f"{value:.6g}"


def beats(new: float, old: float | None, higher_is_better: bool) -> bool:
    """Whether ``new`` strictly improves on ``old`` (any finite value beats no champion; NaN never wins)."""
    if not math.isfinite(new):
        return False
    if old is None or not math.isfinite(old):
        return True
    return new > old if higher_is_better else new < old


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _ensure_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Pretrained vidssl backbones (self-supervised); "
                                                         "alias champion = best by the chosen metric")


def champion(client: Any, name: str) -> Any | None:
    """The version holding ``champion``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def register_backbone(client: Any, name: str, source_run: str, artifact: str, metrics: dict[str, float],
                      metric: str, higher_is_better: bool, tags: dict[str, str]) -> dict[str, Any]:
    """Register ``runs:/<source_run>/<artifact>`` as a new version of ``name``; move aliases.

    Returns:
        {"name", "version", "champion": bool, "previous_champion": version or None, "value": chosen metric}.
    """
    _ensure_model(client, name)
    value = metrics[metric]
    version_tags = {**tags, METRIC_TAG: metric, **{f"metric.{k}": _stored(v) for k, v in metrics.items()}}
    mv = client.create_model_version(name, source=f"runs:/{source_run}/{artifact}", run_id=source_run,
                                     tags=version_tags)
    client.set_registered_model_alias(name, CANDIDATE, mv.version)
    current = champion(client, name)
    # The champion's value of the metric chosen now, even when it was registered under another registry.metric
    # (every version carries every summary metric). Both sides at the stored precision: a rerun that scores the
    # same (1/3 is 0.333333 once stored) does not take the alias.
    old_text = None if current is None else current.tags.get(f"metric.{metric}")
    old = float(old_text) if old_text else None
    promote = current is None or beats(float(_stored(value)), old, higher_is_better)
    if promote:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    log.info("registry: %s version %s (%s = %.4g)%s", name, mv.version, metric, value,
             " is the new champion" if promote else f"; champion stays version {current.version} ({old:.4g})")
    return {"name": name, "version": str(mv.version), "champion": promote, "value": value,
            "previous_champion": None if current is None else str(current.version)}


def list_versions(client: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Every version of ``name`` (or of every vidssl model): version, aliases, chosen metric and lineage."""
    names = [name] if name else [m.name for m in client.search_registered_models()]
    rows = []
    for model in names:
        aliases: dict[str, list[str]] = {}
        for alias, version in (client.get_registered_model(model).aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name = '{model}'"):
            metric = mv.tags.get(METRIC_TAG, "")
            rows.append({"model": model, "version": int(mv.version), "aliases": sorted(aliases.get(str(mv.version), [])),
                         "metric": metric, "value": mv.tags.get(f"metric.{metric}", ""),
                         "commit": mv.tags.get("git_commit", "")[:10], "run_id": mv.run_id,
                         "created": mv.creation_timestamp,
                         "metrics": {k[7:]: v for k, v in mv.tags.items() if k.startswith("metric.")}})
    return sorted(rows, key=lambda r: (r["model"], r["version"]))
