"""The typed config: params.yaml parses, unknown keys and wrong types are named, stages refuse before working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vidssl.config import ConfigError, Params, flatten, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_parse_and_cover_every_field() -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = load_params(ROOT / "params.yaml")
    assert isinstance(cfg, Params)
    # params.yaml spells out every field, so a reader sees every knob (and DVC tracks each one).
    assert set(flatten(raw)) == set(flatten(cfg))


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"pretrain": {"lrr": 0.1}}, "pretrain.lrr: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"pretrain": {"iic": {"intra_neg": "sideways"}}}, "pretrain.iic.intra_neg"),
        ({"finetune": {"epochs": "20"}}, "finetune.epochs"),
        ({"finetune": {"epochs": 2.5}}, "finetune.epochs"),
        ({"synth": {"background_bias": "yes"}}, "synth.background_bias"),
        ({"pretrain": {"lr": -1.0}}, "pretrain.lr"),
        ({"retrieve": {"topk": [1, "x"]}}, "retrieve.topk.1"),
        # one jitter check for every section that has one: 4 strengths, none negative, hue at most 0.5
        ({"pretrain": {"dualvar": {"jitter": [0.8, 0.8, 0.8, 0.6]}}}, "pretrain.dualvar.jitter: Value error, jitter"),
        ({"pretrain": {"be": {"jitter": [0.5, 0.5]}}}, "pretrain.be.jitter: Value error, jitter [0.5, 0.5]: give 4"),
        ({"pretrain": {"moco": {"jitter": [-1.0, 0.0, 0.0, 0.0]}}}, "pretrain.moco.jitter: Value error"),
    ],
)
def test_bad_params_name_the_key(raw: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params(raw, "params.yaml")
    assert key in str(err.value)
    assert str(err.value).startswith("params.yaml")


def test_crop_larger_than_resize_is_refused() -> None:
    with pytest.raises(ConfigError, match="crop"):
        parse_params({"clip": {"resize": 32, "crop": 48}})


def test_config_is_frozen_and_ints_widen_to_floats() -> None:
    cfg = parse_params({"pretrain": {"lr": 1}})
    assert cfg.pretrain.lr == 1.0
    with pytest.raises(Exception):
        cfg.pretrain.lr = 0.5  # type: ignore[misc]


def test_clip_span() -> None:
    assert parse_params({"clip": {"frames": 16, "stride": 4}}).clip.span == 61


def test_missing_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_stage_stops_before_any_work_on_a_bad_key(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["synth"]["n_clases"] = 8
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "synth.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "synth.n_clases: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_parses_and_wins_over_params(name: str, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["preset"] = name  # selecting a preset is this one line
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_params(tmp_path / "params.yaml")
    preset = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
    assert cfg.pretrain.method == preset["pretrain"]["method"] == name.split("_")[0]
    assert cfg.model.backbone == preset["model"]["backbone"]
    assert cfg.pretrain.epochs == preset["pretrain"]["epochs"]
    assert cfg.data.raw_dir == raw["data"]["raw_dir"]  # keys a preset leaves out come from params.yaml
    assert "Should reach" in (ROOT / "presets" / f"{name}.yaml").read_text() or "Published" in (
        ROOT / "presets" / f"{name}.yaml").read_text()


def test_unknown_preset_lists_the_choices(tmp_path: Path) -> None:
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "a.yaml").write_text("seed: 1\n")
    (tmp_path / "params.yaml").write_text("preset: b\n")
    with pytest.raises(ConfigError, match=r"unknown preset 'b'.*\['none', 'a'\]"):
        load_params(tmp_path / "params.yaml")


def _pretrain(**changes: dict) -> Params:
    return parse_params({"pretrain": changes})


def test_pretrain_used_keeps_only_what_the_method_reads() -> None:
    base = _pretrain(method="iic").pretrain.used()
    assert "iic" in base and "be" not in base and "mlfo" not in base and base["lr"] == 0.01
    # another method's section does not reach IIC's key; IIC's own section and shared fields do
    assert _pretrain(method="iic", be={"start_window": 0}).pretrain.used() == base
    assert _pretrain(method="iic", iic={"nce_k": 512}).pretrain.used() != base
    assert _pretrain(method="iic", lr=0.1).pretrain.used() != base
    # BE's consistency form trains its pretext method, so that section counts too
    be = _pretrain(method="be", be={"variant": "consistency", "pretext": "vcop"}).pretrain.used()
    assert set(be) >= {"be", "vcop"} and "iic" not in be
