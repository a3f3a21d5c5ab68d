"""IIC: inter-intra contrastive learning (Tao et al., ACM MM'20), as specified in METHODS.md §2.

Two views of a clip (RGB and its frame residual) are contrasted through CMC memory banks; a third bank holds
features of intra-negatives (the same clip with its motion destroyed: one frame repeated, or chunks swapped),
and those rows are appended as negatives to both views' losses, so the encoder must keep temporal information.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vidssl.methods.bank import MemoryBank, bank_logits, nce_softmax_loss
from vidssl.methods.base import Batch, Method
from vidssl.methods.views import repeat_frame, residual, shuffle_chunks

if TYPE_CHECKING:
    from vidssl.config import Params


class IIC(Method):
    """IIC over any backbone; ``intra_neg='none'`` gives plain two-view CMC."""

    name = "iic"
    baseline = "cmc"

    def __init__(
        self,
        backbone: torch.nn.Module,
        *,
        n_samples: int,
        intra_neg: str = "repeat",
        view2: str = "res",
        nce_k: int = 1024,
        nce_t: float = 0.07,
        nce_m: float = 0.5,
        normalize: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(backbone, seed=seed)
        if intra_neg not in {"repeat", "shuffle", "none"}:
            raise ValueError(f"unknown intra_neg {intra_neg!r}; choose from ['none', 'repeat', 'shuffle']")
        if view2 not in {"res", "rgb"}:
            raise ValueError(f"unknown view2 {view2!r}; choose from ['res', 'rgb']")
        self.intra_neg, self.view2 = intra_neg, view2
        self.k, self.t, self.normalize = min(nce_k, n_samples), nce_t, normalize
        dim = backbone.out_dim
        # The feature is the raw GAP output: IIC uses no projection head and does not normalise queries.
        self.bank1 = MemoryBank(n_samples, dim, momentum=nce_m, seed=seed)
        self.bank2 = MemoryBank(n_samples, dim, momentum=nce_m, seed=seed + 1)
        self.bank_neg = MemoryBank(n_samples, dim, momentum=nce_m, seed=seed + 2) if intra_neg != "none" else None
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_config(cls, backbone: torch.nn.Module, cfg: "Params", *, n_samples: int) -> "IIC":
        return cls(backbone, n_samples=n_samples, seed=cfg.seed, **cfg.pretrain.iic.model_dump())

    def second_view(self, x: torch.Tensor) -> torch.Tensor:
        return residual(x) if self.view2 == "res" else x

    def negative(self, x: torch.Tensor) -> torch.Tensor:
        if self.intra_neg == "repeat":
            return repeat_frame(x, self.generator)
        return shuffle_chunks(x, 4, self.generator)

    def views(self, clips: torch.Tensor) -> list[torch.Tensor]:
        # IIC's --merge retrieval concatenates the RGB feature with the second view's feature.
        return [clips, self.second_view(clips)] if self.view2 == "res" else [clips]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # IIC's code queries the banks with the raw GAP feature; ``normalize`` L2-normalises it first, as CMC
        # does, which keeps the logit scale at 1/τ (small CPU runs otherwise can collapse to all-zero features).
        f = self.backbone(x)
        return torch.nn.functional.normalize(f, dim=1) if self.normalize else f

    def _view_loss(self, query: torch.Tensor, bank: MemoryBank, idx: torch.Tensor) -> torch.Tensor:
        logits = bank_logits(query, bank.rows(idx), self.t)
        if self.bank_neg is not None:
            logits = torch.cat([logits, bank_logits(query, self.bank_neg.rows(idx), self.t)], dim=1)
        return nce_softmax_loss(logits)

    def training_step(self, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, _, index = batch
        index = index.to(x.device)
        v1 = self.features(x)
        # rgb second view: the same clip, so both banks see the same feature (IIC's code does exactly this).
        v2 = self.features(self.second_view(x)) if self.view2 == "res" else v1
        idx = self.bank1.sample(index, self.k, generator=self.generator).to(x.device)
        loss1 = self._view_loss(v1, self.bank2, idx)
        loss2 = self._view_loss(v2, self.bank1, idx)
        if self.bank_neg is not None:
            # The negative only feeds its bank (no gradient), but its forward pass still updates BN statistics.
            with torch.no_grad():
                neg = self.features(self.negative(x))
            self.bank_neg.update(index, neg)
        self.bank1.update(index, v1.detach())
        self.bank2.update(index, v2.detach())
        loss = loss1 + loss2
        return loss, {"loss": loss.item(), "loss_view1": loss1.item(), "loss_view2": loss2.item()}
