"""Held-out probes: each method's own add-on accuracies on unseen videos, at random init and after training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidssl.config import parse_params
from vidssl.engine.checkpoint import latest_checkpoint
from vidssl.methods.registry import METHODS
from vidssl.evaluation.probe import heldout_probes
from vidssl.pipeline.report import RANDOM_INIT, Row, entry_probes, probes_table

PROBED = sorted(name for name, cls in METHODS.items() if cls.probes)


def _cfg(method: str, epochs: int = 1, **pretrain: object):
    return parse_params({
        "seed": 5,
        "model": {"backbone": "tiny", "width": 4},
        "clip": {"frames": 8, "stride": 2, "resize": 40, "crop": 32},
        "pretrain": {"method": method, "epochs": epochs, "batch_size": 4, "workers": 0, "lr": 0.01,
                     "mlfo": {"cluster": 4, "queue_size": 8}, **pretrain},
        "finetune": {"epochs": 1, "batch_size": 4, "workers": 0, "test_clips": 2},
        "retrieve": {"clips": 2, "workers": 0, "topk": [1, 5]},
    })


def test_the_seed_methods_with_time_or_motion_add_ons_declare_probes() -> None:
    # IIC's intra-negatives live in its memory bank, which is indexed by pretraining video, so no held-out probe.
    assert PROBED == ["be", "dualvar", "mlfo", "vcop"]
    assert all(METHODS[n].probes == {} for n in ("iic", "cmc", "moco", "simclr"))


@pytest.mark.parametrize("name", PROBED)
def test_every_probe_is_measured_and_repeatable(name: str, tiny_lists: Path) -> None:
    got = heldout_probes(_cfg(name), tiny_lists, None, passes=2)
    assert set(got) == set(METHODS[name].probes)
    assert all(0.0 <= v <= 1.0 for v in got.values())
    assert heldout_probes(_cfg(name), tiny_lists, None, passes=2) == got  # same seed, same draws


def test_a_method_without_probes_is_not_run(tiny_lists: Path) -> None:
    assert heldout_probes(_cfg("simclr"), tiny_lists, None) == {}


def test_mlfo_learns_its_reversal_probe_on_unseen_videos(tiny_lists: Path, tmp_path: Path) -> None:
    from vidssl.engine.train import pretrain

    cfg = _cfg("mlfo", epochs=30, optimizer="adam", lr=0.003)
    before = heldout_probes(cfg, tiny_lists, None)
    # An untrained encoder barely tells a clip from its own time-reversal (the reversed copy sits on the clip).
    assert before["acc_rev_mid"] < 0.25
    pretrain(cfg, tiny_lists, tmp_path / "state", tmp_path / "out")
    after = heldout_probes(cfg, tiny_lists, latest_checkpoint(tmp_path / "state"))
    # seeds 5-8 measured: 0.04 -> 0.75, 0.04 -> 0.33, 0.08 -> 0.88, 0.12 -> 0.88
    assert after["acc_rev_mid"] > before["acc_rev_mid"] + 0.2, (before, after)


def test_probes_load_the_weights_not_the_generators_and_refuse_another_methods_state(
    tiny_lists: Path, tmp_path: Path
) -> None:
    from vidssl.engine.checkpoint import load_state_dict, save_state_dict
    from vidssl.engine.train import pretrain

    cfg = _cfg("dualvar")
    pretrain(cfg, tiny_lists, tmp_path / "state", tmp_path / "out")
    state = load_state_dict(latest_checkpoint(tmp_path / "state"))
    assert "_extra_state" in state["method"]  # DualVar's shuffle generator, saved for resuming
    got = heldout_probes(cfg, tiny_lists, latest_checkpoint(tmp_path / "state"))
    # The generator state is not what the probe draws from: replacing it changes nothing.
    state["method"]["_extra_state"] = {"generator": torch.Generator().manual_seed(99).get_state()}
    save_state_dict(tmp_path / "other_gen.pt", state)
    assert heldout_probes(cfg, tiny_lists, tmp_path / "other_gen.pt") == got
    pretrain(_cfg("vcop"), tiny_lists, tmp_path / "vcop_state", tmp_path / "vcop_out")
    with pytest.raises(ValueError, match="not a checkpoint of this method's settings"):
        heldout_probes(cfg, tiny_lists, latest_checkpoint(tmp_path / "vcop_state"))


def test_entry_probes_are_cached_with_the_result_key(tiny_lists: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import vidssl.evaluation.probe
    from vidssl.engine.train import pretrain

    cfg, out = _cfg("vcop"), tmp_path / "seed5" / "vcop"
    assert entry_probes(cfg, RANDOM_INIT, tiny_lists, out) is None
    assert entry_probes(cfg, "simclr", tiny_lists, out) is None
    assert entry_probes(cfg, "vcop", tiny_lists, out) is None  # not pretrained yet: nothing to probe
    pretrain(cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"method": "vcop"})}),
             tiny_lists, out / "pretrain_state", out)
    first = entry_probes(cfg, "vcop", tiny_lists, out)
    assert set(first) == {"acc_order"} and set(first["acc_order"]) == {"random", "trained"}

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("probed again")

    monkeypatch.setattr(vidssl.evaluation.probe, "heldout_probes", boom)
    assert entry_probes(cfg, "vcop", tiny_lists, out) == first
    changed = cfg.model_copy(update={"seed": 6})
    with pytest.raises(AssertionError, match="probed again"):
        entry_probes(changed, "vcop", tiny_lists, out)


def test_probes_table_shows_random_init_and_pretrained_per_term() -> None:
    def row(seed: int, random: float, trained: float) -> Row:
        return Row("mlfo", "seed", "simclr", {"top1": 0.1, "top5": 0.3}, 0.1, seed=seed,
                   probes={"acc_rev_low": {"random": 0.0, "trained": 0.5},  # sorted, as cached JSON reads back
                           "acc_rev_mid": {"random": random, "trained": trained}})

    assert probes_table([Row(RANDOM_INIT, "reference", None, {"top1": 0.1}, 0.1)]) == ""
    table = probes_table([row(1, 0.0, 0.9), row(2, 0.02, 0.95)])
    assert "| method | probe (what the method's add-on asks for) | random init | pretrained |" in table
    mid = f"| mlfo | {METHODS['mlfo'].probes['acc_rev_mid']} | 1.0 ± 1.4 | 92.5 ± 3.5 |"
    low = f"| mlfo | {METHODS['mlfo'].probes['acc_rev_low']} | 0.0 ± 0.0 | 50.0 ± 0.0 |"
    assert mid in table and low in table and table.index(mid) < table.index(low)  # the method's declared order
