"""`cc`: correlation congruence (Peng et al., ICCV 2019), the CRD benchmark's placement.

As in the CRD benchmark, each pooled feature first goes through its own learnable linear embedding
(Linear(d_s, embed_dim) and Linear(d_t, embed_dim), both trained with the student; embed_dim 128: CRD's
LinearEmbed, feat_dim 128). The loss on the two embeddings e_s, e_t (b x embed_dim) has two forms (`form`):

- "repdistiller" (default): RepDistiller's `Correlation` (distiller_zoo/CC.py, HobbitLong/RepDistiller
  at b84f547c), the code the CC rows of CRD's tables and CoSS supp. Table 1 (which adapted CRD's code)
  ran. With d_i = |e_s[i] - e_t[i]| (elementwise), consecutive samples of the batch are multiplied:
      loss = weight * mean over i = 1..b-1 of  sum_k d_{i-1,k} d_{i,k}.
  It is not the paper's formula (and depends on the order of the batch); it is what the published
  numbers measured. A batch of one sample has no pair: the loss is 0 there (RepDistiller gives NaN).
- "paper": the paper's correlation between instances, the Gaussian RBF kernel
  k(x, y) = exp(-gamma ||x - y||^2) approximated by its P-order Taylor expansion. The expansion needs
  unit vectors (||x - y||^2 = 2 - 2 <x, y>), so the embeddings are L2-normalised first:
      C_ij = exp(-2 gamma) * sum_{p=0..P} (2 gamma)^p / p! * <x_i, x_j>^p,
  loss = weight * ||C_t - C_s||_F^2 / b^2 (`rbf_gamma`, `taylor_order`; only this form reads them).

The default weight 0.02 is CRD's scripts/run_cifar_distill.sh (-b 0.02), set for the "repdistiller" form.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted


class CCKnobs(Knobs):
    weight: float = Field(0.02, ge=0, description="loss weight: CRD's CC -b 0.02 (scripts/run_cifar_distill.sh)")
    form: Literal["repdistiller", "paper"] = Field(
        "repdistiller", description="repdistiller: RepDistiller's Correlation (what CRD's tables and CoSS supp."
                                    " Table 1 ran); paper: Peng et al.'s Taylor-expanded RBF kernel")
    embed_dim: int = Field(128, ge=1, description="size of the two learnable embeddings (CRD's feat_dim 128)")
    rbf_gamma: float = Field(0.4, gt=0, description="form paper: gamma of the Gaussian RBF kernel (Peng et al.:"
                                                    " 0.4)")
    taylor_order: int = Field(2, ge=0, description="form paper: order P of the kernel's Taylor expansion (Peng et"
                                                   " al.: 2)")


def correlation_matrix(e: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    e = F.normalize(e, dim=1)
    cos = e @ e.T
    terms = [(2 * gamma) ** p / math.factorial(p) * cos.pow(p) for p in range(order + 1)]
    return math.exp(-2 * gamma) * torch.stack(terms).sum(0)


def repdistiller_correlation(e_s: torch.Tensor, e_t: torch.Tensor) -> torch.Tensor:
    """RepDistiller's `Correlation`: mean over consecutive samples of sum_k |d_{i-1,k}| |d_{i,k}|, d = e_s - e_t."""
    delta = (e_s - e_t).abs()
    if len(delta) < 2:
        return delta.sum() * 0.0
    return (delta[:-1] * delta[1:]).sum(1).mean()


@METHODS.register("cc")
class CC(Method):
    Knobs = CCKnobs

    def __init__(self, knobs: CCKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        self.embed_s = nn.Linear(student.feature_dim, knobs.embed_dim)
        self.embed_t = nn.Linear(teacher.feature_dim, knobs.embed_dim)

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        e_s, e_t = self.embed_s(step.s.feature), self.embed_t(step.t.feature.detach())
        if k.form == "repdistiller":
            return {"cc": weighted(k.weight, repdistiller_correlation(e_s, e_t))}
        c_s = correlation_matrix(e_s, k.rbf_gamma, k.taylor_order)
        c_t = correlation_matrix(e_t, k.rbf_gamma, k.taylor_order)
        b = c_s.shape[0]
        return {"cc": weighted(k.weight, (c_t - c_s).pow(2).sum() / (b * b))}
