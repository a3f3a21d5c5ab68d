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
