"""Reading params YAML: duplicate keys refused, and the line of every dotted key kept for error messages."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class ParamsYAMLError(ValueError):
    """A params file that is not valid YAML, or that repeats a key; the message names file and line."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ParamsYAMLError(
                    f"{self.name}:{line}: duplicate key {key!r} (first on line {seen[key]}); keep one of them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats such as ``1e-05`` (PyYAML's YAML 1.1 wants ``1.0e-05`` and reads ``1e-05`` as a string); DVC
# reads and writes params with YAML 1.2, so `dvc exp run -S` leaves values in this form.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            name = f"{prefix}{key_node.value}"
            out[name] = key_node.start_mark.line + 1
            _key_lines(value, name + ".", out)


def read_params_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """``(data, lines)`` of a YAML file: ``lines`` maps each dotted mapping key to its 1-based line.

    Raises:
        ParamsYAMLError: invalid YAML or a duplicate key, with file and line.
    """
    text = path.read_text(encoding="utf-8")
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ParamsYAMLError(f"{where}: not valid YAML ({problem}); fix the syntax on that line") from None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _key_lines(node, "", lines)
    return data, lines


def load_value(text: str) -> Any:
    """One YAML value (a `-S KEY=VALUE` right side) read as params files are read."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
