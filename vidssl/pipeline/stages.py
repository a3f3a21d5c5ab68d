"""Stage runners: what each pipeline stage does, shared by `stages/*.py` (DVC) and the `vidssl` CLI.

Each takes the typed config plus explicit paths, does the work through the library, writes its declared outputs
(atomically) and, for the training stages, tracks a nested MLflow run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from vidssl.config import Params, flatten
from vidssl.io import write_json
from vidssl.pipeline.lock import locked_stage

log = logging.getLogger(__name__)


@locked_stage("synth")
def run_synth(cfg: Params, out: Path, workers: int = 2) -> dict[str, Any]:
    from vidssl.data.synth import generate

    s = cfg.synth
    return generate(out, seed=s.seed, scale=s.scale, videos_per_class=s.videos_per_class, n_classes=s.n_classes,
                    size=s.size, frames=s.frames, fps=s.fps, background_bias=s.background_bias,
                    appearances=s.appearances, workers=workers)


@locked_stage("extract")
def run_extract(cfg: Params, src: Path, out: Path, report: Path, reset_on_change: bool = False,
                timings: bool = True, dask: str | None = None) -> dict[str, Any]:
    from vidssl.data.extract import extract_videos

    e = cfg.extract
    return extract_videos(src, out, short_side=e.short_side, fps=e.fps, workers=e.workers, quality=e.quality,
                          min_frames=e.min_frames, max_pixels=e.max_pixels, min_bytes=e.min_bytes,
                          report=report, reset_on_change=reset_on_change, timings=timings, exact=cfg.extract_exact,
                          dask=dask)


@locked_stage("lists")
def run_lists(cfg: Params, frames: Path, split_dir: Path, out: Path) -> dict[str, Any]:
    from vidssl.data.lists import write_lists

    return write_lists(frames, split_dir, out, split=cfg.data.split, fmt=cfg.data.dataset,
                       val_videos=cfg.lists.val_videos, seed=cfg.seed, max_missing=cfg.lists.max_missing,
                       test_fraction=cfg.lists.test_fraction)


@locked_stage("validate")
def run_validate(cfg: Params, lists_dir: Path, report_dir: Path,
                 frames_root: Path | None = None) -> dict[str, Any]:
    from vidssl.data.checks import check_lists

    if frames_root is None:  # the store the lists were written from, as the lists stage recorded it
        try:
            frames_root = Path(json.loads((lists_dir / "lists.json").read_text())["params"]["frames_root"])
        except (OSError, ValueError, KeyError, TypeError):
            frames_root = None
    return check_lists(lists_dir, min_frames=cfg.clip.span, report_dir=report_dir,
                       short_videos=cfg.clip.short_videos, data_root=frames_root, limits=cfg.checks)


def _metrics_only(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float))}


def throughput_line(summary: dict[str, Any]) -> str:
    """The stage summary's last-epoch throughput: clips/s, data-wait fraction, peak GPU memory, precision."""
    parts = [f"{summary.get('epochs', 0)} epochs in {summary.get('seconds', 0.0):.0f} s"]
    if "clips_per_s" in summary:
        parts.append(f"{summary['clips_per_s']:.1f} clips/s")
    if "data_wait" in summary:
        steady = summary.get("data_wait_steady")
        after = f" ({100 * steady:.0f}% after the first batch)" if steady is not None else ""
        parts.append(f"data wait {100 * summary['data_wait']:.0f}%{after}")
    if "peak_gpu_mem_gib" in summary:
        parts.append(f"peak GPU memory {summary['peak_gpu_mem_gib']:.1f} GiB")
    if "precision" in summary:
        parts.append(str(summary["precision"]))
    return ", ".join(parts)



def _require_inputs(stage: str, *paths: Path) -> None:
    """Stop before any tracking or training when an input is missing, naming it and what makes it."""
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{stage}: {path} is missing; run the stage that writes it first "
                                    f"(`dvc repro {stage}` runs everything {stage} needs)")


