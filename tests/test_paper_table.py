"""`vidssl report`: rows from tracked runs, newest per setting, published numbers only where protocols match."""

from __future__ import annotations

from types import SimpleNamespace as NS

from vidssl.pipeline.paper_table import collect, html_page, markdown, retrieval_protocol


def _run(stage: str, params: dict, metrics: dict, start: int, status: str = "FINISHED") -> NS:
    return NS(info=NS(status=status, start_time=start, run_id=f"r{start}"),
              data=NS(tags={"vidssl.stage": stage}, params=params, metrics=metrics))


IIC = {"pretrain.method": "iic", "model.backbone": "r3d10", "data.dataset": "ucf101", "data.split": "1",
       "clip.frames": "16", "clip.crop": "112", "pretrain.iic.intra_neg": "repeat", "pretrain.iic.view2": "res"}


def test_protocol_labels() -> None:
    assert retrieval_protocol({"retrieve.feature": "pool", "retrieve.merged": "True"}) == "vcop/pool/merged"
    assert retrieval_protocol({"retrieve.feature": "gap", "retrieve.protocol": "centred"}) == "centred/gap"
    assert retrieval_protocol({"retrieve.feature": "gap", "retrieve.center": "True"}) == "centred/gap"
    assert retrieval_protocol({"retrieve.feature": "pool", "retrieve.view": "second",
                               "retrieve.merged": "False"}) == "vcop/pool/second"


def test_table_from_runs_with_published_numbers_where_the_protocol_matches() -> None:
    merged = {**IIC, "retrieve.feature": "pool", "retrieve.merged": "True", "retrieve.protocol": "vcop"}
    rgb = {**merged, "retrieve.merged": "False"}
    runs = [
        _run("retrieve", merged, {"pretrained.top1": 0.30, "pretrained.top5": 0.5, "random_init.top1": 0.1}, 1),
        _run("retrieve", merged, {"pretrained.top1": 0.35, "random_init.top1": 0.12}, 2),  # newer: wins
        _run("retrieve", merged, {"pretrained.top1": 0.99}, 3, status="FAILED"),  # never counts
        _run("retrieve", rgb, {"pretrained.top1": 0.33}, 4),  # no published number for the rgb-only row
        _run("finetune", {**IIC, "finetune.protocol": "iic"}, {"pretrained.test_accuracy": 0.7}, 5),
        _run("finetune", {**IIC, "finetune.protocol": "plain"}, {"pretrained.test_accuracy": 0.6}, 6),
        _run("pretrain", IIC, {"loss": 1.0}, 7),
    ]
    rows = collect(runs)
    got = {(r["method"], r["stage"], r["protocol"]): r["values"] for r in rows}
    assert got[("iic", "retrieve", "vcop/pool/merged")] == {"top1": 35.0}
    assert got[("random init", "retrieve", "vcop/pool/merged")] == {"top1": 12.0}
    assert got[("iic", "finetune", "iic")] == {"finetune": 70.0} and len(rows) == 5
    md = markdown(rows)
    # Footnotes are numbered in the order rows cite them: the fine-tune row comes first here.
    assert "[1] BestJuly/IIC README, repeat + res row" in md and "[2] BestJuly/IIC README, R3D repeat" in md
    assert "| iic | r3d10 | ucf101 | 1 | vcop/pool/merged | 35.0 (36.5 [2]) | – (54.1 [2])" in md
    assert "| iic | r3d10 | ucf101 | 1 | vcop/pool | 33.0 | – |" in md  # rgb-only: no published number
    assert "| 70.0 (72.8 [1]) |" in md and "| 60.0 |" in md  # plain fine-tune is not IIC's protocol
    page = html_page(rows)
    assert page.count("<tr>") == 6 and "35.0 (36.5 [2])" in page


def test_three_splits_give_a_mean_and_sd_row() -> None:
    from vidssl.pipeline.paper_table import split_means

    runs = [_run("finetune", {**IIC, "data.split": str(s), "finetune.protocol": "plain"},
                 {"pretrained.test_accuracy": acc}, s) for s, acc in ((1, 0.60), (2, 0.64), (3, 0.65))]
    rows = split_means(collect(runs))
    mean = [r for r in rows if r["split"] == "1-3"]
    assert len(rows) == 4 and len(mean) == 1
    assert abs(mean[0]["values"]["finetune"] - 63.0) < 1e-9
    assert abs(mean[0]["sd"]["finetune"] - 2.6457513) < 1e-6  # sample sd of 60, 64, 65
    assert "| 1-3 | plain | – | – | – | – | – | 63.0 ± 2.6 |" in markdown(rows)
    assert all(r["split"] != "1-3" for r in split_means(collect(runs[:2])))  # two splits: no mean row


def test_a_published_number_sits_only_beside_the_split_and_clip_size_it_was_measured_on() -> None:
    """IIC's 72.8 is UCF101 split 1 at 16 frames, 112 px: not beside split 2 or 3, nor the mean over the three,
    nor a run on smaller clips."""
    from vidssl.pipeline.paper_table import split_means, table_rows

    runs = [_run("finetune", {**IIC, "data.split": str(s), "finetune.protocol": "iic"},
                 {"pretrained.test_accuracy": acc}, s) for s, acc in ((1, 0.70), (2, 0.68), (3, 0.66))]
    body, notes = table_rows(split_means(collect(runs)))
    cell = {b[3]: b[-1] for b in body}
    assert cell == {"1": "70.0 (72.8 [1])", "2": "68.0", "3": "66.0", "1-3": "68.0 ± 2.0"}
    assert len(notes) == 1 and "split 1" in notes[0]
    small = _run("finetune", {**IIC, "clip.frames": "8", "finetune.protocol": "iic"},
                 {"pretrained.test_accuracy": 0.5}, 9)
    body, notes = table_rows(collect([small]))
    assert body[0][-1] == "50.0" and notes == []
    shuffle = _run("finetune", {**IIC, "pretrain.iic.intra_neg": "shuffle", "finetune.protocol": "iic"},
                   {"pretrained.test_accuracy": 0.5}, 10)  # IIC's 72.8 is its repeat + res row
    assert table_rows(collect([shuffle]))[0][0][-1] == "50.0"
