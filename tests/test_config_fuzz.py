"""Property-based: a params file broken in one generated way stops a real stage entry point before any work.

Each example starts from the shipped params.yaml and breaks it once (a required key deleted, a value of the wrong
type, non-finite or out of range, a milestone or top-k that cannot be, a name no registry holds, an unknown key,
a key written twice). The stage must exit with code 2, print one line per problem naming the key, no traceback,
and write nothing.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import runpy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vidssl.config import METHOD_NAMES, flatten, missing_keys  # noqa: E402
from vidssl.params_yaml import read_params_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_TEXT = (ROOT / "params.yaml").read_text()
SHIPPED, LINES = read_params_yaml(ROOT / "params.yaml")
# the keys a file must write (not the report's free-form override maps)
LEAVES = sorted(k for k in flatten(SHIPPED) if not k.startswith(("report.overrides", "report.variants")))
REQUIRED = [k for k in LEAVES if k.count(".") <= 1]
STAGES = ["synth", "lists", "validate", "evaluate"]  # stage entry points that must refuse before any work


def _set(raw: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        raw = raw[p]
    raw[last] = value


def _delete(raw: dict, key: str) -> None:
    *parents, last = key.split(".")
    for p in parents:
        raw = raw[p]
    del raw[last]


def _wrong_type(value: Any) -> st.SearchStrategy:
    """Values of another type than ``value``'s (strict parsing: no coercion between them)."""
    if isinstance(value, bool):
        return st.sampled_from(["yes", 1, 0.5, [True]])
    if isinstance(value, (int, float)):
        return st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), "fast", [1], None]),
                         st.text(min_size=1, max_size=5))
    if isinstance(value, list):
        return st.sampled_from(["x", 3, {"a": 1}])
    return st.sampled_from([[1], {"a": 1}, 7, None])


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=10)


@st.composite
def broken(draw: st.DrawFn) -> tuple[str, str, str]:
    """(params text, a fragment the error must contain, how it was broken)."""
    raw = copy.deepcopy(SHIPPED)
    kind = draw(st.sampled_from(["delete", "type", "range", "milestones", "topk", "name", "unknown", "duplicate"]))
    if kind == "duplicate":
        key = draw(st.sampled_from(LEAVES))
        lines = SHIPPED_TEXT.splitlines()
        at = LINES[key] - 1
        lines.insert(at + 1, lines[at])
        return "\n".join(lines) + "\n", f"{LINES[key] + 1}: duplicate key {key.split('.')[-1]!r}", kind
    if kind == "delete":
        key = draw(st.sampled_from(REQUIRED))
        _delete(raw, key)
        return yaml.safe_dump(raw), key, kind
    if kind == "type":
        key = draw(st.sampled_from(LEAVES))
        _set(raw, key, draw(_wrong_type(flatten(SHIPPED)[key])))
    elif kind == "range":
        key, value = draw(st.one_of(
            st.tuples(st.sampled_from(["pretrain.momentum", "finetune.momentum"]),
                      st.one_of(st.floats(min_value=1.0, max_value=1e9), st.floats(max_value=-1e-9, min_value=-1e9))),
            st.tuples(st.just("pretrain.gamma"),
                      st.one_of(st.floats(min_value=1.0 + 1e-9, max_value=1e9), st.floats(max_value=0, min_value=-1e9))),
            st.tuples(st.sampled_from(["pretrain.lr", "finetune.lr"]), st.floats(max_value=0, min_value=-1e9)),
            st.tuples(st.sampled_from(["pretrain.epochs", "finetune.epochs", "retrieve.clips", "clip.frames"]),
                      st.integers(max_value=0, min_value=-10**6)),
        ))
        _set(raw, key, value)
    elif kind == "milestones":
        key = "pretrain.milestones"
        epochs = raw["pretrain"]["epochs"]
        value = draw(st.one_of(
            st.lists(st.integers(epochs + 1, 10**6), min_size=1, max_size=3),  # past the last epoch
            st.lists(st.integers(1, epochs), min_size=2, max_size=4).filter(
                lambda m: any(a >= b for a, b in zip(m, m[1:]))),  # not strictly ascending
            st.lists(st.integers(-10**6, 0), min_size=1, max_size=2),  # before the first epoch
        ))
        _set(raw, key, value)
    elif kind == "topk":
        key = "retrieve.topk"
        value = draw(st.one_of(st.just([]), st.lists(st.integers(-10**6, 0), min_size=1, max_size=3),
                               st.lists(st.integers(1, 50), min_size=1, max_size=3).map(lambda v: v + v[:1])))
        _set(raw, key, value)
    elif kind == "name":
        key = draw(st.sampled_from(["pretrain.method", "model.backbone", "data.dataset"]))
        known = {"pretrain.method": METHOD_NAMES, "model.backbone": (), "data.dataset": ()}[key]
        value = draw(NAMES.filter(lambda n: n not in (*known, "tiny", "c3d", "r3d10", "r21d10", "r3d18", "i3d",
                                                      "synthetic", "ucf101", "hmdb51")))
        _set(raw, key, value)
    else:  # unknown key in a section
        section = draw(st.sampled_from(["data", "synth", "extract", "model", "clip", "pretrain", "finetune",
                                        "retrieve", "report"]))
        name = draw(NAMES.filter(lambda n: n not in raw[section]))
        key = f"{section}.{name}"
        _set(raw, key, 1)
        return yaml.safe_dump(raw), f"{key}: unknown key", kind
    assert missing_keys(raw) == []
    return yaml.safe_dump(raw), key, kind


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=broken(), stage=st.sampled_from(STAGES))
def test_a_broken_params_file_stops_the_stage_with_the_key_named(case: tuple[str, str, str], stage: str) -> None:
    text, names, kind = case
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(text)
        err = io.StringIO()
        os.chdir(tmp)
        try:
            with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
                runpy.run_path(str(ROOT / "stages" / f"{stage}.py"), run_name="__main__")
        finally:
            os.chdir(before)
        out = err.getvalue()
        assert exit_.value.code == 2, (kind, out)
        assert names in out, (kind, names, out)
        assert "Traceback" not in out
        assert all(line.startswith("error: ") for line in out.strip().splitlines()), out
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["params.yaml"]  # nothing written
