"""SRRL (Yang, Martinez, Bulat & Tzimiropoulos, ICLR 2021): softmax regression representation learning.

A connector c (1×1 conv = Linear without bias -> BatchNorm -> ReLU, from d_s to d_t) maps the
student's pooled feature into the teacher's space. Two terms:
  fm = MSE(c(z_s), z_t)                         feature matching on the penultimate feature,
  sr = MSE(W_t c(z_s) + b_t, l_t)               the teacher's own classifier applied to the connected
                                                student feature, against the teacher's logits.
loss = weight · (lambda_fm · fm + lambda_sr · sr) + lambda_ce · CE. The authors' released code
(jingyang2017/KD_SRRL, train_imagenet_distillation.py) computed loss_ce + weight · (fm + sr) in its first
version (e3ca8ca) and loss_ce + fm + weight · sr since 1f4009f (its --weight on sr alone: here
lambda_sr = that weight); both with weight 1 by default, where they agree with the defaults here (checked
against its code in tests/methods/test_authors_others.py, on 1 × 1 maps). That code runs the connector
on the last feature map and matches spatial means; here it runs on the pooled feature, as the CIFAR re-implementations in the CRD-style benchmarks do (the
trainer hands methods pooled features). In the unsupervised setting the teacher's classifier is absent: lambda_sr = 0 leaves
feature matching through the connector, and then the method reads no teacher logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from ..registry import METHODS
from .base import Context, DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted



class SRRLKnobs(Knobs):
    lambda_ce: float = Field(1.0, ge=0, description=(
        "cross-entropy with labels (SRRL's loss L_CE + ...; the released code weights it 1). Set 0 for the"
        " unsupervised setting (CoSS supp. Table 1)"))
    weight: float = Field(1.0, gt=0, description="base weight on fm + sr (released code: --weight, default 1)")
    lambda_fm: float = Field(1.0, ge=0, description="feature-matching term within the base weight (released code: 1)")
    lambda_sr: float = Field(1.0, ge=0, description=(
        "softmax-regression term within the base weight (released code: 1); 0 in the unsupervised setting,"
        " where the teacher's classifier is removed"))

    @model_validator(mode="after")
    def _one_term(self) -> "SRRLKnobs":
        if self.lambda_fm == 0 and self.lambda_sr == 0:
            raise ValueError("srrl needs lambda_fm or lambda_sr above 0")
        return self


def connector(d_s: int, d_t: int) -> nn.Sequential:
    """SRRL's connector on a pooled feature: 1×1 conv (bias-free) -> BN -> ReLU, as a Linear on (b, d)."""
    c = nn.Sequential(nn.Linear(d_s, d_t, bias=False), nn.BatchNorm1d(d_t), nn.ReLU(inplace=True))
    # The released code's init: conv weights N(0, sqrt(2 / (k·k·out_channels))), BN weight 1, bias 0.
    nn.init.normal_(c[0].weight, 0.0, math.sqrt(2.0 / d_t))
    return c


@METHODS.register("srrl")
class SRRL(Method):
    Knobs = SRRLKnobs

    @classmethod
    def uses_teacher_logits(cls, knobs: SRRLKnobs) -> bool:
        return knobs.lambda_sr > 0 or knobs.lambda_kd > 0

    @classmethod
    def student_needs_head(cls, knobs: SRRLKnobs) -> bool:
        # The sr term goes through the *teacher's* classifier: the student's head is needed only by CE / KD.
        return cls.uses_labels(knobs) or knobs.lambda_kd > 0

    def __init__(self, knobs: SRRLKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        self.connector = connector(student.feature_dim, teacher.feature_dim)
        self.use_sr = knobs.lambda_sr > 0
        if self.use_sr and teacher.num_classes == 0:
            raise ValueError("srrl's softmax-regression term needs the teacher's classifier and this teacher has"
                             " none; set lambda_sr: 0")
        # The frozen teacher classifier, copied in setup: not learnable, not checkpointed (re-read on resume).
        n = teacher.num_classes if self.use_sr else 0
        self.register_buffer("head_weight", torch.zeros(n, teacher.feature_dim), persistent=False)
        self.register_buffer("head_bias", torch.zeros(n), persistent=False)

    def setup(self, ctx: Context) -> None:
        if not self.use_sr:
            return
        fc = getattr(ctx.teacher, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise ValueError("srrl's softmax-regression term needs the teacher's linear classifier (teacher.fc);"
                             " set lambda_sr: 0")
        self.head_weight.copy_(fc.weight.detach())
        if fc.bias is not None:
            self.head_bias.copy_(fc.bias.detach())

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        f = self.connector(step.s.feature)
        terms = {}
        if k.lambda_fm > 0:
            terms["fm"] = weighted(k.weight * k.lambda_fm, F.mse_loss(f, step.t.feature.detach()))
        if self.use_sr:
            sr = F.mse_loss(F.linear(f, self.head_weight, self.head_bias), step.t.logits.detach())
            terms["sr"] = weighted(k.weight * k.lambda_sr, sr)
        return terms
