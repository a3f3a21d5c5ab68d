"""`vidssl report`: a paper-style table of every tracked result, with published numbers where the protocol matches.

Rows come from the finished MLflow runs of the retrieve and finetune stages, grouped by method, backbone,
dataset, split and protocol; the newest run of each group counts. A setting run on all three official splits
(``data.split`` 1, 2 and 3) gets a "1-3" row: mean ± sd over the splits. A published number is shown beside ours only
when its entry in ``PUBLISHED`` names the same method, backbone, dataset, split, protocol and clip size, and the
run's weights were pretrained with the settings it names (source named in the footnotes); otherwise the cell says nothing rather than compare unlike things (a split-1 number is not
put beside split 2 or a three-split mean, a 16-frame 112 px number not beside a CPU demo's small clips).

It is also the one producer of the methods report's Markdown and HTML (reports/methods.md, .html): a view of the
results `vidssl methods-report` stores in reports/methods.json (:func:`methods_view`), never a file kept by hand.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

KS = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class Published:
    """A number a seed published, and what it was measured under."""

    method: str
    backbone: str
    dataset: str
    protocol: str  # a retrieval protocol label (see :func:`retrieval_protocol`) or a fine-tune protocol name
    values: dict[str, float]  # "top1".. or "finetune", in percent
    source: str
    split: str = "1"  # the official split it was measured on ("1"-"3"), or "1-3" for a mean over the three
    clip: str = "16x112"  # clip frames x crop side it was measured at (``clip.frames`` x ``clip.crop``)
    pretrain: tuple[tuple[str, str], ...] = ()  # logged pretraining params the weights must have had


# Only numbers whose protocol vidssl reproduces; pretraining data is the dataset itself (UCF101-pretrained).
# All four were measured on UCF101 split 1 with 16-frame clips cropped to 112 px (IIC README: "retrieval
# results on UCF101 split 1", its fine-tune command ``--split=1``, ``--cl 16`` and CenterCrop(112) in its
# code; DualVar's scripts ``--which_split 1`` (the default of its classifier.py), ``--seq_len 16 --img_dim 112``).
_IIC = (("pretrain.iic.intra_neg", "repeat"), ("pretrain.iic.view2", "res"))  # its "repeat + res" rows
_DUALVAR = (("pretrain.dualvar.core", "simclr"),)
PUBLISHED: tuple[Published, ...] = (
    Published("iic", "r3d10", "ucf101", "vcop/pool/merged",
              {"top1": 36.5, "top5": 54.1, "top10": 62.9, "top20": 72.4, "top50": 83.4},
              "BestJuly/IIC README, R3D repeat + res, merged views, UCF101 split 1", split="1", pretrain=_IIC),
    Published("iic", "r3d10", "ucf101", "iic", {"finetune": 72.8},
              "BestJuly/IIC README, repeat + res row (fine-tuned on residual clips, --modality res), split 1",
              split="1", pretrain=_IIC),
    Published("dualvar", "r21d10", "ucf101", "centred/gap",
              {"top1": 46.7, "top5": 63.1, "top10": 69.7, "top20": 78.0, "top50": 87.8},
              "DualVar paper, UCF101 retrieval table (lzhangbj/DualVar asset/retrieval_acc.png), split 1",
              split="1", pretrain=_DUALVAR),
    Published("dualvar", "r21d10", "ucf101", "dualvar", {"finetune": 79.0},
              "DualVar paper Table 4/5, SimCLR core, UCF101-pretrained (asset/finetune_acc.png), split 1",
              split="1", pretrain=_DUALVAR),
)


def retrieval_protocol(params: dict[str, str]) -> str:
    """A retrieval run's protocol label: ``<vcop|centred>/<pool|gap>[/merged|/second]``."""
    centred = params.get("retrieve.protocol") == "centred" or params.get("retrieve.center") == "True"
    label = f"{'centred' if centred else 'vcop'}/{params.get('retrieve.feature', 'pool')}"
    if params.get("retrieve.merged") == "True":
        return label + "/merged"
    return label + ("/second" if params.get("retrieve.view") == "second" else "")


