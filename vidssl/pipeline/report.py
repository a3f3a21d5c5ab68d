"""The methods report: random init, every baseline and every seed method on the same data, backbone and seed.

Each method is pretrained, then evaluated exactly as the pipeline evaluates one (retrieval, then fine-tuning),
with the wall time of each part. Results land in ``<work>/seed<N>/<method>/result.json`` keyed by the method's
resolved params and the lists, so a rerun skips what is done and an interrupted one picks up where it stopped.
With several ``report.seeds`` every entry runs once per seed; the report prints mean ± sd and judges each
method by its per-seed gains over random init at the same seed (the same starting weights).
On MotionShapes the report also says what the features encode: how often a test video's nearest train video
shares its class, motion pair, background or shape (:mod:`vidssl.evaluation.factors`). For methods whose add-ons log a probe
accuracy, it says whether the method learned its own objective on held-out videos (:mod:`vidssl.evaluation.probe`).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vidssl.config import Params, deep_merge, flatten, with_overrides
from vidssl.io import write_json, write_text

log = logging.getLogger(__name__)

RANDOM_INIT = "random_init"


@dataclass
class Row:
    """One line of the report: retrieval top-k (fractions), fine-tune accuracy and wall times in seconds."""

    name: str
    kind: str  # "reference" | "seed" | "baseline" | "variant"
    baseline: str | None
    retrieval: dict[str, float]
    finetune_acc: float
    seconds: dict[str, float] = field(default_factory=dict)
    final_loss: float | None = None
    seed: int = 0
    factors: dict[str, dict[str, float]] | None = None  # vidssl.evaluation.factors agreement (MotionShapes only)
    probes: dict[str, dict[str, float]] | None = None  # vidssl.evaluation.probe: {term: {"random": x, "trained": y}}
    rank: float | None = None  # RankMe of the train videos' retrieval features (vidssl.evaluation.retrieval.rankme)
    dim: int | None = None  # their dimension D, the rank's upper bound
    method: str | None = None  # a variant's registered method (``report.variants``); None: ``name`` itself


def entry_method(cfg: Params, name: str) -> str:
    """The registered method behind report entry ``name``: itself, or the method a ``report.variants`` names."""
    variant = cfg.report.variants.get(name)
    return variant.method if variant else name


def method_params(cfg: Params, name: str) -> Params:
    """``cfg`` with ``pretrain.method = name`` and the report's overrides for ``name`` merged over it; for a
    variant, its method's overrides and then its own."""
    method = entry_method(cfg, name)
    over = deep_merge({"pretrain": {"method": method}}, cfg.report.overrides.get(method, {}))
    where = f"params + report.overrides.{method}"
    if name in cfg.report.variants:
        over = deep_merge(over, cfg.report.variants[name].overrides)
        where += f" + report.variants.{name}.overrides"
    return with_overrides(cfg, over, where)


def frames_digest(lists_dir: Path) -> str:
    """One digest of the frame packs the pretrain/train/test lists name, so a result computed on other frames
    (another synth look pool, background bias or extract size behind the same list files) is never reused."""
    from vidssl.data.clips import read_list
    from vidssl.data.store import packs_fingerprint

    return packs_fingerprint(r.frames_path for s in ("pretrain", "train", "test")
                             for r in read_list(lists_dir / f"{s}.csv"))


def _key(cfg: Params, lists_dir: Path, pretrained: bool) -> str:
    from vidssl.engine.checkpoint import config_key
    from vidssl.engine.train import file_digest

    used = cfg.model_dump(include={"seed", "model", "clip", "finetune", "retrieve"})
    # Random init does not depend on pretraining settings beyond which method embeds the clips.
    used["pretrain"] = cfg.pretrain.used() if pretrained else cfg.pretrain.method
    lists = [file_digest(lists_dir / f"{s}.csv") for s in ("pretrain", "train", "test")]
    return config_key({**used, "lists": lists, "frames": frames_digest(lists_dir)})


