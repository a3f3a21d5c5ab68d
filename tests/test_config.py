"""The typed config: one validation pass over params files (every key written, types, ranges, cross-key rules,
registries, duplicate keys), sources shown by `vidssl params --show`, a layout `dvc exp run -S` leaves alone, and
readable one-line errors with exit codes through the real CLI."""

from __future__ import annotations

import difflib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vidssl.config import (
    BACKBONE_NAMES, METHOD_NAMES, ConfigError, Params, PretrainParams, flatten, load_params, missing_keys,
    parse_params, parse_sets, resolve_params,
)
from vidssl.params_yaml import read_params_yaml

ROOT = Path(__file__).resolve().parents[1]


def _raw() -> dict:
    return read_params_yaml(ROOT / "params.yaml")[0]


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------- the shipped file

def test_repo_params_write_every_required_key_and_method_sections_only_their_changes() -> None:
    raw = _raw()
    assert isinstance(load_params(ROOT / "params.yaml"), Params)
    assert missing_keys(raw) == []
    defaults = Params().pretrain
    for name in METHOD_NAMES:
        written = flatten(raw["pretrain"].get(name, {}))
        typed = flatten(getattr(defaults, name))
        # a method section lists only what differs from the typed defaults
        assert all(typed[k] != v for k, v in written.items()), (name, written)


def test_every_key_of_params_yaml_has_a_short_comment() -> None:
    lines = (ROOT / "params.yaml").read_text().splitlines()
    _, where = read_params_yaml(ROOT / "params.yaml")
    leaves = {k for k in where if k not in {".".join(o.split(".")[:-1]) for o in where}}
    for key in leaves:
        if key.startswith(("report.overrides.", "report.variants.")):
            continue  # values of the report's override maps; their parent key carries the comment
        text = lines[where[key] - 1]
        assert "#" in text and len(text.split("#", 1)[1].strip()) >= 3, (key, text)
        assert len(text) <= 120, (key, text)
    assert "session" not in (ROOT / "params.yaml").read_text().lower()


def test_registries_match_the_config_names() -> None:
    from vidssl.methods.registry import METHODS
    from vidssl.models import BACKBONES

    assert set(METHODS) == set(METHOD_NAMES)
    assert set(BACKBONES) == set(BACKBONE_NAMES)
    sections = {n for n, f in PretrainParams.model_fields.items() if isinstance(f.default, Params.__base__)}
    assert sections == set(METHOD_NAMES) == set(PretrainParams.file_optional)


