"""The method registry: a plain dict that the CLI lists and the tests iterate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from vidssl.methods.base import Method
from vidssl.methods.be import BE, BEMoCo
from vidssl.methods.contrastive import CMC, MoCo, SimCLR
from vidssl.methods.dualvar import DualVar
from vidssl.methods.iic import IIC
from vidssl.methods.mlfo import MLFO
from vidssl.methods.vcop import VCOP

if TYPE_CHECKING:
    from vidssl.config import Params

METHODS: dict[str, type[Method]] = {
    "iic": IIC, "dualvar": DualVar, "be": BE, "mlfo": MLFO,
    "cmc": CMC, "moco": MoCo, "simclr": SimCLR, "vcop": VCOP, "be_moco": BEMoCo,
}


def build_method(name: str, backbone: nn.Module, cfg: "Params", *, n_samples: int) -> Method:
    """Instantiate method ``name`` over ``backbone`` with its section of the params."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name].from_config(backbone, cfg, n_samples=n_samples)
