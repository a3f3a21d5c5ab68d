"""`vidssl params --show`: the resolved params as YAML, each value followed by where it came from."""

from __future__ import annotations

from typing import Any

import yaml

from vidssl.config import Resolved


def _scalar(value: Any) -> str:
    """A value in YAML flow style on one line (lists inline, strings quoted only where YAML needs it)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def render_sources(resolved: Resolved, column: int = 48) -> str:
    """One line per key: ``key: value`` indented as in params.yaml, then ``# <source>`` in a column."""
    lines: list[str] = []

    def walk(data: dict[str, Any], prefix: str, depth: int) -> None:
        for key, value in data.items():
            name = f"{prefix}{key}"
            pad = "  " * depth
            if isinstance(value, dict) and value:
                lines.append(f"{pad}{key}:")
                walk(value, name + ".", depth + 1)
            else:
                text = f"{pad}{key}: {_scalar(value)}"
                lines.append(f"{text.ljust(column)} # {resolved.sources.get(name, 'default')}")

    walk(resolved.params.model_dump(), "", 0)
    return "\n".join(lines)
