"""The methods report: per-method params, plain verdicts, and a resumable end-to-end run on tiny data."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from vidssl.config import ConfigError, parse_params
from vidssl.methods.registry import METHODS
from vidssl.pipeline.report import (
    RANDOM_INIT,
    Row,
    factors_table,
    method_params,
    methods_table,
    per_seed_table,
    render,
    run_methods_report,
    synth_summary,
    verdicts,
)


def _cfg(data: dict | None = None, **report: object):
    return parse_params({
        "seed": 3,
        "model": {"backbone": "tiny", "width": 4},
        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
        "pretrain": {"epochs": 1, "batch_size": 4, "workers": 0, "lr": 0.01, "iic": {"nce_k": 4}},
        "finetune": {"epochs": 1, "batch_size": 4, "workers": 0, "test_clips": 2},
        "retrieve": {"clips": 2, "workers": 0, "topk": [1, 5]},
        "report": report,
        **({"data": data} if data else {}),
    })


def _row(name: str, top1: float, kind: str = "seed", baseline: str | None = None, ft: float = 0.5,
         seed: int = 0) -> Row:
    return Row(name, kind, baseline, {"top1": top1, "top5": min(1.0, top1 + 0.2)}, ft, {"total": 1.0}, seed=seed)


def test_every_seed_method_names_a_registered_baseline() -> None:
    seeds = {name: cls.baseline for name, cls in METHODS.items() if cls.baseline}
    assert set(seeds) == {"iic", "dualvar", "be", "mlfo"}
    for base in seeds.values():
        assert base in METHODS and METHODS[base].baseline is None


def test_method_params_merge_only_that_methods_overrides() -> None:
    cfg = _cfg(overrides={"moco": {"pretrain": {"lr": 0.5, "moco": {"queue_size": 64}}}})
    moco, iic = method_params(cfg, "moco"), method_params(cfg, "iic")
    assert (moco.pretrain.method, moco.pretrain.lr, moco.pretrain.moco.queue_size) == ("moco", 0.5, 64)
    assert (iic.pretrain.method, iic.pretrain.lr) == ("iic", 0.01)
    assert moco.pretrain.moco.key_momentum == cfg.pretrain.moco.key_momentum  # untouched keys stay


def test_a_variant_merges_its_overrides_over_its_methods() -> None:
    cfg = _cfg(overrides={"mlfo": {"pretrain": {"lr": 0.5, "mlfo": {"flip": False}}}},
               variants={"mlfo_clip": {"method": "mlfo", "overrides": {"pretrain": {"mlfo": {"colour": "clip"}}}}})
    v, m = method_params(cfg, "mlfo_clip"), method_params(cfg, "mlfo")
    assert (v.pretrain.method, v.pretrain.lr, v.pretrain.mlfo.flip) == ("mlfo", 0.5, False)
    assert v.pretrain.mlfo.colour == "clip"
    assert m.pretrain.mlfo.colour == "frame"  # the method's own row is untouched
    bad = _cfg(variants={"mlfo_clip": {"method": "mlfo", "overrides": {"pretrain": {"mlfo": {"colour": "video"}}}}})
    with pytest.raises(ConfigError, match=r"report.variants.mlfo_clip.overrides[\s\S]*pretrain.mlfo.colour"):
        method_params(bad, "mlfo_clip")


@pytest.mark.parametrize(("variants", "names", "message"), [
    ({"simclr": {"method": "moco"}}, ["simclr"], r"report.variants: \['simclr'\] are registered method names"),
    ({"x": {"method": "byol"}}, ["x"], r"report.variants.\*.method: \['byol'\] are not registered methods;"),
    ({}, ["mlfo_clip"], r"report.methods: \['mlfo_clip'\] are not registered methods or report.variants"),
])
def test_bad_variants_are_named_before_any_training(tiny_lists: Path, tmp_path: Path, variants: dict,
                                                    names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_methods_report(_cfg(variants=variants), tiny_lists, tmp_path / "work", tmp_path / "m.md", names)
    assert not (tmp_path / "work").exists()


def test_a_variant_is_judged_against_random_init_and_its_methods_row() -> None:
    rows = [_row(RANDOM_INIT, 0.20, kind="reference", ft=0.20), _row("mlfo", 0.30, baseline="simclr", ft=0.20),
            Row("mlfo_clip", "variant", "mlfo", {"top1": 0.40, "top5": 0.6}, 0.50, {"total": 1.0}, method="mlfo")]
    text = "\n".join(verdicts(rows, n_test=60))
    assert ("**mlfo_clip** beats random init on retrieval top-1 (40.0 vs 20.0, +20.0 points = +12 test videos); "
            "on fine-tune accuracy it beats it (50.0 vs 20.0, +30.0 points = +18 test videos).") in text
    assert ("  - beats the mlfo row (its method without this change) on retrieval top-1 (40.0 vs 30.0, +10.0 "
            "points = +6 test videos); on fine-tune accuracy it beats it (50.0 vs 20.0") in text
    assert "| mlfo_clip | variant | 40.0 | 60.0 | 50.0 |" in methods_table(rows)


def test_a_bad_override_is_named_before_any_training(tiny_lists: Path, tmp_path: Path) -> None:
    cfg = _cfg(overrides={"cmc": {"pretrain": {"cmc": {"queue_sise": 8}}}})
    with pytest.raises(ConfigError, match=r"report.overrides.cmc[\s\S]*pretrain.cmc.queue_sise: unknown key"):
        run_methods_report(cfg, tiny_lists, tmp_path / "work", tmp_path / "m.md", ["iic", "cmc"])
    assert not (tmp_path / "work").exists()
    with pytest.raises(ValueError, match="report.overrides: \\['mocoo'\\]"):
        run_methods_report(_cfg(overrides={"mocoo": {}}), tiny_lists, tmp_path / "w", tmp_path / "m.md", ["iic"])


def test_verdicts_say_plainly_when_a_seed_method_loses() -> None:
    rows = [_row(RANDOM_INIT, 0.20, kind="reference", ft=0.20), _row("cmc", 0.40, kind="baseline", ft=0.50),
            _row("iic", 0.30, baseline="cmc", ft=0.45), _row("be", 0.10, baseline="moco", ft=0.30)]
    text = "\n".join(verdicts(rows, n_test=60))
    assert ("**iic** beats random init on retrieval top-1 (30.0 vs 20.0, +10.0 points = +6 test videos); on "
            "fine-tune accuracy it beats it (45.0 vs 20.0, +25.0 points = +15 test videos).") in text
    assert ("does NOT beat its own baseline cmc on retrieval top-1 (30.0 vs 40.0, -10.0 points = -6 test videos); "
            "on fine-tune accuracy it does NOT beat it (45.0 vs 50.0, -5.0 points = -3 test videos).") in text
    # The two measures are judged apart: frozen features can lose while the weights fine-tune better.
    assert ("**be** does NOT beat random init on retrieval top-1 (10.0 vs 20.0, -10.0 points = -6 test videos); "
            "on fine-tune accuracy it beats it (30.0 vs 20.0, +10.0 points = +6 test videos).") in text
    assert "not a clear difference" not in text
    # A gain of one or two test videos is reported, but flagged as within noise.
    close = "\n".join(verdicts([rows[0], _row("iic", 0.20 + 2 / 60)], n_test=60))
    assert ("**iic** does NOT clearly beat random init on retrieval top-1 (23.3 vs 20.0, +3.3 points = +2 test "
            "videos; within 2 test") in close
    assert "its own baseline moco" not in text  # moco was not run, so no comparison is claimed
    table = methods_table(rows)
    assert "| random init | reference | 20.0 | 40.0 | 20.0 | – | – | 1 |" in table


def test_report_end_to_end_reuses_finished_methods(tiny_lists: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg, work, out = _cfg(), tmp_path / "work", tmp_path / "reports" / "methods.md"
    text = run_methods_report(cfg, tiny_lists, work, out, ["iic", "cmc"])
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [r["name"] for r in saved["rows"]] == [RANDOM_INIT, "iic", "cmc"]
    assert out.read_text() == text and "| iic | seed |" in text and "| cmc | baseline |" in text
    iic = saved["rows"][1]
    assert 0.0 <= iic["retrieval"]["top1"] <= 1.0 and iic["seconds"]["pretrain"] > 0
    iic_dir = work / "seed3" / "iic"
    assert (iic_dir / "backbone.pt").is_file() and (iic_dir / "features" / "test.npz").is_file()
    # Each entry is a nested MLflow run carrying the numbers the report prints.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = {r.info.run_name: r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])}
    assert {"report.random_init", "report.iic", "report.cmc"} <= set(found)
    assert found["report.iic"].data.metrics["retrieval.top1"] == pytest.approx(iic["retrieval"]["top1"])
    assert found["report.iic"].data.params["pretrain.method"] == "iic"
    assert found["report.cmc"].data.tags["vidssl.report_kind"] == "baseline"
    assert found["report.cmc"].data.tags["vidssl.report_seed"] == "3"

    import vidssl.engine.train as train

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("a finished method was trained again")

    monkeypatch.setattr(train, "pretrain", boom)
    monkeypatch.setattr(train, "finetune", boom)
    assert run_methods_report(cfg, tiny_lists, work, out, ["iic", "cmc"]) == text
    # The Markdown and HTML are a view of the stored JSON: regenerated, they are the same bytes.
    from vidssl.pipeline.paper_table import methods_view

    html = out.with_suffix(".html").read_bytes()
    assert methods_view(out.with_suffix(".json"), tmp_path / "again.md", tmp_path / "again.html") == text
    assert (tmp_path / "again.md").read_bytes() == out.read_bytes()
    assert (tmp_path / "again.html").read_bytes() == html and b"<table>" in html
    # A changed setting of one method makes only that method's result stale.
    changed = _cfg(overrides={"cmc": {"pretrain": {"lr": 0.02}}})
    with pytest.raises(AssertionError, match="trained again"):
        run_methods_report(changed, tiny_lists, work, out, ["iic", "cmc"])
    # So do other frames behind the same list files (a re-rendered dataset); the same bytes again are reused.
    pack = Path(next(line.split(",")[1] for line in (tiny_lists / "test.csv").read_text().splitlines()[1:]))
    original = pack.read_bytes()
    pack.write_bytes(original + b"\0")
    with pytest.raises(AssertionError, match="trained again"):
        run_methods_report(cfg, tiny_lists, work, out, ["iic", "cmc"])
    pack.write_bytes(original)
    assert run_methods_report(cfg, tiny_lists, work, out, ["iic", "cmc"]) == text
    # A second seed trains only that seed; the first seed's results are reused.
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    two = run_methods_report(_cfg(seeds=[3, 4]), tiny_lists, work, out, ["iic"])
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["name"], r["seed"]) for r in rows] == [(RANDOM_INIT, 3), ("iic", 3), (RANDOM_INIT, 4), ("iic", 4)]
    assert rows[1] == {**iic, "seed": 3, "factors": None}
    # The feature rank is read from the saved train features of each entry, at every render.
    import numpy as np

    from vidssl.evaluation.retrieval import rankme

    with np.load(work / "seed3" / "iic" / "features" / "train.npz") as z:
        assert iic["rank"] == pytest.approx(rankme(z["features"])) and iic["dim"] == z["features"].shape[1]
    assert 1.0 <= iic["rank"] <= iic["dim"] and f"of {iic['dim']} |" in text
    assert (work / "seed4" / "iic" / "backbone.pt").is_file() and "seeds 3, 4 (mean ± sd)" in two
    assert "mean of 2 seeds" in two
    # A variant trains as its method under its own settings, beside (not instead of) the method's row.
    var = _cfg(variants={"cmc_lr": {"method": "cmc", "overrides": {"pretrain": {"lr": 0.02}}}})
    text = run_methods_report(var, tiny_lists, work, out, ["cmc", "cmc_lr"])
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["name"], r["kind"], r["baseline"], r["method"]) for r in rows] == [
        (RANDOM_INIT, "reference", None, None), ("cmc", "baseline", None, None), ("cmc_lr", "variant", "cmc", "cmc")]
    from vidssl.engine.checkpoint import load_state_dict

    cmc, cmc_lr = (load_state_dict(work / "seed3" / n / "backbone.pt")["backbone"] for n in ("cmc", "cmc_lr"))
    assert any(not torch.equal(cmc[k], cmc_lr[k]) for k in cmc)  # trained at its own lr, not a copy of cmc
    assert "Variant `cmc_lr`: cmc as in its row, with `pretrain.lr: 0.02`." in text
    assert "**cmc_lr**" in text and "the cmc row (its method without this change)" in text
    # Promoting a variant's setting into its method's row (the old row kept as a variant) moves results, not
    # trains them: the key is what was computed, and name, kind and baseline come from today's params.
    (work / "seed3" / "cmc").rename(work / "seed3" / "cmc_lr0")
    (work / "seed3" / "cmc_lr").rename(work / "seed3" / "cmc")
    swapped = _cfg(overrides={"cmc": {"pretrain": {"lr": 0.02}}},
                   variants={"cmc_lr0": {"method": "cmc", "overrides": {"pretrain": {"lr": 0.01}}}})
    monkeypatch.setattr(train, "pretrain", boom)
    monkeypatch.setattr(train, "finetune", boom)
    run_methods_report(swapped, tiny_lists, work, out, ["cmc", "cmc_lr0"])
    moved = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["name"], r["kind"], r["baseline"], r["method"]) for r in moved] == [
        (RANDOM_INIT, "reference", None, None), ("cmc", "baseline", None, None),
        ("cmc_lr0", "variant", "cmc", "cmc")]
    assert moved[1]["retrieval"] == rows[2]["retrieval"] and moved[2]["retrieval"] == rows[1]["retrieval"]


def test_several_seeds_give_mean_sd_and_paired_verdicts() -> None:
    rows = [_row(RANDOM_INIT, 0.10, kind="reference", seed=1), _row("iic", 0.30, baseline="cmc", seed=1),
            _row(RANDOM_INIT, 0.20, kind="reference", seed=2), _row("iic", 0.50, baseline="cmc", seed=2),
            _row("cmc", 0.15, kind="baseline", seed=1), _row("cmc", 0.25, kind="baseline", seed=2)]
    text = "\n".join(verdicts(rows, n_test=60))
    # Paired per seed: +20 and +30 points = +12 and +18 videos, mean 25 points = 15 videos.
    assert ("**iic** beats random init on retrieval top-1 (mean of 2 seeds 40.0 vs 15.0, +25.0 points = "
            "+15.0 test videos; per seed +12, +18); on fine-tune accuracy it does NOT beat it (mean of 2 seeds "
            "50.0 vs 50.0, +0.0 points = +0.0 test videos; per seed +0, +0; within 2 test videos, so not a clear "
            "difference).") in text
    assert "beats its own baseline cmc on retrieval top-1 (mean of 2 seeds 40.0 vs 20.0" in text
    # sample sd of 0.30 and 0.50 is 0.1414 -> 14.1 points
    assert "| iic | seed | 40.0 ± 14.1 | 60.0 ± 14.1 | 50.0 ± 0.0 | – | – | 1 |" in methods_table(rows)
    rows[1].rank, rows[3].rank, rows[1].dim, rows[3].dim = 10.0, 12.0, 64, 64
    assert "| iic | seed | 40.0 ± 14.1 | 60.0 ± 14.1 | 50.0 ± 0.0 | 11.0 ± 1.4 of 64 | – | 1 |" in methods_table(rows)
    # Gains of both signs are not a clear difference, even with a positive mean.
    mixed = [_row(RANDOM_INIT, 0.10, kind="reference", seed=1), _row("be", 0.30, seed=1),
             _row(RANDOM_INIT, 0.30, kind="reference", seed=2), _row("be", 0.20, seed=2)]
    assert "+1.5 test videos; per seed +12, -6; within 2 test videos" not in "\n".join(verdicts(mixed, 60))
    assert ("**be** does NOT clearly beat random init on retrieval top-1 (mean of 2 seeds 25.0 vs 20.0, +5.0 "
            "points = +3.0 test videos; per seed +12, -6; not every seed agrees, so not a clear difference)"
            ) in "\n".join(verdicts(mixed, 60))
    # A tie at one seed is not agreement either; an exact tie on the mean is not a win.
    tie = [mixed[0], _row("be", 0.30, seed=1), mixed[2], _row("be", 0.30, seed=2)]
    assert "per seed +12, +0; not every seed agrees" in "\n".join(verdicts(tie, 60))
    even = [_row(RANDOM_INIT, 0.10, kind="reference", seed=s) for s in (1, 2)]
    even += [_row("be", 0.10 + d, seed=s) for s, d in ((1, 2 / 60), (2, -2 / 60))]
    assert "**be** does NOT beat random init" in "\n".join(verdicts(even, 60))
    # A seed the reference did not run is left out of the pairing.
    extra = [*rows[:2], _row("iic", 0.9, seed=7)]
    assert "(30.0 vs 10.0, +20.0 points = +12 test videos)" in "\n".join(verdicts(extra, 60))


def test_factors_table_reports_agreement_against_chance() -> None:
    f = {"class": {"agree": 0.5, "chance": 0.1}, "motion_pair": {"agree": 0.6, "chance": 0.2},
         "background": {"agree": 0.25, "chance": 0.25}, "shape": {"agree": 0.2, "chance": 0.2}}
    rows = [_row(RANDOM_INIT, 0.1, kind="reference"), _row("iic", 0.5)]
    assert factors_table(rows) == ""  # nothing to say without factors
    rows[1].factors = f
    table = factors_table(rows)
    assert "| method | class (chance 10.0) | motion pair (chance 20.0) | background (chance 25.0) |" in table
    assert "| iic | 50.0 | 60.0 | 25.0 | 20.0 |" in table and "random init" not in table


def test_factors_read_the_synth_summary_of_the_lists_own_dataset(tmp_path: Path) -> None:
    cfg = _cfg()  # data.raw_dir: data/raw/videos, relative to the working directory
    lists = tmp_path / "control" / "lists"
    lists.mkdir(parents=True)
    assert synth_summary(cfg, lists) == Path("data/raw/synth.json")  # lists without lists.json: params decide
    raw = tmp_path / "control" / "raw"
    (raw / "splits").mkdir(parents=True)
    (lists / "lists.json").write_text(json.dumps({"params": {"split_dir": str(raw / "splits")}}))
    assert synth_summary(cfg, lists) == Path("data/raw/synth.json")  # that dataset has no summary (real data)
    (raw / "synth.json").write_text("{}")
    assert synth_summary(cfg, lists) == raw / "synth.json"


def test_per_seed_table_pairs_each_seed_with_random_init() -> None:
    ri = [_row(RANDOM_INIT, t, kind="reference", ft=f, seed=sd)
          for sd, t, f in ((1, 0.10, 0.20), (2, 0.20, 0.10))]
    iic = [_row("iic", 0.30, ft=0.50, seed=1), _row("iic", 0.20, ft=0.40, seed=2)]
    cmc = [_row("cmc", 0.05, kind="baseline", ft=0.20, seed=1)]  # ran seed 1 only
    var = [_row("iic_rep", 0.50, kind="variant", ft=0.20 + 1 / 60, seed=s) for s in (1, 2)]
    table = per_seed_table([*ri, *iic, *cmc, *var], n_test=60)
    lines = table.splitlines()
    assert lines[2] == "| random init | 10.0 / 20.0 | 20.0 / 10.0 | – | – |"
    # +20 points = +12 videos, +0 = tie at seed 2: not every seed agrees; fine-tune +18, +18 videos: a win.
    assert lines[3] == "| iic | 30.0 / 20.0 | 50.0 / 40.0 | +12, +0: not clear | +18, +18: **beats** |"
    # A baseline carries gains but no verdict; the seed it skipped is a dash and is left out of its gains.
    assert lines[4] == "| cmc | 5.0 / – | 20.0 / – | -3 | +0 |"
    # Fine-tune +1 and +7 videos: a mean of 4 > 2, both positive.
    assert lines[5] == ("| iic_rep (variant) | 50.0 / 50.0 | 21.7 / 21.7 | +24, +18: **beats** | "
                        "+1, +7: **beats** |")
    assert per_seed_table([*ri[:1], *iic[:1]], 60) == ""  # one seed: the main table already says it all
    assert per_seed_table(iic, 60) == ""  # nothing to pair with
    # The word always agrees with the verdict sentence for the same pair.
    text = "\n".join(verdicts([*ri, *iic], 60))
    assert "**iic** does NOT clearly beat random init on retrieval top-1" in text
    assert "Per seed (1 / 2): each entry's gain" in render(_cfg(), [*ri, *iic], 60)
    assert "Per seed" not in render(_cfg(), [*ri[:1], *iic[:1]], 60)


def _fixture_rows() -> list[Row]:
    """Hand-made results: two seeds, random init, a seed method, its baseline and a variant; factors, probes, rank."""
    f = {"class": {"agree": 0.5, "chance": 0.1}, "motion_pair": {"agree": 0.6, "chance": 0.2},
         "background": {"agree": 0.25, "chance": 0.25}, "shape": {"agree": 0.2, "chance": 0.2}}
    rows = []
    for seed, shift in ((1, 0.0), (2, 0.1)):
        rows += [Row(RANDOM_INIT, "reference", None, {"top1": 0.10 + shift, "top5": 0.4}, 0.2,
                     {"retrieve": 1.0, "finetune": 2.0, "total": 3.0}, seed=seed, rank=5.0 + seed, dim=64),
                 Row("iic", "seed", "cmc", {"top1": 0.30 + shift, "top5": 0.7}, 0.5 + shift,
                     {"pretrain": 10.0, "retrieve": 1.0, "finetune": 2.0, "total": 13.0}, 3.25, seed, f,
                     rank=20.0, dim=64),
                 Row("cmc", "baseline", None, {"top1": 0.15, "top5": 0.45}, 0.25,
                     {"pretrain": 9.0, "total": 12.0}, seed=seed,
                     probes={"order": {"random": 0.5, "trained": 0.75 + shift}}),
                 Row("iic_lr", "variant", "iic", {"top1": 0.35, "top5": 0.75}, 0.55, {"pretrain": 11.0, "total": 14.0},
                     seed=seed, method="iic")]
    return rows


def test_vidssl_report_writes_the_methods_report_as_a_view_of_stored_results(tmp_path: Path) -> None:
    """reports/methods.md is what the report function makes of reports/methods.json, byte for byte, every time;
    its numbers are the fixture's."""
    from typer.testing import CliRunner

    from vidssl.cli import app
    from vidssl.io import write_json
    from vidssl.pipeline.report import render_document, results_document

    cfg = _cfg(variants={"iic_lr": {"method": "iic", "overrides": {"pretrain": {"lr": 0.02}}}})
    rows = _fixture_rows()
    stored = tmp_path / "reports" / "methods.json"
    write_json(stored, results_document(cfg, rows, 60))  # as `vidssl methods-report` stores it
    expected = render(cfg, rows, 60)  # the report function on the rows in memory, before any JSON
    args = ["report", "--root", str(tmp_path), "--out", str(tmp_path / "reports" / "paper.md"),
            "--methods", str(stored)]
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    md, html = stored.with_suffix(".md"), stored.with_suffix(".html")
    assert md.read_text(encoding="utf-8") == expected
    md_bytes, html_bytes = md.read_bytes(), html.read_bytes()
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0 and md.read_bytes() == md_bytes and html.read_bytes() == html_bytes
    text = md_bytes.decode()
    # Numbers from the fixture: top-1 30 and 40 -> 35.0 ± 7.1; fine-tune 50 and 60 -> 55.0 ± 7.1; rank 20 of 64.
    assert "| iic | seed | 35.0 ± 7.1 | 70.0 ± 0.0 | 55.0 ± 7.1 | 20.0 ± 0.0 of 64 | 10 | 13 |" in text
    assert "| random init | reference | 15.0 ± 7.1 | 40.0 ± 0.0 | 20.0 ± 0.0 | 6.5 ± 0.7 of 64 | – | 3 |" in text
    assert "Dataset `synthetic` split 1 (60 test videos" in text and "Variant `iic_lr`: iic as in its row, with " \
        "`pretrain.lr: 0.02`." in text
    assert "| cmc | order | 50.0 ± 0.0 | 80.0 ± 7.1 |" in text  # probes table
    assert "<td>35.0 ± 7.1</td>" in html_bytes.decode() and "<h2>Verdicts</h2>" in html_bytes.decode()
    assert render_document(json.loads(stored.read_text()), str(stored)) == expected
    # Results stored by an older methods-report (rows only) are named, not rendered with made-up settings.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"rows": [asdict(r) for r in rows]}))
    with pytest.raises(ValueError, match="old.json: written by an older `vidssl methods-report`"):
        render_document(json.loads(old.read_text()), str(old))