def evaluate_entry(cfg: Params, name: str, lists_dir: Path, work_dir: Path) -> Row:
    """Pretrain ``name`` (nothing for random init), then retrieve and fine-tune; reuse a finished result."""
    from vidssl.methods.registry import METHODS
    from vidssl.pipeline.stages import Prefixed, retrieval_scores
    from vidssl.pipeline.tracking import stage_run
    from vidssl.engine.train import finetune, pretrain

    mcfg = cfg if name == RANDOM_INIT else method_params(cfg, name)
    method = entry_method(cfg, name)
    if method != name:  # a variant is judged against its own method's row, as a seed method against its baseline
        kind, baseline = "variant", method
    else:
        cls = METHODS.get(name)
        kind = "reference" if cls is None else ("seed" if cls.baseline else "baseline")
        baseline = getattr(cls, "baseline", None)
    # What the entry is called and judged against comes from today's params; the key covers only what was
    # computed, so a result moved to an entry of another name with the same settings is reused as that entry.
    identity = {"name": name, "kind": kind, "baseline": baseline, "method": method if method != name else None,
                "seed": cfg.seed}
    out = work_dir / name
    key, done = _key(mcfg, lists_dir, name != RANDOM_INIT), out / "result.json"
    if done.is_file():
        saved = json.loads(done.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            log.info("%s: reusing %s", name, done)
            return Row(**{**saved["row"], **identity})
    params = flatten(mcfg.model_dump(include={"seed", "model", "clip", "pretrain", "finetune", "retrieve"}))
    with stage_run(f"report.{name}", params) as tracker:
        weights, seconds, final_loss = None, {}, None
        if name != RANDOM_INIT:
            log.info("%s: pretraining", name)
            summary = pretrain(mcfg, lists_dir, out / "pretrain_state", out, tracker)
            weights, final_loss = out / "backbone.pt", summary["final_loss"]
            seconds["pretrain"] = summary["seconds"]
        t1 = time.time()
        retrieval = retrieval_scores(mcfg, lists_dir, weights, out / "features")
        seconds["retrieve"] = time.time() - t1
        ft = finetune(mcfg, lists_dir, weights, out / "finetune_state", out / "finetune",
                      Prefixed(tracker, "finetune"))
        seconds["finetune"] = ft["seconds"]
        seconds["total"] = seconds.get("pretrain", 0.0) + seconds["retrieve"] + seconds["finetune"]
        row = Row(retrieval=retrieval, finetune_acc=ft["test_accuracy"], seconds=seconds, final_loss=final_loss,
                  **identity)
        tracker.set_tags({"vidssl.report_kind": kind, "vidssl.report_seed": str(cfg.seed)})
        tracker.log_metrics({**{f"retrieval.{k}": v for k, v in retrieval.items()},
                             "finetune.test_accuracy": ft["test_accuracy"],
                             **{f"seconds.{k}": v for k, v in seconds.items()}})
    write_json(done, {"key": key, "row": asdict(row)})
    return row


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _stat(values: Sequence[float]) -> str:
    """``33.3`` for one value, ``33.3 ± 4.1`` (mean ± sample sd, in points) for several."""
    if len(values) == 1:
        return _pct(values[0])
    return f"{_pct(statistics.mean(values))} ± {_pct(statistics.stdev(values))}"


def grouped(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows by entry name, in first-seen order (one row per seed)."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.name, []).append(r)
    return out


def _rank_cell(rs: Sequence[Row]) -> str:
    ranks = [r.rank for r in rs if r.rank is not None]
    if not ranks:
        return "–"
    mean = f"{statistics.mean(ranks):.1f}" + (f" ± {statistics.stdev(ranks):.1f}" if len(ranks) > 1 else "")
    return f"{mean} of {rs[0].dim}"


def methods_table(rows: Sequence[Row]) -> str:
    """Markdown table: one line per entry, retrieval top-1/5, fine-tune accuracy, feature rank and wall times
    (mean ± sd over seeds when there are several)."""
    lines = ["| method | kind | retrieval top-1 | top-5 | fine-tune acc | feature rank | pretrain s | total s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, rs in grouped(rows).items():
        pre = [r.seconds["pretrain"] for r in rs if "pretrain" in r.seconds]
        label = "random init" if name == RANDOM_INIT else name
        lines.append(
            f"| {label} | {rs[0].kind} | {_stat([r.retrieval['top1'] for r in rs])} | "
            f"{_stat([r.retrieval['top5'] for r in rs])} | {_stat([r.finetune_acc for r in rs])} | "
            f"{_rank_cell(rs)} | {f'{statistics.mean(pre):.0f}' if pre else '–'} | "
            f"{statistics.mean(r.seconds['total'] for r in rs):.0f} |"
        )
    return "\n".join(lines)


def feature_rank(features: Path) -> tuple[float, int] | None:
    """(RankMe, D) of the saved train features of one entry, or None when they are missing."""
    import numpy as np

    from vidssl.evaluation.retrieval import rankme

    path = features / "train.npz"
    if not path.is_file():
        return None
    with np.load(path) as z:
        feats = z["features"]
    return rankme(feats), int(feats.shape[1])


def _videos(gains: Sequence[float], n_test: int) -> list[int]:
    """Accuracy gains (fractions) as whole test videos."""
    return [round(g * n_test) for g in gains]


def _compare(mine: Sequence[float], other: Sequence[float], n_test: int) -> tuple[str, str]:
    """("beats" | "does NOT clearly beat" | "does NOT beat", detail) for per-video accuracies (retrieval top-1
    or fine-tune) as fractions paired by seed, over ``n_test`` test videos.

    Not a clear difference: a mean gain of at most 2 test videos, or (several seeds) a seed whose own gain
    does not have the mean's sign (a tie counts against). A positive mean that is not clear is "does NOT
    clearly beat", so the verb alone never claims a win the numbers do not carry.
    """
    gains = [a - b for a, b in zip(mine, other, strict=True)]
    mean = statistics.mean(gains)
    videos = _videos(gains, n_test)
    mean_videos = round(mean * n_test, 1) if n_test else 100 * mean
    noise = ""
    if n_test and abs(mean_videos) <= 2:
        noise = "; within 2 test videos, so not a clear difference"
    elif n_test and any(v * mean_videos <= 0 for v in videos):
        noise = "; not every seed agrees, so not a clear difference"
    word = "does NOT beat" if mean_videos <= 0 else ("does NOT clearly beat" if noise else "beats")
    if len(gains) == 1:
        return word, (f"{_pct(mine[0])} vs {_pct(other[0])}, {100 * mean:+.1f} points = {videos[0]:+d} "
                      f"test videos{noise}")
    per_seed = ", ".join(f"{v:+d}" for v in videos)
    means = f"{_pct(statistics.mean(mine))} vs {_pct(statistics.mean(other))}"
    return word, (f"mean of {len(gains)} seeds {means}, {100 * mean:+.1f} points = {mean * n_test:+.1f} test "
                  f"videos; per seed {per_seed}{noise}")


def _top1(rows: Sequence[Row]) -> list[float]:
    return [r.retrieval["top1"] for r in rows]


def _finetune(rows: Sequence[Row]) -> list[float]:
    return [r.finetune_acc for r in rows]


def _both(a: Sequence[Row], b: Sequence[Row], n_test: int) -> tuple[str, str, str]:
    """(retrieval verb and detail, fine-tune clause) of ``a`` against ``b``, rows paired by seed."""
    word, detail = _compare(_top1(a), _top1(b), n_test)
    ft_word, ft_detail = _compare(_finetune(a), _finetune(b), n_test)
    return word, detail, f"on fine-tune accuracy it {ft_word} it ({ft_detail})"


def _paired(a: Sequence[Row], b: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """``a``'s rows at the seeds ``b`` also ran, and ``b``'s row at each of those seeds, in ``a``'s order."""
    b_of = {r.seed: r for r in b}
    kept = [r for r in a if r.seed in b_of]
    return kept, [b_of[r.seed] for r in kept]


def verdicts(rows: Sequence[Row], n_test: int = 0) -> list[str]:
    """Plain sentences: does each seed method beat random init, and its own baseline? Each on both measures,
    retrieval top-1 (the frozen features) and fine-tune accuracy (the weights as a starting point), since
    the two can disagree and the papers report both.

    Comparisons pair rows by seed and use only seeds both sides ran.
    """
    by_name = grouped(rows)
    out = []
    for name, rs in by_name.items():
        if rs[0].kind not in ("seed", "variant"):
            continue
        ref = by_name.get(RANDOM_INIT)
        if ref:
            a, b = _paired(rs, ref)
            if a:
                word, detail, ft = _both(a, b, n_test)
                out.append(f"- **{name}** {word} random init on retrieval top-1 ({detail}); {ft}.")
        base = by_name.get(rs[0].baseline or "")
        if base:
            a, b = _paired(rs, base)
            if a:
                word, detail, ft = _both(a, b, n_test)
                whom = (f"the {base[0].name} row (its method without this change)" if rs[0].kind == "variant"
                        else f"its own baseline {base[0].name}")
                out.append(f"  - {word} {whom} on retrieval top-1 ({detail}); {ft}.")
    return out


_SHORT = {"beats": "**beats**", "does NOT clearly beat": "not clear", "does NOT beat": "does not beat"}


def per_seed_table(rows: Sequence[Row], n_test: int) -> str:
    """Markdown table: each entry's retrieval top-1 and fine-tune accuracy at every seed, and its gain over
    random init at the same seed in test videos; seed methods and variants also carry the verdict's word.

    Empty with one seed (the main table already shows every number) or without a random-init row.
    """
    by_name = grouped(rows)
    ref = by_name.get(RANDOM_INIT)
    seeds = list(dict.fromkeys(r.seed for r in rows))
    if not ref or len(seeds) < 2:
        return ""
    lines = ["| method | retrieval top-1 | fine-tune acc | top-1 gain | fine-tune gain |",
             "|---|---|---|---|---|"]
    for name, rs in by_name.items():
        at = {r.seed: r for r in rs}  # a seed this entry did not run shows as "–"
        cells = [" / ".join(_pct(get(at[sd])) if sd in at else "–" for sd in seeds)
                 for get in (lambda r: r.retrieval["top1"], lambda r: r.finetune_acc)]
        gains = ["–", "–"]
        if name != RANDOM_INIT:
            a, b = _paired(rs, ref)
            for i, values in enumerate((_top1, _finetune)):
                mine, other = values(a), values(b)
                diffs = [x - y for x, y in zip(mine, other, strict=True)]
                g = ", ".join(f"{v:+d}" for v in _videos(diffs, n_test))
                if a and rs[0].kind in ("seed", "variant"):
                    g += f": {_SHORT[_compare(mine, other, n_test)[0]]}"
                gains[i] = g or "–"
        label = "random init" if name == RANDOM_INIT else name
        label += " (variant)" if rs[0].kind == "variant" else ""
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {gains[0]} | {gains[1]} |")
    return "\n".join(lines)


def factors_table(rows: Sequence[Row]) -> str:
    """What the features encode: nearest-neighbour agreement per factor (mean over seeds), chance in the
    header; empty when no row carries factors."""
    from vidssl.evaluation.factors import FACTORS

    groups = {n: [r.factors for r in rs if r.factors] for n, rs in grouped(rows).items()}
    groups = {n: fs for n, fs in groups.items() if fs}
    if not groups:
        return ""
    first = next(iter(groups.values()))[0]
    shown = [f for f in FACTORS if f in first]  # "look" only when the dataset pools its looks
    head = " | ".join(f"{f.replace('_', ' ')} (chance {_pct(first[f]['chance'])})" for f in shown)
    lines = [f"| method | {head} |", "|---|" + "---|" * len(shown)]
    for name, fs in groups.items():
        cells = " | ".join(_stat([f[k]["agree"] for f in fs]) for k in shown)
        lines.append(f"| {'random init' if name == RANDOM_INIT else name} | {cells} |")
    return "\n".join(lines)


def _variants_text(ctx: dict[str, Any], rows: Sequence[Row]) -> str:
    """One sentence per variant row: which method it is and what it changes (params.yaml ``report.variants``)."""
    shown = [r.name for r in rows if r.kind == "variant"]
    parts = []
    for name in dict.fromkeys(shown):
        v = ctx["variants"].get(name)
        if v:
            change = ", ".join(f"`{k}: {val}`" for k, val in flatten(v["overrides"]).items()) or "nothing"
            parts.append(f" Variant `{name}`: {v['method']} as in its row, with {change}.")
    return "".join(parts)


def report_context(cfg: Params) -> dict[str, Any]:
    """The settings the report's text names, as plain data stored beside its rows (reports/methods.json), so the
    Markdown is a view of that file alone."""
    return {"dataset": cfg.data.dataset, "split": cfg.data.split, "backbone": cfg.model.backbone,
            "width": cfg.model.width, "clip": cfg.clip.model_dump(include={"frames", "stride", "crop"}),
            "pretrain_epochs": cfg.pretrain.epochs,
            "variants": {k: v.model_dump() for k, v in cfg.report.variants.items()},
            "retrieve": cfg.retrieve.model_dump(include={"clips", "feature"}),
            "finetune": cfg.finetune.model_dump(include={"epochs", "test_clips"})}


def results_document(cfg: Params, rows: Sequence[Row], n_test: int) -> dict[str, Any]:
    """What `vidssl methods-report` stores in reports/methods.json: the rows, the test-set size and the context."""
    return {"context": report_context(cfg), "n_test": n_test, "rows": [asdict(r) for r in rows]}


def render_document(doc: dict[str, Any], source: str = "methods.json") -> str:
    """The Markdown report of a stored :func:`results_document` (what `vidssl report` writes as methods.md)."""
    if "context" not in doc or "n_test" not in doc:
        raise ValueError(f"{source}: written by an older `vidssl methods-report` without the report's settings; "
                         "rerun `vidssl methods-report` (finished entries are reused, nothing retrains)")
    return render(doc["context"], [Row(**r) for r in doc["rows"]], int(doc["n_test"]))


def render(cfg: Params | dict[str, Any], rows: list[Row], n_test: int) -> str:
    """The whole Markdown report, from params or a stored :func:`report_context`."""
    ctx = cfg if isinstance(cfg, dict) else report_context(cfg)
    clip, ret, ft = ctx["clip"], ctx["retrieve"], ctx["finetune"]
    width = f" (width {ctx['width']})" if ctx["backbone"] == "tiny" else ""
    seeds = sorted({r.seed for r in rows}, key=[r.seed for r in rows].index)
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))} (mean ± sd)"
    factors = factors_table(rows)
    probes = probes_table(rows)
    per_seed = per_seed_table(rows, n_test)
    if per_seed:
        per_seed = (f"Per seed ({' / '.join(map(str, seeds))}): each entry's gain over random init at the same "
                    "seed, in test videos, and for seed methods and variants the verdict below (a clear win: a "
                    "mean gain over two videos, every seed the same sign).\n\n" + per_seed + "\n\n")
    learned = (
        "\n\n## What each method learned of its own objective\n\nThe accuracies a method's add-ons aim at, "
        "measured on the test videos (never pretrained on) with the method's own training step and no "
        "gradient, at random init (the same starting weights) and after pretraining, in percent. A rise means "
        "the objective was learned and carries over to unseen videos; whether that helps retrieval is the "
        "table above.\n\n" + probes
    ) if probes else ""
    encode = (
        "\n\n## What the features encode\n\nFor each test video, its nearest train video (cosine, the retrieval "
        "features): how often the two share the class, the motion pair (a class or its time-reversed partner), "
        "the background family or the shape, in percent. Class and motion pair are what a motion encoder "
        "should share; background and shape are nuisance, so agreement well above chance there means the "
        "features encode appearance.\n\n" + factors
    ) if factors else ""
    return (
        "# vidssl methods report\n\n"
        f"Dataset `{ctx['dataset']}` split {ctx['split']} ({n_test} test videos, so one video is "
        f"{100 / max(n_test, 1):.1f} points); backbone `{ctx['backbone']}`"
        f"{width}; clips of {clip['frames']} "
        f"frames at stride {clip['stride']}, {clip['crop']} px; {seed_text}; {ctx['pretrain_epochs']} pretraining "
        f"epochs unless overridden (params.yaml `report.overrides`).{_variants_text(ctx, rows)}\n\n"
        f"Retrieval: test videos query train videos, {ret['clips']} clips averaged, cosine, feature "
        f"`{ret['feature']}`. Fine-tune: backbone + linear head, {ft['epochs']} epochs, mean of "
        f"{ft['test_clips']} clips' logits. Feature rank: RankMe (Garrido et al., ICML 2023) of the "
        f"train videos' retrieval features, the effective number of directions they use out of their dimension "
        f"(near 1: collapsed). Times are seconds on this machine: pretraining and "
        f"fine-tuning as summed epoch times (a resumed run still counts every epoch), total = pretrain + "
        f"retrieve + fine-tune.\n\n"
        f"{methods_table(rows)}\n\n{per_seed}## Verdicts\n\n" + "\n".join(verdicts(rows, n_test)) + encode
        + learned + "\n"
    )


def probes_table(rows: Sequence[Row]) -> str:
    """Held-out objective: each probe accuracy at random init and after pretraining (mean over seeds), in
    percent; empty when no row carries probes."""
    from vidssl.methods.registry import METHODS

    lines = []
    for name, rs in grouped(rows).items():
        measured = [r.probes for r in rs if r.probes]
        if not measured:
            continue
        described = getattr(METHODS.get(rs[0].method or name), "probes", {})
        # the method's own order (the cached JSON comes back with sorted keys), then anything undeclared
        for term in [*(t for t in described if t in measured[0]), *(t for t in measured[0] if t not in described)]:
            lines.append(
                f"| {name} | {described.get(term, term)} | {_stat([p[term]['random'] for p in measured])} | "
                f"{_stat([p[term]['trained'] for p in measured])} |"
            )
    if not lines:
        return ""
    return "\n".join(["| method | probe (what the method's add-on asks for) | random init | pretrained |",
                      "|---|---|---|---|", *lines])


def entry_probes(cfg: Params, name: str, lists_dir: Path, out: Path) -> dict[str, dict[str, float]] | None:
    """:func:`vidssl.evaluation.probe.heldout_probes` of entry ``name`` at random init and pretrained, cached in
    ``out/probe.json`` under the same key as its result; None for random init, a method without probes, or a
    missing pretraining state (with a warning)."""
    from vidssl.methods.registry import METHODS
    from vidssl.evaluation.probe import PASSES, heldout_probes

    if name == RANDOM_INIT or not getattr(METHODS.get(entry_method(cfg, name)), "probes", None):
        return None
    mcfg = method_params(cfg, name)
    from vidssl.engine.checkpoint import latest_checkpoint

    key, cache = _key(mcfg, lists_dir, True), out / "probe.json"
    state = latest_checkpoint(out / "pretrain_state") or out / "pretrain_state" / "(no checkpoint)"
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("key") == key and saved.get("passes") == PASSES:
            return saved["probes"]
    if not state.is_file():
        log.warning("%s: no %s, so no held-out probe; rerun after deleting %s", name, state, out / "result.json")
        return None
    random, trained = heldout_probes(mcfg, lists_dir, None), heldout_probes(mcfg, lists_dir, state)
    probes = {t: {"random": random[t], "trained": trained[t]} for t in trained if t in random}
    write_json(cache, {"key": key, "passes": PASSES, "probes": probes})
    return probes


def synth_summary(cfg: Params, lists_dir: Path) -> Path:
    """The ``synth.json`` of the dataset these lists were made from: beside the split files named in the lists'
    ``lists.json`` (so a control dataset's lists never read the default dataset's looks), else beside
    ``data.raw_dir``."""
    made = lists_dir / "lists.json"
    if made.is_file():
        split_dir = json.loads(made.read_text(encoding="utf-8")).get("params", {}).get("split_dir")
        if split_dir and (Path(split_dir).parent / "synth.json").is_file():
            return Path(split_dir).parent / "synth.json"
    return Path(cfg.data.raw_dir).parent / "synth.json"


def _factors(features: Path, synth: Path) -> dict[str, dict[str, float]] | None:
    """The factor agreement of one entry, or None (with a warning) when the dataset summary does not match:
    the table is a diagnosis, so it never costs the report its measured numbers."""
    from vidssl.evaluation.factors import features_agreement

    try:
        return features_agreement(features, synth)
    except (KeyError, ValueError) as e:
        log.warning("skipping 'What the features encode': %s", e)
        return None


def run_methods_report(cfg: Params, lists_dir: Path, work_dir: Path, out: Path,
                       methods: list[str] | None = None) -> str:
    """Evaluate random init and each of ``methods`` (default ``report.methods``); write the report to ``out``."""
    from vidssl.data.clips import read_list
    from vidssl.methods.registry import METHODS

    names = list(methods or cfg.report.methods)
    variants = cfg.report.variants
    clash = sorted(set(variants) & set(METHODS))
    if clash:
        raise ValueError(f"report.variants: {clash} are registered method names; give each variant its own name")
    for what, given, allowed in (
        ("report.methods", names, [*METHODS, *variants]),
        ("report.overrides", list(cfg.report.overrides), list(METHODS)),
        ("report.variants.*.method", [v.method for v in variants.values()], list(METHODS)),
    ):
        unknown = [n for n in given if n not in allowed]
        if unknown:
            also = " or report.variants" if what == "report.methods" else ""
            raise ValueError(f"{what}: {unknown} are not registered methods{also}; choose from {sorted(allowed)}")
    for name in names:
        method_params(cfg, name)  # a bad override stops here, before any method has trained
    for f in ("pretrain", "train", "test"):
        if not (lists_dir / f"{f}.csv").is_file():
            raise FileNotFoundError(f"{lists_dir / f'{f}.csv'}: list not found; run `dvc repro validate` (or "
                                    "`vidssl lists`) first")
    synth = synth_summary(cfg, lists_dir)
    rows = []
    for seed in cfg.report.seeds or [cfg.seed]:
        scfg = with_overrides(cfg, {"seed": seed}, "params + report.seeds")
        for name in [RANDOM_INIT, *names]:
            row = evaluate_entry(scfg, name, lists_dir, work_dir / f"seed{seed}")
            if cfg.data.dataset == "synthetic" and synth.is_file():
                row.factors = _factors(work_dir / f"seed{seed}" / name / "features", synth)
            row.probes = entry_probes(scfg, name, lists_dir, work_dir / f"seed{seed}" / name)
            row.rank, row.dim = feature_rank(work_dir / f"seed{seed}" / name / "features") or (None, None)
            rows.append(row)
    # The results are stored; the Markdown and HTML are `vidssl report`'s view of them (one producer).
    from vidssl.pipeline.paper_table import methods_view

    write_json(out.with_suffix(".json"), results_document(cfg, rows, len(read_list(lists_dir / "test.csv"))))
    return methods_view(out.with_suffix(".json"), out, out.with_suffix(".html"))

