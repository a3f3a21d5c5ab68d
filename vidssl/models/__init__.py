"""Video backbones in a plain registry, plus projection and classification heads.

Every backbone takes B×C×T×H×W clips and is a :class:`Backbone` (``forward`` → B×out_dim pooled feature,
``forward_map`` → final conv map, ``forward_stages`` → every stage's map). Build one by name::

    model = build_backbone("r21d10")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch

from vidssl.models.base import Backbone, count_params, init_weights
from vidssl.models.c3d import c3d
from vidssl.models.heads import LinearHead, ProjectionHead
from vidssl.models.i3d import i3d
from vidssl.models.r3d import r3d, r3d10, r3d18, r21d10, tiny

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "tiny": tiny,
    "c3d": c3d,
    "r3d10": r3d10,
    "r21d10": r21d10,
    "r3d18": r3d18,
    "i3d": i3d,
}


def build_backbone(name: str, **kwargs: object) -> Backbone:
    """Build the backbone registered as ``name`` with builder keyword arguments ``kwargs``.

    Raises:
        ValueError: for an unknown name, or keyword arguments that builder does not take.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    builder = BACKBONES[name]
    signature = inspect.signature(builder)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ValueError(
            f"backbone {name!r} does not accept arguments {sorted(kwargs)} ({err}); it takes {signature}"
        ) from None
    return builder(**kwargs)


def describe_backbones() -> list[dict]:
    """One summary per registered backbone (for ``vidssl backbones``).

    Models are built on the meta device, so no memory is allocated and this is fast.

    Returns:
        Dicts with keys ``name``, ``params``, ``out_dim``, ``stages`` (tuple of names) and ``description``
        (the first line of the builder's docstring).
    """
    rows = []
    for name, builder in BACKBONES.items():
        with torch.device("meta"):
            model = builder()
        doc = inspect.getdoc(builder) or ""
        rows.append(
            {
                "name": name,
                "params": count_params(model),
                "out_dim": model.out_dim,
                "stages": model.stage_names,
                "description": doc.splitlines()[0] if doc else "",
            }
        )
    return rows


__all__ = [
    "BACKBONES",
    "Backbone",
    "LinearHead",
    "ProjectionHead",
    "build_backbone",
    "c3d",
    "count_params",
    "describe_backbones",
    "i3d",
    "init_weights",
    "r21d10",
    "r3d",
    "r3d10",
    "r3d18",
    "tiny",
]