def _changed(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 1.0
    if isinstance(value, str):
        return value + "x"
    assert isinstance(value, list) and value, value
    return [*value[:-1], _changed(value[-1])]


def _hydra(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    if isinstance(value, str) and any(c in value for c in "{}[](),:='\" "):
        return "'" + value + "'"  # hydra's override grammar reads these characters, quoted they are text
    return str(value)


def test_dvc_set_param_rewrites_only_the_changed_line(tmp_path: Path) -> None:
    """DVC's own `exp run -S` code (hydra overrides over a ruamel round-trip) on every key: only its line changes.

    Keys are changed in two interleaved halves (two DVC calls, not one per key): every line of the other half,
    and every comment, must come back unchanged, and each changed key must change exactly one line.
    """
    pytest.importorskip("hydra")
    from dvc.utils.hydra import apply_overrides

    original = (ROOT / "params.yaml").read_text()
    target = tmp_path / "params.yaml"
    flat = flatten(_raw())
    keys = list(flat)
    for half in (keys[0::2], keys[1::2], ["pretrain.lr"]):
        target.write_text(original)
        new = {key: _changed(flat[key]) for key in half}
        apply_overrides(str(target), [f"{key}={_hydra(value)}" for key, value in new.items()])
        diff = [d for d in difflib.ndiff(original.splitlines(), target.read_text().splitlines())
                if d.startswith(("- ", "+ "))]
        assert len([d for d in diff if d[0] == "-"]) == len([d for d in diff if d[0] == "+"]) == len(half), diff
        assert flatten(read_params_yaml(target)[0]) == {**flat, **new}
    # a method key the file leaves out is added (with `+`) without touching any other line
    target.write_text(original)
    apply_overrides(str(target), ["+pretrain.cmc.temperature=0.1"])
    diff = [d for d in difflib.ndiff(original.splitlines(), target.read_text().splitlines()) if d[0] in "-+"]
    assert all(d.startswith("+ ") for d in diff) and len(diff) == 2, diff
    assert load_params(target).pretrain.cmc.temperature == 0.1


# ------------------------------------------------------------------------------------------ values and their keys

@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"pretrain": {"lrr": 0.1}}, "pretrain.lrr: unknown key; did you mean 'lr'?"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"pretrain": {"iic": {"intra_neg": "sideways"}}}, "pretrain.iic.intra_neg"),
        ({"finetune": {"epochs": "20"}}, "finetune.epochs"),
        ({"finetune": {"epochs": 2.5}}, "finetune.epochs"),
        ({"synth": {"background_bias": "yes"}}, "synth.background_bias"),
        ({"pretrain": {"lr": -1.0}}, "pretrain.lr"),
        ({"pretrain": {"lr": float("inf")}}, "pretrain.lr: Input should be a finite number"),
        ({"finetune": {"lr": float("nan")}}, "finetune.lr: Input should be a finite number"),
        ({"pretrain": {"weight_decay": float("inf")}}, "pretrain.weight_decay"),
        ({"pretrain": {"momentum": 50.0}}, "pretrain.momentum: Input should be less than 1"),
        ({"finetune": {"momentum": -0.1}}, "finetune.momentum"),
        ({"pretrain": {"gamma": 50.0}}, "pretrain.gamma: Input should be less than or equal to 1"),
        ({"pretrain": {"gamma": 0.0}}, "pretrain.gamma"),
        ({"pretrain": {"epochs": 100, "milestones": [80, 40]}}, "pretrain.milestones: [80, 40]: give epochs"),
        ({"pretrain": {"epochs": 100, "milestones": [80, 80]}}, "pretrain.milestones"),
        ({"pretrain": {"epochs": 50, "milestones": [80]}}, "pretrain.milestones: [80]: give epochs from 1 to"),
        ({"pretrain": {"epochs": 50, "milestones": [0]}}, "pretrain.milestones"),
        ({"pretrain": {"method": "byol"}}, "pretrain.method: 'byol' is not a registered method"),
        ({"model": {"backbone": "resnet50"}}, "model.backbone: Input should be 'tiny'"),
        ({"data": {"dataset": "kinetics"}}, "data.dataset"),
        ({"extract": {"exact": "fast"}}, "extract.exact: give true (bit-exact frames), false"),
        ({"extract": {"exact": 1}}, "extract.exact: give true"),
        ({"retrieve": {"topk": [-3]}}, "retrieve.topk: retrieve.topk [-3]: give one or more k >= 1"),
        ({"retrieve": {"topk": [0, 5]}}, "retrieve.topk: retrieve.topk [0, 5]: give one or more k >= 1"),
        ({"retrieve": {"topk": []}}, "retrieve.topk: retrieve.topk []: give one or more k >= 1"),
        ({"retrieve": {"topk": [5, 5]}}, "retrieve.topk: retrieve.topk [5, 5] repeats a rank"),
        ({"retrieve": {"topk": [1, "x"]}}, "retrieve.topk.1"),
        ({"retrieve": {"clips": 0}}, "retrieve.clips"),
        ({"report": {"methods": ["iic", "nope"]}}, "report.methods: ['nope'] are not registered methods"),
        ({"report": {"overrides": {"mocoo": {}}}}, "report.overrides: ['mocoo'] are not registered"),
        ({"report": {"variants": {"v": {"method": "x"}}}}, "report.variants.*.method: ['x'] are not registered"),
        ({"pretrain": {"be": {"pretext": "be"}}}, "pretrain.be.pretext: 'be' is not a method BE can wrap"),
        ({"pretrain": {"cmc": {"core": "moco"}}}, "pretrain.cmc.core: 'moco' but method 'cmc' uses core"),
        # one jitter check for every section that has one: 4 strengths, none negative, hue at most 0.5
        ({"pretrain": {"dualvar": {"jitter": [0.8, 0.8, 0.8, 0.6]}}}, "pretrain.dualvar.jitter: jitter"),
        ({"pretrain": {"be": {"jitter": [0.5, 0.5]}}}, "pretrain.be.jitter: jitter [0.5, 0.5]: give 4"),
        ({"pretrain": {"moco": {"jitter": [-1.0, 0.0, 0.0, 0.0]}}}, "pretrain.moco.jitter"),
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


