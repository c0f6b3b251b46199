"""`cc`: correlation congruence (Peng et al., ICCV 2019), the CRD benchmark's placement.

As in the CRD benchmark, each pooled feature first goes through its own learnable linear embedding
(Linear(d_s, embed_dim) and Linear(d_t, embed_dim), both trained with the student; embed_dim 128).
Then, as in the paper, the correlation between instances is the Gaussian RBF kernel
k(x, y) = exp(-gamma ||x - y||^2) approximated by its P-order Taylor expansion. The expansion needs
unit vectors (||x - y||^2 = 2 - 2 <x, y>), so the embeddings are L2-normalised first:
    C_ij = exp(-2 gamma) * sum_{p=0..P} (2 gamma)^p / p! * <x_i, x_j>^p.
loss = weight * ||C_t - C_s||_F^2 / b^2.

Choice documented: the CRD benchmark's released `Correlation` loss is not this formula (it multiplies
|f_s - f_t| of consecutive samples); we take the paper's kernel instead, on the CRD embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step


class CCKnobs(Knobs):
    weight: float = Field(0.02, ge=0, description="loss weight: CRD's CC -b 0.02")
    embed_dim: int = Field(128, ge=1, description="size of the two learnable embeddings (CRD's feat_dim 128)")
    rbf_gamma: float = Field(0.4, gt=0, description="gamma of the Gaussian RBF kernel (Peng et al.: 0.4)")
    taylor_order: int = Field(2, ge=0, description="order P of the kernel's Taylor expansion (Peng et al.: 2)")


def correlation_matrix(e: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    e = F.normalize(e, dim=1)
    cos = e @ e.T
    terms = [(2 * gamma) ** p / math.factorial(p) * cos.pow(p) for p in range(order + 1)]
    return math.exp(-2 * gamma) * torch.stack(terms).sum(0)


@METHODS.register("cc")
class CC(Method):
    Knobs = CCKnobs

    def __init__(self, knobs: CCKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        self.embed_s = nn.Linear(student.feature_dim, knobs.embed_dim)
        self.embed_t = nn.Linear(teacher.feature_dim, knobs.embed_dim)

    def distill(self, step: Step) -> dict[str, torch.Tensor]:
        k = self.knobs
        c_s = correlation_matrix(self.embed_s(step.s.feature), k.rbf_gamma, k.taylor_order)
        c_t = correlation_matrix(self.embed_t(step.t.feature.detach()), k.rbf_gamma, k.taylor_order)
        b = c_s.shape[0]
        return {"cc": k.weight * (c_t - c_s).pow(2).sum() / (b * b)}
