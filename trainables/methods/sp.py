"""`sp`: similarity-preserving KD (Tung & Mori, ICCV 2019).

For a map f of shape (b, ...) flattened to (b, n): G = row-L2-normalised (f f^T), a b x b matrix;
loss = weight * ||G_t - G_s||_F^2 / b^2. Where f is taken (`at`):
- `map` (default): the last stage map (`maps[-1]`: the last conv stage of a CIFAR ResNet, as in the
  CRD benchmark; the last hidden activation of an MLP).
- `pooled`: the pooled embedding (`feature`, what the classifier reads), as RRKD's SPKD baseline
  (papers/002 Table 3; Ramos-Ramos/rrkd rrkd.ipynb commit aa4298b, cell 14 `LitSPDistiller`: the teacher
  and student there are the ResNets stripped of their head, ending in AdaptiveAvgPool2d + Flatten, and
  `F.mse_loss` of the two row-normalised b x b matrices is this loss with weight 1).
Map sizes of student and teacher may differ: only the b x b matrices are compared, so nothing is learned.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import Knobs, Method, Step, Term, weighted


class SPKnobs(Knobs):
    weight: float = Field(3000.0, ge=0, description="loss weight: CRD's SP (-b 3000), the CoSS supp. base weight;"
                                                    " RRKD used 1 (its gamma)")
    at: Literal["map", "pooled"] = Field("map", description=(
        "what the similarities compare: map = the last stage map (CRD's placement), pooled = the pooled"
        " embedding (RRKD's SPKD, its notebook's LitSPDistiller)"))


def similarity_matrix(f: torch.Tensor) -> torch.Tensor:
    """Row-L2-normalised Gram matrix of the flattened samples."""
    f = f.flatten(1)
    return F.normalize(f @ f.T, dim=1)


def sp_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    b = f_s.shape[0]
    return (similarity_matrix(f_t) - similarity_matrix(f_s)).pow(2).sum() / (b * b)


@METHODS.register("sp")
class SP(Method):
    Knobs = SPKnobs
    needs_maps = True

    def distill(self, step: Step) -> dict[str, Term]:
        if self.knobs.at == "pooled":
            f_s, f_t = step.s.feature, step.t.feature
        else:
            f_s, f_t = step.s.maps[-1], step.t.maps[-1]
        return {"sp": weighted(self.knobs.weight, sp_loss(f_s, f_t.detach()))}