@locked_stage("pretrain")
def run_pretrain(cfg: Params, lists_dir: Path, out_dir: Path, state_dir: Path, metrics: Path,
                 plots: Path) -> dict[str, Any]:
    from vidssl.engine import ddp
    from vidssl.evaluation.plots import plot_curves
    from vidssl.pipeline.registry import file_md5
    from vidssl.pipeline.tracking import stage_run
    from vidssl.engine.train import pretrain

    params = flatten({"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                      "pretrain": cfg.pretrain.model_dump()})
    _require_inputs("pretrain", lists_dir / "pretrain.csv")
    try:
        if not ddp.setup().main:  # under torchrun the other ranks train alongside rank 0 and write nothing
            return pretrain(cfg, lists_dir, state_dir, out_dir)
        with stage_run("pretrain", params) as tracker:
            summary = pretrain(cfg, lists_dir, state_dir, out_dir, tracker)
            loss_keys = [k for k in summary["history"][0] if k.startswith("loss")]
            plot = plot_curves(summary["history"], loss_keys, plots / "pretrain_loss.png", "pretraining loss")
            write_json(metrics, _metrics_only(summary))
            log.info("pretrain: %s", throughput_line(summary))
            tracker.set_tags({"backbone_md5": file_md5(out_dir / "backbone.pt")})  # found again by the registry
            for path in (plot, out_dir / "backbone.pt", metrics):
                tracker.log_artifact(path)
        return summary
    finally:
        ddp.teardown()


@locked_stage("finetune")
def _identity(cfg: Params) -> dict[str, Any]:
    """What `vidssl report` groups runs by, beside the stage's own params: method, dataset and split; and the
    settings the method pretrained with (e.g. IIC's intra-negative kind), so a published number is only put
    beside weights pretrained the way it was."""
    return {"pretrain": {**cfg.pretrain.used(), "method": cfg.pretrain.method},
            "data": {"dataset": cfg.data.dataset, "split": cfg.data.split}}


def run_finetune(cfg: Params, lists_dir: Path, init: Path | None, out_dir: Path, state_dir: Path,
                 metrics: Path, plots: Path, baseline: bool = True) -> dict[str, Any]:
    """Fine-tune from ``init``; with ``baseline``, also from random init (same seed) for the comparison."""
    from vidssl.evaluation.plots import plot_confusion, plot_curves
    from vidssl.pipeline.tracking import stage_run
    from vidssl.engine.train import finetune

    params = flatten({"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                      "finetune": cfg.finetune.model_dump(), **_identity(cfg)})
    names = [line.split(",", 1)[1].strip() for line in (lists_dir / "classes.csv").read_text().splitlines()[1:]]
    runs = {"pretrained": init, **({"random_init": None} if baseline else {})}
    out: dict[str, Any] = {}
    with stage_run("finetune", params) as tracker:
        for name, weights in runs.items():
            if cfg.finetune.protocol == "linear":
                from vidssl.evaluation.linear import linear_probe

                r = linear_probe(cfg, lists_dir, weights, out_dir / name)
                for epoch, h in enumerate(r["history"]):
                    tracker.log_metrics({f"{name}.{k}": v for k, v in h.items()}, step=epoch)
            else:
                r = finetune(cfg, lists_dir, weights, state_dir / name, out_dir / name, Prefixed(tracker, name))
                log.info("finetune (%s): %s", name, throughput_line(r))
            out[name] = {"test_accuracy": r["test_accuracy"], "epochs": r["epochs"], "seconds": r["seconds"],
                         "protocol": cfg.finetune.protocol,
                         **{k: r[k] for k in ("clips_per_s", "data_wait", "data_wait_steady", "peak_gpu_mem_gib")
                            if k in r}}
            tracker.log_metrics({f"{name}.test_accuracy": r["test_accuracy"]})
            curves = plot_curves(r["history"], ["train_loss", "train_clip_acc"], plots / f"finetune_{name}.png",
                                 f"fine-tune ({name})")
            conf = plot_confusion(r["true"], r["pred"], names, plots / f"confusion_{name}.png")
            for path in (curves, conf):
                tracker.log_artifact(path)
            tracker.log_artifact(out_dir / name / "classifier.pt", f"weights/{name}")  # the fine-tuned model
        write_json(metrics, out)
        tracker.log_artifact(metrics)
    return out


class Prefixed:
    """Tracker view that prefixes metric names, so two fine-tunes share one run without clashing."""

    def __init__(self, tracker: Any, prefix: str) -> None:
        self.tracker, self.prefix = tracker, prefix

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.tracker.log_metrics({f"{self.prefix}.{k}": v for k, v in metrics.items()}, step=step)


def retrieval_scores(cfg: Params, lists_dir: Path, weights: Path | None, features: Path,
                     extras: dict[str, Any] | None = None) -> dict[str, float]:
    """Retrieval top-k of one backbone (``weights`` None = random init with the pretraining seed).

    The gallery is the whole training split (``pretrain.csv``: the fine-tune train list plus the videos held out
    for validation), as the seeds rank test videos against every train video.

    Raises:
        NonFiniteFeatures: if a video's feature holds NaN or Inf (named), before anything is scored.
    """
    from vidssl.engine import ddp
    from vidssl.data.clips import read_list, usable_records
    from vidssl.evaluation.retrieval import (
        center, check_finite, check_ks, retrieval_hits, save_features, topk_curve, video_features,
    )
    from vidssl.methods.registry import build_method
    from vidssl.engine.train import build_model_backbone, clip_spec, device, load_backbone, seed_all

    ddp.require_single_process("retrieve")
    seed_all(cfg.seed)  # the same seed as pretraining, so random init is the pretraining's starting point
    backbone = build_model_backbone(cfg)
    if weights is not None:
        load_backbone(backbone, weights)
    spec = clip_spec(cfg)
    # the videos the datasets read (clip.short_videos: drop leaves short ones out), so saved ids match features
    train, test = (usable_records(read_list(lists_dir / f"{n}.csv"), spec) for n in ("pretrain", "test"))
    method = build_method(cfg.pretrain.method, backbone, cfg, n_samples=len(train)).to(device())
    r = cfg.retrieve
    kw = dict(n_clips=r.clips, feature=r.feature, merged=r.merged, workers=r.workers, view=r.view)
    g_feat, g_lab = video_features(method, train, spec, **kw)
    q_feat, q_lab = video_features(method, test, spec, **kw)
    name = "random init" if weights is None else str(weights)
    check_finite(g_feat, f"retrieval gallery features of {name}", [v.video_id for v in train])
    check_finite(q_feat, f"retrieval query features of {name}", [v.video_id for v in test])
    save_features(features / "train.npz", g_feat, g_lab, [v.video_id for v in train])
    save_features(features / "test.npz", q_feat, q_lab, [v.video_id for v in test])
    if r.center or r.protocol == "centred":  # CoCLR/DualVar: each set minus its own mean, then cosine
        g_feat, q_feat = center(g_feat), center(q_feat)
    # One ranking to the largest k the metrics or the top-k curve need; every top-k is read off its hits.
    hits, idx = retrieval_hits(g_feat, g_lab, q_feat, q_lab, max(max(r.topk), CURVE_K), index=r.index,
                               chunk_bytes=r.chunk_mb * 2**20)
    curve = topk_curve(hits)
    if extras is not None:  # what the plots need: the curve, the neighbours, the videos and features
        extras.update(curve=curve[:CURVE_K], idx=idx, hits=hits, gallery=train, queries=test, q_feat=q_feat,
                      q_lab=q_lab)
    return {f"top{k}": float(curve[min(k, len(curve)) - 1]) for k in check_ks(r.topk)}


CURVE_K = 50  # the top-k curve's last k


def retrieval_plots(extras: dict[str, dict[str, Any]], names: list[str], plots: Path,
                    n_examples: int = 8, seed: int = 0) -> list[Path]:
    """The retrieval plots: top-k curves of every backbone, and for the pretrained one a t-SNE of the test
    videos' features and a grid of queries (first frames) with their top-5, hits framed green."""
    import numpy as np

    from vidssl.data.store import FramePack
    from vidssl.evaluation.plots import plot_retrieval_examples, plot_topk_curve, plot_tsne

    out = [plot_topk_curve({k.replace("_", " "): v["curve"] for k, v in extras.items()},
                           plots / "retrieval_topk.png")]
    ex = extras.get("pretrained")
    if ex is None:
        return out
    out.append(plot_tsne(ex["q_feat"], ex["q_lab"], names, plots / "tsne_test.png", seed=seed))
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(ex["queries"]), min(n_examples, len(ex["queries"])), replace=False))

    def first_frame(rec: Any) -> Any:
        return FramePack(rec.frames_path).read([0])[0]

    top = min(5, ex["idx"].shape[1])
    out.append(plot_retrieval_examples(
        [first_frame(ex["queries"][i]) for i in picks],
        [[first_frame(ex["gallery"][j]) for j in ex["idx"][i, :top]] for i in picks],
        ex["hits"][picks, :top], plots / "retrieval_examples.png",
        [names[int(ex["q_lab"][i])] for i in picks]))
    return out


@locked_stage("retrieve")
def run_retrieve(cfg: Params, lists_dir: Path, weights: Path, features: Path, metrics: Path,
                 plots: Path | None = None) -> dict[str, Any]:
    """Retrieval of random init and the pretrained backbone; with ``plots``, its figures (MLflow artifacts and
    `dvc plots`): top-k curves (PNG and ``retrieval_topk.csv``), t-SNE of the test features, example queries."""
    from vidssl.pipeline.tracking import stage_run

    params = flatten({"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                      "retrieve": cfg.retrieve.model_dump(), **_identity(cfg)})
    _require_inputs("retrieve", lists_dir / "pretrain.csv", lists_dir / "test.csv", weights)
    out: dict[str, Any] = {}
    extras: dict[str, dict[str, Any]] = {}
    with stage_run("retrieve", params) as tracker:
        for name, w in (("random_init", None), ("pretrained", weights)):
            t0 = time.time()
            extras[name] = {}
            out[name] = retrieval_scores(cfg, lists_dir, w, features / name, extras[name])
            out[name]["seconds"] = time.time() - t0
            tracker.log_metrics({f"{name}.{k}": v for k, v in out[name].items()})
        write_json(metrics, out)
        tracker.log_artifact(metrics)
        if plots is not None:
            from vidssl.io import write_text

            t0 = time.time()
            names = [line.split(",", 1)[1].strip()
                     for line in (lists_dir / "classes.csv").read_text().splitlines()[1:]]
            paths = retrieval_plots(extras, names, plots, seed=cfg.seed)
            rows = ["k,random_init,pretrained"] + [
                f"{k + 1},{extras['random_init']['curve'][k]:.6f},{extras['pretrained']['curve'][k]:.6f}"
                for k in range(min(len(extras["random_init"]["curve"]), len(extras["pretrained"]["curve"])))]
            write_text(plots / "retrieval_topk.csv", "\n".join(rows) + "\n")
            for path in [*paths, plots / "retrieval_topk.csv"]:
                tracker.log_artifact(path, "plots")
            log.info("retrieval plots in %.1f s", time.time() - t0)
    return out


def results_table(pretrain: dict[str, Any], finetune: dict[str, Any], retrieve: dict[str, Any],
                  ks: list[int]) -> str:
    """The paper-style Markdown table: retrieval top-k and fine-tune accuracy, random init vs pretrained."""
    head = "| backbone weights | " + " | ".join(f"top-{k}" for k in ks) + " | fine-tune acc |"
    rows = [head, "|" + "---|" * (len(ks) + 2)]
    for name in ("random_init", "pretrained"):
        r = retrieve.get(name, {})
        ft = finetune.get(name, {}).get("test_accuracy")
        cells = [f"{100 * r[f'top{k}']:.1f}" if f"top{k}" in r else "–" for k in ks]
        rows.append(f"| {name.replace('_', ' ')} | " + " | ".join(cells) + f" | {'–' if ft is None else f'{100*ft:.1f}'} |")
    return "\n".join(rows)


def numeric_leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"a.b": 1.0}`` for every number in a nested dict (bools and strings left out)."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_leaves(value, name + "."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


@locked_stage("evaluate")
def run_evaluate(cfg: Params, metrics_dir: Path, report: Path, summary_path: Path,
                 backbone: Path = Path("models/pretrain/backbone.pt")) -> str:
    """Summarise the stage metrics into ``summary_path`` (for `dvc metrics show`) and a Markdown report.

    Tracked as the ``evaluate`` stage run: the summary metrics and the report also go on the pipeline's parent
    run, and the pretrained ``backbone`` is registered in the model registry (see vidssl.pipeline.registry).
    """
    from vidssl.pipeline.tracking import stage_run

    load = lambda name: json.loads((metrics_dir / f"{name}.json").read_text())  # noqa: E731
    pre, ft, ret = load("pretrain"), load("finetune"), load("retrieve")
    gain = {f"top{k}": ret["pretrained"][f"top{k}"] - ret["random_init"][f"top{k}"] for k in cfg.retrieve.topk}
    summary: dict[str, Any] = {"retrieval": ret, "finetune": ft, "pretrain": pre, "retrieval_gain": gain}
    params = flatten({"retrieve": cfg.retrieve.model_dump(), "registry": cfg.registry.model_dump()})
    with stage_run("evaluate", params) as tracker:
        numbers = numeric_leaves(summary)
        registered = _register(cfg, tracker, numbers, backbone) if backbone.is_file() else None
        # Strings in a metrics file show as columns of `dvc exp show`: the run ids link an experiment to MLflow.
        summary["mlflow"] = {"pipeline_run_id": tracker.parent_id, "evaluate_run_id": tracker.run_id,
                             **({"model_version": registered["version"]} if registered else {})}
        write_json(summary_path, summary)
        tracker.log_metrics(numbers)
        tracker.log_pipeline_metrics(numbers)
        text = _results_text(cfg, pre, ft, ret, gain)
        from vidssl.io import write_text

        write_text(report, text)
        for path in (summary_path, report):
            tracker.log_artifact(path)
            tracker.log_pipeline_artifact(path)
    return text


def _register(cfg: Params, tracker: Any, numbers: dict[str, float], backbone: Path) -> dict[str, Any] | None:
    """Register the pretrained backbone (the pretrain run's logged copy) and move the registry's aliases."""
    from vidssl.pipeline import registry
    from vidssl.pipeline.tracking import lineage_tags, with_fallback

    metric = cfg.registry.metric
    registry.metric_value(_nest(numbers), metric)  # a key that is not there is named before anything is written
    md5 = registry.file_md5(backbone)
    client = tracker.client
    exp_id = client.get_run(tracker.run_id).info.experiment_id
    found = client.search_runs([exp_id], filter_string=f"tags.`vidssl.stage` = 'pretrain' and "
                               f"tags.backbone_md5 = '{md5}'", max_results=1, order_by=["attributes.start_time DESC"])
    if found:
        source = found[0].info.run_id
    else:  # trained outside a tracked run: keep the file with this run so the version has something to point at
        tracker.log_artifact(backbone)
        source = tracker.run_id
    name = registry.model_name(cfg.registry.model, cfg.pretrain.method, cfg.model.backbone, cfg.data.dataset)
    tags = {**lineage_tags(Path.cwd()), "method": cfg.pretrain.method, "backbone": cfg.model.backbone,
            "dataset": cfg.data.dataset, "backbone_md5": md5, "pipeline_run_id": tracker.parent_id}
    out = with_fallback(lambda: registry.register_backbone(client, name, source, "backbone.pt", numbers, metric,
                                                           cfg.registry.higher_is_better, tags), "model registration")
    if out:
        tracker.set_pipeline_tags({"model": f"{out['name']} v{out['version']}",
                                   "model_alias": "champion" if out["champion"] else "candidate"})
    return out


def _nest(flat: dict[str, float]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def _results_text(cfg: Params, pre: dict[str, Any], ft: dict[str, Any], ret: dict[str, Any],
                  gain: dict[str, float]) -> str:
    table = results_table(pre, ft, ret, cfg.retrieve.topk)
    centred = cfg.retrieve.center or cfg.retrieve.protocol == "centred"
    view2 = cfg.retrieve.view == "second" and not cfg.retrieve.merged
    text = (f"# vidssl results\n\nMethod `{cfg.pretrain.method}` on backbone `{cfg.model.backbone}`, dataset "
            f"`{cfg.data.dataset}` split {cfg.data.split}; seed {cfg.seed}.\n\n"
            f"Retrieval (protocol `{'centred' if centred else 'vcop'}`): test videos query every train video, "
            f"{cfg.retrieve.clips} clips per video averaged, cosine, feature `{cfg.retrieve.feature}`"
            f"{' (merged views)' if cfg.retrieve.merged else ''}{' (second view)' if view2 else ''}"
            f"{', each set centred' if centred else ''}. Fine-tune: protocol `{cfg.finetune.protocol}`"
            f"{f', {cfg.finetune.test_clips} test clips' if cfg.finetune.protocol != 'linear' else ''}"
            f".\n\n{table}\n\nPretraining: {pre['epochs']} epochs, final loss {pre['final_loss']:.3f}, "
            f"{pre['seconds']:.0f} s. Retrieval top-1 gain from pretraining: {100 * gain['top1']:+.1f} points.\n")
    return text


def run_diagnose(cfg: Params, lists_dir: Path, weights: Path | None, classifier: Path | None,
                 synth_json: Path | None, report: Path, metrics: Path) -> dict[str, Any]:
    """`vidssl diagnose`: temporal sensitivity and background bias as a Markdown table, JSON and MLflow metrics."""
    from vidssl.evaluation.diagnose import diagnose, diagnose_table, flat_metrics
    from vidssl.io import write_text
    from vidssl.pipeline.tracking import stage_run

    params = flatten({"seed": cfg.seed, "model": cfg.model.model_dump(), "clip": cfg.clip.model_dump(),
                      "retrieve": cfg.retrieve.model_dump(), "finetune.protocol": cfg.finetune.protocol,
                      "synth.background_bias": cfg.synth.background_bias})
    with stage_run("diagnose", params) as tracker:
        result = diagnose(cfg, lists_dir, weights, classifier if classifier and classifier.is_file() else None,
                          synth_json)
        table = diagnose_table(result)
        write_text(report, f"# What the model uses\n\nMethod `{cfg.pretrain.method}`, backbone "
                           f"`{cfg.model.backbone}`, weights `{weights or 'random init'}`.\n\n{table}\n")
        write_json(metrics, result)
        tracker.log_metrics(flat_metrics(result))
        for path in (report, metrics):
            tracker.log_artifact(path)
    return result
