"""`pkt`: probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), on the pooled features.

Cosine-similarity kernel K_ij = (cos(f_i, f_j) + 1) / 2, turned into conditional probabilities
P_ij = K_ij / sum_j K_ij (row-wise; the diagonal is kept, as the authors' released code does);
loss = weight * mean_ij P^t_ij log((P^t_ij + eps) / (P^s_ij + eps)), eps 1e-7: the KL summed over
each row, divided by b^2 (the authors' code averages over all b^2 entries, and the base weight 30000
of CRD/CoSS is calibrated to that). Dimensions may differ: nothing is learned.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import Knobs, Method, Step, Term, weighted

EPS = 1e-7


class PKTKnobs(Knobs):
    weight: float = Field(30000.0, ge=0, description="loss weight: CRD's PKT -b 30000, the CoSS supp. base weight")


def conditional_probabilities(f: torch.Tensor) -> torch.Tensor:
    f = F.normalize(f.flatten(1), dim=1)
    k = (f @ f.T + 1.0) / 2.0
    return k / k.sum(1, keepdim=True)


def pkt_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    p_s, p_t = conditional_probabilities(s), conditional_probabilities(t)
    return (p_t * torch.log((p_t + EPS) / (p_s + EPS))).mean()


@METHODS.register("pkt")
class PKT(Method):
    Knobs = PKTKnobs

    def distill(self, step: Step) -> dict[str, Term]:
        return {"pkt": weighted(self.knobs.weight, pkt_loss(step.s.feature, step.t.feature.detach()))}
