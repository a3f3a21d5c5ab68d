"""The methods report: random init, every baseline and every seed method on the same data, backbone and seed.

Each method is pretrained, then evaluated exactly as the pipeline evaluates one (retrieval, then fine-tuning),
with the wall time of each part. Results land in ``<work>/<method>/result.json`` keyed by the method's resolved
params and the lists, so a rerun skips what is done and an interrupted one picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidssl.config import Params, deep_merge, flatten, parse_params
from vidssl.io import write_json, write_text

log = logging.getLogger(__name__)

RANDOM_INIT = "random_init"


@dataclass
class Row:
    """One line of the report: retrieval top-k (fractions), fine-tune accuracy and wall times in seconds."""

    name: str
    kind: str  # "reference" | "seed" | "baseline"
    baseline: str | None
    retrieval: dict[str, float]
    finetune_acc: float
    seconds: dict[str, float] = field(default_factory=dict)
    final_loss: float | None = None


def method_params(cfg: Params, name: str) -> Params:
    """``cfg`` with ``pretrain.method = name`` and the report's overrides for ``name`` merged over it."""
    raw = deep_merge(cfg.model_dump(), {"pretrain": {"method": name}})
    raw = deep_merge(raw, cfg.report.overrides.get(name, {}))
    return parse_params(raw, f"params + report.overrides.{name}")


def _key(cfg: Params, lists_dir: Path, pretrained: bool) -> str:
    from vidssl.checkpoint import config_key
    from vidssl.train import file_digest

    used = cfg.model_dump(include={"seed", "model", "clip", "finetune", "retrieve"})
    # Random init does not depend on pretraining settings beyond which method embeds the clips.
    used["pretrain"] = cfg.pretrain.model_dump() if pretrained else cfg.pretrain.method
    return config_key({**used, "lists": [file_digest(lists_dir / f"{s}.csv") for s in ("pretrain", "train", "test")]})