def test_extract_exact_auto_follows_the_dataset() -> None:
    """auto: bit-exact frames for the embedded dataset (its store's DVC hash is committed), ffmpeg's fast paths
    for real datasets; true and false win over the dataset."""
    assert Params().extract.exact == "auto" and parse_params({}).extract_exact is True
    for dataset in ("ucf101", "hmdb51", "kinetics400", "diving48", "folders"):
        assert parse_params({"data": {"dataset": dataset}}).extract_exact is False, dataset
    assert parse_params({"data": {"dataset": "ucf101"}, "extract": {"exact": True}}).extract_exact is True
    assert parse_params({"extract": {"exact": False}}).extract_exact is False
    shipped = load_params(ROOT / "params.yaml")
    assert shipped.extract.exact == "auto" and shipped.extract_exact is True
    for name in ("iic_r3d_ucf101", "be_i3d_ucf101"):  # the real-data presets
        raw = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
        assert parse_params({"data": raw["data"], "extract": raw["extract"]}).extract_exact is False, name


def test_typed_defaults_are_valid() -> None:
    assert Params().pretrain.milestones == [] and parse_params({}) == Params()


# ------------------------------------------------------------------------------------------------- params files

def test_missing_empty_and_incomplete_files_are_refused_unless_defaults_asked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: params file not found.*--defaults"):
        load_params(tmp_path / "nope.yaml")
    assert load_params(tmp_path / "nope.yaml", defaults=True) == Params()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="missing keys preset, seed, data"):
        load_params(empty)
    raw = _raw()
    del raw["pretrain"]["epochs"]
    partial = _write(tmp_path / "partial.yaml", raw)
    with pytest.raises(ConfigError, match=r"partial.yaml: missing key pretrain.epochs; write it"):
        load_params(partial)
    del raw["pretrain"]["milestones"]  # the typed default, none, fits any number of epochs
    partial = _write(tmp_path / "partial.yaml", raw)
    assert load_params(partial, defaults=True).pretrain.epochs == PretrainParams().epochs


def test_invalid_yaml_and_duplicate_keys_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\npretrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_params(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("seed: 1\npretrain:\n  lr: 0.1\n  epochs: 3\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:5: duplicate key 'lr' \(first on line 3\)"):
        load_params(dup)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml:1: expected a mapping"):
        load_params(listy)


def test_a_bad_value_names_its_file_and_line(tmp_path: Path) -> None:
    text = (ROOT / "params.yaml").read_text().replace("  lr: 0.003 ", "  lr: .inf  ", 1)
    (tmp_path / "params.yaml").write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("  lr: .inf"))
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "params.yaml")
    assert str(err.value) == f"{tmp_path / 'params.yaml'}:{line}: pretrain.lr: Input should be a finite number (got inf)"


def test_a_bad_report_override_is_named_when_the_file_is_read(tmp_path: Path) -> None:
    raw = _raw()
    raw["report"]["overrides"]["moco"]["pretrain"]["milestones"] = [120, 260]  # past its 200 epochs
    raw["report"]["variants"]["mlfo_frame_colour"]["overrides"]["pretrain"]["mlfo"]["colour"] = "video"
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path / "params.yaml", raw))
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert "report entry 'moco' (report.overrides.moco): pretrain.milestones: [120, 260]: give epochs" in lines[0]
    assert ("report entry 'mlfo_frame_colour' (report.overrides.mlfo + report.variants.mlfo_frame_colour."
            "overrides): pretrain.mlfo.colour") in lines[1]
    assert lines[0].startswith(f"{tmp_path / 'params.yaml'}:")


def test_yaml12_floats_read_as_numbers(tmp_path: Path) -> None:
    data, _ = read_params_yaml(_write_text(tmp_path / "f.yaml", "a: 1e-05\nb: -2E3\nc: x1e5\nd: 3\n"))
    assert data == {"a": 1e-05, "b": -2000.0, "c": "x1e5", "d": 3}


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_stage_stops_before_any_work_on_a_bad_key(tmp_path: Path) -> None:
    params = _raw()
    params["synth"]["n_clases"] = 8
    _write(tmp_path / "params.yaml", params)
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "synth.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: params.yaml:{_line(tmp_path, 'n_clases')}: synth.n_clases: "
                                                "unknown key; did you mean 'n_classes'? remove it or fix its spelling"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _line(folder: Path, key: str) -> int:
    return next(i for i, t in enumerate((folder / "params.yaml").read_text().splitlines(), 1) if key in t)


PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_parses_and_wins_over_params(name: str, tmp_path: Path) -> None:
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    raw = _raw()
    raw["preset"] = name  # selecting a preset is this one line
    _write(tmp_path / "params.yaml", raw)
    resolved = resolve_params(tmp_path / "params.yaml")
    cfg = resolved.params
    preset = yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())
    assert cfg.pretrain.method == preset["pretrain"]["method"] == name.split("_")[0]
    assert cfg.model.backbone == preset["model"]["backbone"]
    assert cfg.pretrain.epochs == preset["pretrain"]["epochs"]
    # Each preset judges the backbone by its seed's protocols: fine-tuning as the seed did, retrieval as it did
    # (CoCLR's centred features for DualVar and MLFO, IIC's merged views, BE's one clip).
    seed = name.split("_")[0]
    assert cfg.finetune.protocol == seed
    assert (cfg.retrieve.protocol, cfg.retrieve.feature, cfg.retrieve.merged) == {
        "iic": ("vcop", "pool", True), "dualvar": ("centred", "gap", False), "be": ("vcop", "gap", False),
        "mlfo": ("centred", "gap", False)}[seed]
    assert cfg.data.raw_dir == raw["data"]["raw_dir"]  # keys a preset leaves out come from params.yaml
    assert resolved.sources["pretrain.epochs"].startswith(f"preset {name} (")
    assert resolved.sources["data.raw_dir"].startswith(str(tmp_path / "params.yaml"))
    text = (ROOT / "presets" / f"{name}.yaml").read_text()
    assert "Should reach" in text or "Published" in text


def test_unknown_preset_lists_the_choices(tmp_path: Path) -> None:
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "a.yaml").write_text("seed: 1\n")
    (tmp_path / "params.yaml").write_text("preset: b\n")
    with pytest.raises(ConfigError, match=r"unknown preset 'b'.*\['none', 'a'\]"):
        load_params(tmp_path / "params.yaml")


def test_sources_say_default_file_preset_or_override(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    sets = parse_sets(["preset=iic_r3d_ucf101", "pretrain.lr=0.5", "+pretrain.cmc.temperature=1e-1"])
    r = resolve_params(tmp_path / "params.yaml", overrides=[("-S", sets)])
    p = str(tmp_path / "params.yaml")
    assert r.params.pretrain.lr == 0.5 and r.sources["pretrain.lr"] == "-S"
    assert r.params.pretrain.cmc.temperature == 0.1 and r.sources["pretrain.cmc.temperature"] == "-S"
    assert r.sources["pretrain.epochs"] == "preset iic_r3d_ucf101 (presets/iic_r3d_ucf101.yaml:12)".replace(
        "presets/", f"{tmp_path}/presets/")
    assert r.sources["pretrain.iic.normalize"] == f"preset iic_r3d_ucf101 ({tmp_path}/presets/iic_r3d_ucf101.yaml:19)"
    assert r.sources["seed"] == f"{p}:7" and r.sources["pretrain.mlfo.cluster"] == "default"
    assert set(r.sources) == set(flatten(r.params))
    for bad in ("pretrain.lr", "=1", "a..b=1"):
        with pytest.raises(ConfigError, match="write KEY=VALUE"):
            parse_sets([bad])


def _pretrain(**changes: object) -> Params:
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


# -------------------------------------------------------------------------------------- the real CLI, end to end

def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "vidssl.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(ROOT / "presets", tmp_path / "presets")
    return tmp_path


@pytest.mark.parametrize(
    ("edit", "args", "code", "says"),
    [
        (None, ("check-params", "--params", "gone.yaml"), 2, "gone.yaml: params file not found"),
        (("  epochs: 100 ", "  epochs: 100 \n  epochs: 5 "), ("pretrain",), 2, "duplicate key 'epochs'"),
        (("  epochs: 100 ", "  epoch: 100  "), ("params",), 2, "pretrain.epoch: unknown key; did you mean 'epochs'?"),
        (("  momentum: 0.9 ", "  momentum: 50 "), ("finetune",), 2, "pretrain.momentum: Input should be less than 1"),
        (("  - 1\n", "  - -3\n"), ("retrieve",), 2, "retrieve.topk: retrieve.topk [-3, 5, 10, 20, 50]: give one"),
        (None, ("params", "-S", "pretrain.lr"), 2, "-S 'pretrain.lr': write KEY=VALUE"),
        (None, ("lists", "nofr", "nosplit", "out"), 2, "nosplit/classInd.txt not found"),
        (None, ("synth",), 2, "Missing argument"),
    ],
)
def test_user_errors_end_in_one_line_and_the_exit_code(workspace: Path, edit: tuple | None, args: tuple,
                                                       code: int, says: str) -> None:
    if edit:
        text = (workspace / "params.yaml").read_text()
        assert edit[0] in text
        (workspace / "params.yaml").write_text(text.replace(edit[0], edit[1], 1))
    before = sorted(p.name for p in workspace.iterdir())
    proc = _cli(*args, cwd=workspace)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and says in proc.stderr, proc.stderr
    if "Missing argument" not in says:  # click's usage message keeps its usual usage lines
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in workspace.iterdir()) == before  # nothing written


