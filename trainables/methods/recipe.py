"""Miles & Mikolajczyk, "A closer look at the training dynamics of knowledge distillation".

a = norm(p(z_s)), b = norm(z_t); l_rep = weight · log( Σ_{batch, dims} |a - b|^alpha ), one log over the
whole b × d_t tensor (the LogSum soft maximum, their Eq. 12), or weight · mean((a - b)^2) for the
"without LogSum" rows (`distance: l2`). Total = l_rep + lambda_kl · KL(softmax(l_t) || softmax(l_s))
at T = 1, plus lambda_ce · CE from the base class. The same normalisation is applied to both sides.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, kd_loss, weighted

MLP_HIDDEN = 1024    # the CIFAR-100 projector's hidden width (paper, "Classification on CIFAR100")
BN_EPS = 1e-4        # "we removed the affine parameters and set eps = 0.0001"
GROUPS = 16          # GroupNorm groups, no affine (SPEC §1)
L2_EPS = 1e-8


class RecipeKnobs(Knobs):
    lambda_ce: float = Field(1.0, ge=0, description="cross-entropy with labels (released ImageNet setting: 1)")
    lambda_kl: float = Field(1.0, ge=0, description=(
        "KL(softmax(l_t) || softmax(l_s)) at T = 1 (released ImageNet setting: 1; the CIFAR-100 Table 4 runs: 0)"))
    weight: float = Field(2.0, gt=0, description="weight w of the representation loss (released ImageNet value 2.0)")
    projector: Literal["linear", "mlp", "none"] = Field("linear", description=(
        "p: linear = Linear(d_s, d_t) with bias (ImageNet release); mlp = Linear -> BatchNorm1d -> ReLU ->"
        " Linear, hidden 1024 (their CIFAR-100 setting); none only when d_s == d_t"))
    norm: Literal["batchnorm", "groupnorm", "l2", "none"] = Field("batchnorm", description=(
        "normalisation of both sides (Table 1): batchnorm = BatchNorm1d without affine, eps 1e-4, batch"
        " statistics (the paper's choice); groupnorm = 16 groups, no affine; l2 = cosine; none"))
    alpha: float = Field(4.0, gt=0, description="LogSum exponent (Table 2 grid 1..5; 4 in the released settings)")
    distance: Literal["logsum", "l2"] = Field("logsum", description=(
        "logsum = log Σ|a - b|^alpha (paper Eq. 12); l2 = mean squared error, the Table 3 'wo/ LogSum' rows"))


def make_projector(kind: str, d_s: int, d_t: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_s, d_t)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_s, MLP_HIDDEN), nn.BatchNorm1d(MLP_HIDDEN), nn.ReLU(inplace=True),
                             nn.Linear(MLP_HIDDEN, d_t))
    if d_s != d_t:
        raise ValueError(f"recipe projector 'none' needs equal feature dims, got student {d_s} and teacher {d_t};"
                         " use projector 'linear' or 'mlp'")
    return nn.Identity()


class L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=L2_EPS)


def make_norm(kind: str, d: int) -> nn.Module:
    if kind == "batchnorm":
        return nn.BatchNorm1d(d, eps=BN_EPS, affine=False, track_running_stats=False)
    if kind == "groupnorm":
        if d % GROUPS:
            raise ValueError(f"recipe norm 'groupnorm' splits the teacher's {d}-d feature into {GROUPS} groups;"
                             f" {d} is not a multiple of {GROUPS}")
        return nn.GroupNorm(GROUPS, d, affine=False)
    if kind == "l2":
        return L2Norm()
    return nn.Identity()


def logsum_distance(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """log Σ_{batch, dims} |a - b|^alpha."""
    return torch.log((a - b).abs().pow(alpha).sum())


@METHODS.register("recipe")
class Recipe(Method):
    Knobs = RecipeKnobs

    @classmethod
    def uses_teacher_logits(cls, knobs: RecipeKnobs) -> bool:
        return knobs.lambda_kl > 0 or knobs.lambda_kd > 0

    def __init__(self, knobs: RecipeKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        d_t = teacher.feature_dim
        self.proj = make_projector(knobs.projector, student.feature_dim, d_t)
        self.norm = make_norm(knobs.norm, d_t)

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        a = self.norm(self.proj(step.s.feature))
        b = self.norm(step.t.feature.detach())  # the teacher is a target only
        if k.distance == "logsum":
            rep = logsum_distance(a, b, k.alpha)
        else:
            rep = F.mse_loss(a, b)
        terms = {"rep": weighted(k.weight, rep)}
        if k.lambda_kl > 0:
            terms["kl"] = weighted(k.lambda_kl, kd_loss(step.s.logits, step.t.logits.detach(), 1.0))
        return terms