def evaluate_entry(cfg: Params, name: str, lists_dir: Path, work_dir: Path) -> Row:
    """Pretrain ``name`` (nothing for random init), then retrieve and fine-tune; reuse a finished result."""
    from vidssl.methods.registry import METHODS
    from vidssl.runs import Prefixed, retrieval_scores
    from vidssl.tracking import stage_run
    from vidssl.train import finetune, pretrain

    mcfg = cfg if name == RANDOM_INIT else method_params(cfg, name)
    out = work_dir / name
    key, done = _key(mcfg, lists_dir, name != RANDOM_INIT), out / "result.json"
    if done.is_file():
        saved = json.loads(done.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            log.info("%s: reusing %s", name, done)
            return Row(**saved["row"])
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
        cls = METHODS.get(name)
        kind = "reference" if cls is None else ("seed" if cls.baseline else "baseline")
        row = Row(name, kind, getattr(cls, "baseline", None), retrieval, ft["test_accuracy"], seconds, final_loss)
        tracker.set_tags({"vidssl.report_kind": kind})
        tracker.log_metrics({**{f"retrieval.{k}": v for k, v in retrieval.items()},
                             "finetune.test_accuracy": ft["test_accuracy"],
                             **{f"seconds.{k}": v for k, v in seconds.items()}})
    write_json(done, {"key": key, "row": asdict(row)})
    return row


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def methods_table(rows: list[Row]) -> str:
    """Markdown table: one row per entry, retrieval top-1/5, fine-tune accuracy and wall times."""
    lines = ["| method | kind | retrieval top-1 | top-5 | fine-tune acc | pretrain s | total s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        pre = r.seconds.get("pretrain")
        label = "random init" if r.name == RANDOM_INIT else r.name
        lines.append(f"| {label} | {r.kind} | {_pct(r.retrieval['top1'])} | {_pct(r.retrieval['top5'])} | "
                     f"{_pct(r.finetune_acc)} | {'–' if pre is None else f'{pre:.0f}'} | {r.seconds['total']:.0f} |")
    return "\n".join(lines)


def _compare(top1: float, other: float, n_test: int) -> tuple[str, str]:
    """("beats" | "does NOT beat", detail) for two retrieval top-1 fractions over ``n_test`` queries."""
    gain = 100 * (top1 - other)
    videos = round((top1 - other) * n_test)
    word = "beats" if gain > 0 else "does NOT beat"
    noise = "; within 2 test videos, so not a clear difference" if n_test and abs(videos) <= 2 else ""
    return word, f"{_pct(top1)} vs {_pct(other)}, {gain:+.1f} points = {videos:+d} test videos{noise}"


def verdicts(rows: list[Row], n_test: int = 0) -> list[str]:
    """Plain sentences: does each seed method beat random init, and its own baseline (retrieval top-1)?"""
    by_name = {r.name: r for r in rows}
    ref = by_name.get(RANDOM_INIT)
    out = []
    for r in rows:
        if r.kind != "seed":
            continue
        top1 = r.retrieval["top1"]
        if ref is not None:
            word, detail = _compare(top1, ref.retrieval["top1"], n_test)
            out.append(f"- **{r.name}** {word} random init on retrieval top-1 ({detail}); fine-tune "
                       f"{_pct(r.finetune_acc)} vs {_pct(ref.finetune_acc)}.")
        base = by_name.get(r.baseline or "")
        if base is not None:
            word, detail = _compare(top1, base.retrieval["top1"], n_test)
            out.append(f"  - {word} its own baseline {base.name} on retrieval top-1 ({detail}).")
    return out


def render(cfg: Params, rows: list[Row], n_test: int) -> str:
    """The whole Markdown report."""
    return (
        "# vidssl methods report\n\n"
        f"Dataset `{cfg.data.dataset}` split {cfg.data.split} ({n_test} test videos, so one video is "
        f"{100 / max(n_test, 1):.1f} points); backbone `{cfg.model.backbone}`"
        f"{f' (width {cfg.model.width})' if cfg.model.backbone == 'tiny' else ''}; clips of {cfg.clip.frames} "
        f"frames at stride {cfg.clip.stride}, {cfg.clip.crop} px; seed {cfg.seed}; {cfg.pretrain.epochs} pretraining "
        f"epochs unless overridden (params.yaml `report.overrides`).\n\n"
        f"Retrieval: test videos query train videos, {cfg.retrieve.clips} clips averaged, cosine, feature "
        f"`{cfg.retrieve.feature}`. Fine-tune: backbone + linear head, {cfg.finetune.epochs} epochs, mean of "
        f"{cfg.finetune.test_clips} clips' logits. Times are seconds on this machine: pretraining and "
        f"fine-tuning as summed epoch times (a resumed run still counts every epoch), total = pretrain + "
        f"retrieve + fine-tune.\n\n"
        f"{methods_table(rows)}\n\n## Verdicts\n\n" + "\n".join(verdicts(rows, n_test)) + "\n"
    )


def run_methods_report(cfg: Params, lists_dir: Path, work_dir: Path, out: Path,
                       methods: list[str] | None = None) -> str:
    """Evaluate random init and each of ``methods`` (default ``report.methods``); write the report to ``out``."""
    from vidssl.data.clips import read_list
    from vidssl.methods.registry import METHODS

    names = list(methods or cfg.report.methods)
    for what, given in (("report.methods", names), ("report.overrides", list(cfg.report.overrides))):
        unknown = [n for n in given if n not in METHODS]
        if unknown:
            raise ValueError(f"{what}: {unknown} are not registered methods; choose from {sorted(METHODS)}")
    for name in names:
        method_params(cfg, name)  # a bad override stops here, before any method has trained
    for f in ("pretrain", "train", "test"):
        if not (lists_dir / f"{f}.csv").is_file():
            raise FileNotFoundError(f"{lists_dir / f'{f}.csv'}: list not found; run `dvc repro validate` (or "
                                    "`vidssl lists`) first")
    rows = [evaluate_entry(cfg, n, lists_dir, work_dir) for n in [RANDOM_INIT, *names]]
    text = render(cfg, rows, len(read_list(lists_dir / "test.csv")))
    write_text(out, text)
    write_json(out.with_suffix(".json"), {"rows": [asdict(r) for r in rows]})
    return text