def collect(runs: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per (method, backbone, dataset, split, protocol, weights) from MLflow runs, newest first wins."""
    rows: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        stage = run.data.tags.get("vidssl.stage")
        if stage not in ("retrieve", "finetune") or run.info.status != "FINISHED":
            continue
        p, m = run.data.params, run.data.metrics
        if "pretrain.method" not in p:
            continue  # runs from before the method was logged cannot be placed
        protocol = retrieval_protocol(p) if stage == "retrieve" else p.get("finetune.protocol", "plain")
        for weights in ("pretrained", "random_init"):
            values = ({f"top{k}": 100 * m[f"{weights}.top{k}"] for k in KS if f"{weights}.top{k}" in m}
                      if stage == "retrieve" else
                      ({"finetune": 100 * m[f"{weights}.test_accuracy"]} if f"{weights}.test_accuracy" in m else {}))
            if not values:
                continue
            key = (p["pretrain.method"], p.get("model.backbone", "?"), p.get("data.dataset", "?"),
                   p.get("data.split", "?"), stage, protocol, weights)
            if key not in rows or run.info.start_time > rows[key]["start"]:
                rows[key] = {"method": key[0] if weights == "pretrained" else "random init", "backbone": key[1],
                             "dataset": key[2], "split": key[3], "stage": stage, "protocol": protocol,
                             "clip": f"{p.get('clip.frames', '?')}x{p.get('clip.crop', '?')}",
                             "pretrain": {k: v for k, v in p.items() if k.startswith("pretrain.")},
                             "values": values, "start": run.info.start_time, "run_id": run.info.run_id,
                             "pretrained_method": key[0]}
    return sorted(rows.values(), key=lambda r: (r["dataset"], r["backbone"], r["stage"], r["protocol"],
                                                r["method"] == "random init", r["method"]))


def split_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` plus, for every setting tracked on all three official splits, a row "1-3" holding the mean and
    sample sd of each value over the splits (the paper convention for UCF101 and HMDB51)."""
    import numpy as np

    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        key = (r["method"], r["backbone"], r["dataset"], r["stage"], r["protocol"])
        groups.setdefault(key, {})[str(r["split"])] = r
    out = list(rows)
    for key, by_split in groups.items():
        if not {"1", "2", "3"} <= set(by_split):
            continue
        three = [by_split[s] for s in ("1", "2", "3")]
        common = set.intersection(*(set(r["values"]) for r in three))
        values = {c: float(np.mean([r["values"][c] for r in three])) for c in common}
        sds = {c: float(np.std([r["values"][c] for r in three], ddof=1)) for c in common}
        out.append({**three[0], "split": "1-3", "values": values, "sd": sds})
    return sorted(out, key=lambda r: (r["dataset"], r["backbone"], r["stage"], r["protocol"],
                                      r["method"] == "random init", r["method"], str(r["split"])))


def published_for(row: dict[str, Any]) -> Published | None:
    """The published number measured as ``row`` was (method, backbone, dataset, split, protocol, clip), if any."""
    if row["method"] == "random init":
        return None
    for pub in PUBLISHED:
        if (pub.method, pub.backbone, pub.dataset, pub.split, pub.protocol, pub.clip) == (
                row["method"], row["backbone"], row["dataset"], str(row["split"]), row["protocol"], row.get("clip")) \
                and all(row.get("pretrain", {}).get(k) == v for k, v in pub.pretrain):
            return pub
    return None


def _cells(row: dict[str, Any], notes: list[str]) -> list[str]:
    pub = published_for(row)
    mark = ""
    if pub is not None:
        if pub.source not in notes:
            notes.append(pub.source)
        mark = f" [{notes.index(pub.source) + 1}]"
    cols = [f"top{k}" for k in KS] + ["finetune"]
    out = []
    for c in cols:
        ours = row["values"].get(c)
        paper = pub.values.get(c) if pub else None
        cell = "–" if ours is None else f"{ours:.1f}"
        if ours is not None and c in row.get("sd", {}):
            cell += f" ± {row['sd'][c]:.1f}"
        if paper is not None:
            cell += f" ({paper:.1f}{mark})"
        out.append(cell)
    return out


HEAD = ["method", "backbone", "dataset", "split", "protocol", "top-1", "top-5", "top-10", "top-20", "top-50",
        "fine-tune"]


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """Cell text per row (ours, ± sd over splits on a "1-3" row, the published number with its footnote in
    brackets) and the footnotes."""
    notes: list[str] = []
    body = [[r["method"], r["backbone"], r["dataset"], str(r["split"]), r["protocol"], *_cells(r, notes)]
            for r in rows]
    return body, notes


def markdown(rows: list[dict[str, Any]]) -> str:
    body, notes = table_rows(rows)
    lines = ["# Results", "", "Ours, with the published number in brackets where the protocol matches. "
             "Percent; the newest finished run of each setting.", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    lines += ["", *[f"[{i + 1}] {n}" for i, n in enumerate(notes)]] if notes else []
    return "\n".join(lines) + "\n"


def html_page(rows: list[dict[str, Any]]) -> str:
    body, notes = table_rows(rows)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEAD)
    trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in b) + "</tr>" for b in body)
    foot = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return ("<!doctype html><meta charset='utf-8'><title>vidssl results</title>"
            "<style>table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 6px}</style>"
            f"<h1>Results</h1><p>Ours, with the published number in brackets where the protocol matches.</p>"
            f"<table><tr>{head}</tr>{trs}</table><ol>{foot}</ol>\n")


_STYLE = ("<style>table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 6px}"
          "body{font-family:sans-serif;max-width:75em}</style>")


def markdown_html(text: str, title: str) -> str:
    """A Markdown document (tables included) as one HTML page."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(text)
    return f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}\n{body}"


def methods_view(results: Path, out_md: Path, out_html: Path) -> str:
    """reports/methods.md and .html from the stored methods-report results ``results`` (reports/methods.json);
    returns the Markdown. The same bytes come out every time the same results go in."""
    import json

    from vidssl.io import write_text
    from vidssl.pipeline.report import render_document

    try:
        doc = json.loads(Path(results).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{results}: not valid JSON ({err}); rerun `vidssl methods-report` (finished entries "
                         "are reused)") from None
    text = render_document(doc, str(results))
    write_text(out_md, text)
    write_text(out_html, markdown_html(text, "vidssl methods report"))
    return text


def run_report(root: Path, out_md: Path, out_html: Path, methods: Path | None = None) -> str:
    """Write the table from ``root``'s MLflow store as Markdown and HTML; with ``methods`` (stored methods-report
    results) also write its view beside it (``methods`` with .md and .html). Returns the Markdown table."""
    from vidssl.io import write_text
    from vidssl.pipeline.tracking import open_client

    client, _uri, exp_id = open_client(Path(root))
    runs = [run for stage in ("retrieve", "finetune")
            for run in client.search_runs([exp_id], filter_string=f"tags.`vidssl.stage` = '{stage}'",
                                          max_results=10000)]
    rows = split_means(collect(runs))
    text = markdown(rows)
    write_text(out_md, text)
    write_text(out_html, html_page(rows))
    if methods is not None:
        methods_view(methods, methods.with_suffix(".md"), methods.with_suffix(".html"))
    return text
