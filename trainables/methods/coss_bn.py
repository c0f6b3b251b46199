"""`coss_bn`: the CoSS supplement's BatchNorm variant (supp. section 4, Table 4).

The student's pooled feature (through a learnable Linear(d_s, d_t) when the dimensions differ) is
standardised per dimension over the batch by BatchNorm1d with its affine gamma/beta, which map it
into the teacher's unnormalised space; bn = weight * MSE(BN(a_s), z_t), the mean squared error over
all b x d_t entries (the supplement: (1/b) sum_i D(Z_i^s, X_i^t) with D the mean-squared error).
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted


class CoSSBNKnobs(Knobs):
    weight: float = Field(1.0, ge=0, description="loss weight (the supplement gives none: 1)")


@METHODS.register("coss_bn")
class CoSSBN(Method):
    Knobs = CoSSBNKnobs

    def __init__(self, knobs: CoSSBNKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        d_s, d_t = student.feature_dim, teacher.feature_dim
        self.proj = nn.Linear(d_s, d_t) if d_s != d_t else nn.Identity()
        self.bn = nn.BatchNorm1d(d_t, affine=True)

    def distill(self, step: Step) -> dict[str, Term]:
        z = self.bn(self.proj(step.s.feature))
        return {"bn": weighted(self.knobs.weight, F.mse_loss(z, step.t.feature.detach()))}
