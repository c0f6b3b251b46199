"""`dist`: DIST (Huang et al., NeurIPS 2022, "Knowledge distillation from a stronger teacher").

Relations by Pearson correlation rho. On logits (`target: logits`, the paper's method):
y = softmax(z / T) per sample;
inter = weight * beta  * T^2 * (1 - mean_i rho(y_s[i, :], y_t[i, :]))   (each sample's class profile)
intra = weight * gamma * T^2 * (1 - mean_c rho(y_s[:, c], y_t[:, c]))   (each class over the batch)
Defaults are DIST's CIFAR-100 setting: T 4, beta = gamma = 2, cross-entropy weight 1 (ImageNet: T 1,
beta = gamma = 1).

`target: features` is our adaptation for the unsupervised setting (the CoSS supplement reports DIST
without logits): the same two relations on the pooled features, the student's through a learnable
Linear(d_s, d_t) when the dimensions differ. Features are not class scores, so there is no softmax,
no temperature and no T^2 factor; the relations compare the raw (projected) features.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted

EPS = 1e-8


class DISTKnobs(Knobs):
    lambda_ce: float = Field(1.0, ge=0, description="cross-entropy with labels (DIST: alpha 1)")
    weight: float = Field(1.0, ge=0, description="multiplier on both DIST terms (DIST: its beta/gamma carry the weights)")
    beta: float = Field(2.0, ge=0, description="weight of the inter-class relation (DIST CIFAR-100: 2; ImageNet: 1)")
    gamma: float = Field(2.0, ge=0, description="weight of the intra-class relation (DIST CIFAR-100: 2; ImageNet: 1)")
    T: float = Field(4.0, gt=0, description="softmax temperature, logits only (DIST CIFAR-100: 4; ImageNet: 1)")
    target: Literal["logits", "features"] = Field(
        "logits", description="logits: the paper's DIST; features: the same relations on pooled features"
                              " (unsupervised adaptation, no teacher logits needed)")


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the Pearson correlation between a[i] and b[i]."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)).mean()


def relation_terms(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra) = (1 - mean row correlation, 1 - mean column correlation)."""
    return 1 - pearson_rows(s, t), 1 - pearson_rows(s.T, t.T)


@METHODS.register("dist")
class DIST(Method):
    Knobs = DISTKnobs

    def __init__(self, knobs: DISTKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        d_s, d_t = student.feature_dim, teacher.feature_dim
        use_proj = knobs.target == "features" and d_s != d_t
        self.proj = nn.Linear(d_s, d_t) if use_proj else nn.Identity()

    @classmethod
    def uses_teacher_logits(cls, knobs: DISTKnobs) -> bool:
        return knobs.target == "logits" or super().uses_teacher_logits(knobs)

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        if k.target == "logits":
            s = (step.s.logits / k.T).softmax(1)
            t = (step.t.logits.detach() / k.T).softmax(1)
            factor = k.weight * k.T ** 2
        else:
            s, t = self.proj(step.s.feature), step.t.feature.detach()
            factor = k.weight
        inter, intra = relation_terms(s, t)
        return {"inter": weighted(factor * k.beta, inter), "intra": weighted(factor * k.gamma, intra)}
