"""What every distillation method shares: typed knobs, the common CE/KD terms, and named loss terms.

A method is one file: a `Method` subclass with a `Knobs` model, registered in METHODS. Its
`distill` returns named terms (each logged on its own); the base adds `ce` and `kd` and applies
`scale`. Learnable modules a method adds (projectors...) are attributes of the method, so they
train with the student and are dropped with the method after training.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..models import Output


class Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lambda_ce: float = Field(0.0, ge=0, description="cross-entropy with labels (0 = unsupervised)")
    lambda_kd: float = Field(0.0, ge=0, description="Hinton KD on logits, temperature kd_T")
    kd_T: float = Field(4.0, gt=0, description="temperature of the lambda_kd term")
    scale: float = Field(1.0, gt=0, description="multiplier on the method's own terms")


class Method(nn.Module):
    Knobs: ClassVar[type[Knobs]] = Knobs
    needs_teacher: ClassVar[bool] = True
    needs_maps: ClassVar[bool] = False  # ask the models for their stage maps

    def __init__(self, knobs: Knobs, student_dim: int, teacher_dim: int | None, dataset: str):
        super().__init__()
        self.knobs = knobs
        self.dataset = dataset

    @classmethod
    def student_needs_head(cls, knobs: Knobs) -> bool:
        return knobs.lambda_ce > 0 or knobs.lambda_kd > 0

    def distill(self, s: Output, t: Output | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, s: Output, t: Output | None, y: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.knobs
        terms = {name: k.scale * v for name, v in self.distill(s, t).items()}
        if k.lambda_ce > 0:
            terms["ce"] = k.lambda_ce * F.cross_entropy(s.logits, y)
        if k.lambda_kd > 0:
            T = k.kd_T
            terms["kd"] = k.lambda_kd * T * T * F.kl_div(
                F.log_softmax(s.logits / T, 1), F.log_softmax(t.logits / T, 1),
                reduction="batchmean", log_target=True)
        return terms
