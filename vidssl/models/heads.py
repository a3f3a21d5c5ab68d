"""Heads on pooled B×D features: an MLP projection head for contrastive losses and a linear classifier."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _check_dims(owner: str, **dims: int) -> None:
    bad = {k: v for k, v in dims.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"{owner}: dimensions must be positive ints, got {bad}")


def _check_features(owner: str, x: Tensor, in_dim: int) -> None:
    if x.dim() != 2 or x.shape[1] != in_dim:
        raise ValueError(
            f"{owner} expects pooled features of shape B×{in_dim}, got {tuple(x.shape)}; "
            "pool the backbone map first (Backbone.forward returns B×out_dim)"
        )


class ProjectionHead(nn.Module):
    """Linear → [BN] → ReLU → Linear, optionally L2-normalising the output.

    DualVar's clip head is ``ProjectionHead(512, 512, 128)``; MLFO's global head adds ``bn=True``.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, *, bn: bool = False, normalize: bool = True
    ) -> None:
        """Build the head.

        Args:
            in_dim: input feature size.
            hidden_dim: hidden layer size.
            out_dim: embedding size.
            bn: put a BatchNorm1d after the first linear (its bias is then dropped as redundant).
            normalize: L2-normalise each output row.
        """
        super().__init__()
        _check_dims("ProjectionHead", in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        self.in_dim = in_dim
        self.normalize = normalize
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not bn)]
        if bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map B×in_dim features to B×out_dim embeddings (unit rows when ``normalize``)."""
        _check_features("ProjectionHead", x, self.in_dim)
        z = self.mlp(x)
        return F.normalize(z, dim=1) if self.normalize else z


class LinearHead(nn.Module):
    """Dropout → Linear classifier for fine-tuning and linear probes."""

    def __init__(
        self, in_dim: int, n_classes: int, *, dropout: float = 0.0, init_std: float | None = None
    ) -> None:
        """Build the head.

        Args:
            in_dim: input feature size.
            n_classes: number of classes (logits).
            dropout: dropout probability on the input features (BE fine-tunes I3D with 0.5).
            init_std: if set, weights ~ N(0, init_std) and bias 0 (DualVar uses 0.01); else PyTorch's default.
        """
        super().__init__()
        _check_dims("LinearHead", in_dim=in_dim, n_classes=n_classes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LinearHead: dropout must be in [0, 1), got {dropout}")
        if init_std is not None and init_std <= 0:
            raise ValueError(f"LinearHead: init_std must be positive or None, got {init_std}")
        self.in_dim = in_dim
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, n_classes)
        if init_std is not None:
            nn.init.normal_(self.fc.weight, std=init_std)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Map B×in_dim features to B×n_classes logits."""
        _check_features("LinearHead", x, self.in_dim)
        return self.fc(self.dropout(x))