def test_debug_shows_the_traceback(workspace: Path) -> None:
    quiet = _cli("check-params", "--params", "gone.yaml", cwd=workspace)
    loud = _cli("--debug", "check-params", "--params", "gone.yaml", cwd=workspace)
    env = _cli("check-params", "--params", "gone.yaml", cwd=workspace, env={"VIDSSL_DEBUG": "1"})
    assert "Traceback" not in quiet.stderr
    for proc in (loud, env):
        assert proc.returncode == 2 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_defaults_flag_and_show(workspace: Path) -> None:
    (workspace / "params.yaml").write_text("pretrain:\n  epochs: 3\n")
    assert _cli("params", cwd=workspace).returncode == 2
    shown = _cli("--defaults", "params", "--show", "-S", "pretrain.lr=0.5", cwd=workspace)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    pretrain = lines[lines.index("pretrain:"):lines.index("finetune:")]
    assert next(ln for ln in pretrain if ln.startswith("  epochs: 3 ")).endswith("# params.yaml:2")
    assert next(ln for ln in pretrain if ln.startswith("  lr: 0.5 ")).endswith("# -S")
    assert next(ln for ln in pretrain if ln.startswith("    nce_k: ")).endswith("# default")
    assert _cli("params", "--defaults", cwd=workspace).returncode == 0
    assert "exit codes" in _cli("--help", cwd=workspace).stdout.lower()


def test_environment_faults_are_not_bad_input() -> None:
    from vidssl.entry import EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_FAILURE, EXIT_QUARANTINED, classify

    code, line = classify(OSError(errno.ENOSPC, "No space left on device", "data/frames/x.zip"))
    assert code == EXIT_ENVIRONMENT and "data/frames/x.zip" in line and "\n" not in line
    assert classify(PermissionError(errno.EACCES, "Permission denied", "/store"))[0] == EXIT_ENVIRONMENT
    assert classify(OSError(errno.EMFILE, "Too many open files"))[0] == EXIT_ENVIRONMENT
    code, line = classify(FileNotFoundError(errno.ENOENT, "No such file or directory", "lists/x.csv"))
    assert code == EXIT_BAD_INPUT and line.startswith("lists/x.csv: not found; check the path, or run the stage")
    assert classify(ConfigError("params.yaml: seed: bad"))[0] == EXIT_BAD_INPUT
    assert classify(RuntimeError("boom"))[0] == EXIT_FAILURE
    assert EXIT_QUARANTINED == 3


def test_import_errors_are_the_environment_unless_they_are_ours() -> None:
    from vidssl.entry import EXIT_ENVIRONMENT, EXIT_FAILURE, classify

    code, line = classify(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert code == EXIT_ENVIRONMENT and line.startswith("cannot import torch (") and "scripts/install.sh" in line
    code, line = classify(ImportError("libtorch_cpu.so: cannot open shared object file", name="torch._C"))
    assert code == EXIT_ENVIRONMENT and "cannot import torch (libtorch_cpu.so" in line
    # a name missing from our own package is a bug, not a broken install
    assert classify(ImportError("cannot import name 'x' from 'vidssl.io'", name="vidssl.io"))[0] == EXIT_FAILURE


@pytest.mark.parametrize("stage", sorted(p.stem for p in (ROOT / "stages").glob("*.py")))
def test_every_stage_names_a_broken_install_in_one_line(stage: str, tmp_path: Path) -> None:
    """A broken library install (here torch and pydantic that fail on import) ends a stage before it starts,
    with one line naming the library and how to reinstall, exit 74, and no traceback."""
    for name in ("torch", "pydantic"):
        (tmp_path / "shadow" / name).mkdir(parents=True)
        (tmp_path / "shadow" / name / "__init__.py").write_text(
            f"raise ImportError('lib{name}.so: cannot open shared object file', name='{name}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), str(ROOT)])}
    env.pop("VIDSSL_DEBUG", None)
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 74, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: cannot import ") and "scripts/install.sh" in lines[0]
