"""SSKD (Xu et al., ECCV 2020): KD, on 4 rotated views, plus the teacher's self-supervision signal.

"Knowledge Distillation Meets Self-Supervision"; the authors' code is xuguodong03/SSKD (student.py,
wrapper.py, cifar.py), which this file follows.

Every training image comes as 4 views, rotated 0/90/180/270 degrees (`rotated_views`: the trainer
builds them; rows 4i..4i+3 are image i's views, rotation 0 first). With s, t the student's and the
teacher's logits and r_s, r_t their self-supervision embeddings (a head Linear(d, d) -> ReLU ->
Linear(d, d) on the pooled feature, one for each model):

- ce: cross-entropy of the unrotated views' logits (the base `lambda_ce`, 0.1 by default);
- kd: Hinton KD at kd_T on the unrotated views (the base `lambda_kd`, 0.9);
- tf: KD at tf_T on the rotated views, over the rows the teacher ranks well: every view whose label is
  the teacher's top class, and of the others the ratio_tf share with the best rank of the label;
- ss: for each rotated view, the cosine similarities of its embedding to the unrotated views of the
  batch (a 3b x b matrix), the student's matched to the teacher's by KL at ss_T, over the rows where the
  teacher ranks the view's own image first, and the ratio_ss share of the others with the best rank.

Before distillation (`pretrain`), the teacher's head is trained for head_epochs with its backbone frozen
in eval mode: cross-entropy of those 3b x b similarities (no temperature) against each view's own
image; SGD at head_lr, x0.1 at head_milestones (student.py's t_optimizer: its backbone group has lr 0).
Then it is frozen. The student's head trains with the student. Defaults are the authors' (student.py):
weights 0.1 / 0.9 / 2.7 / 10, T 4 / 4 / 0.5, ratios 1.0 / 0.75, the head's 60 epochs at 0.05, x0.1 at
30 and 45.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import Context, DataInfo, Knobs, Method, ModelInfo, Step, Terms, kd_loss
from ._stage import run_stage

VIEWS = 4  # rotations by 0, 90, 180, 270 degrees


class SSKDKnobs(Knobs):
    lambda_ce: float = Field(0.1, ge=0, description="cross-entropy of the unrotated views (--ce-weight 0.1)")
    lambda_kd: float = Field(0.9, ge=0, description="KD at kd_T on the unrotated views (--kd-weight 0.9)")
    lambda_tf: float = Field(2.7, ge=0, description="KD at tf_T on the rotated views the teacher ranks well"
                                                    " (--tf-weight 2.7)")
    tf_T: float = Field(4.0, gt=0, description="temperature of the tf term (--tf-T 4)")
    lambda_ss: float = Field(10.0, ge=0, description="KL between the student's and the teacher's view-to-image"
                                                     " similarities (--ss-weight 10)")
    ss_T: float = Field(0.5, gt=0, description="temperature of the ss term (--ss-T 0.5)")
    ratio_tf: float = Field(1.0, ge=0, le=1, description="share of the wrongly ranked rotated views kept in"
                                                         " the tf term (--ratio-tf 1.0)")
    ratio_ss: float = Field(0.75, ge=0, le=1, description="share of the wrongly matched rotated views kept in"
                                                          " the ss term (--ratio-ss 0.75)")
    head_epochs: int = Field(60, ge=0, description="epochs training the teacher's self-supervision head before"
                                                   " distillation (--t-epoch 60)")
    head_lr: float = Field(0.05, gt=0, description="learning rate of that stage (--t-lr 0.05)")
    head_milestones: list[int] = Field([30, 45], description="stage epochs after which its lr is x0.1"
                                                             " (--t-milestones 30 45)")


def ss_head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


def view_rows(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the unrotated and the rotated views among N = 4b rows."""
    nor = torch.arange(n, device=device) % VIEWS == 0
    return nor, ~nor


def similarities(rotated: torch.Tensor, unrotated: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each rotated view's embedding to each unrotated one: (3b, b)."""
    return F.normalize(rotated, dim=1) @ F.normalize(unrotated, dim=1).T


def own_images(b: int, device: torch.device) -> torch.Tensor:
    """The image each of the 3b rotated views came from: 0, 0, 0, 1, 1, 1, ..."""
    return torch.arange(b, device=device).repeat_interleave(VIEWS - 1)


def kept_rows(scores: torch.Tensor, target: torch.Tensor, ratio: float) -> torch.Tensor:
    """SSKD's error-level ranking: the rows whose TARGET is the top score, and the RATIO share (floored)
    of the other rows with the best rank of their target; indices in ascending order. Rows of equal rank
    at the cut are chosen by torch's default (unstable) argsort, as the authors' code chooses them: the
    same rows as their code on the same device and torch."""
    order = scores.argsort(dim=1, descending=True)
    rank = (order == target[:, None]).long().argmax(dim=1)  # where the target stands, 0 = first
    wrong = int((rank != 0).sum())
    keep = len(rank) - wrong + int(wrong * ratio)
    return rank.argsort()[:keep].sort().values


@METHODS.register("sskd")
class SSKD(Method):
    Knobs = SSKDKnobs
    rotated_views = True
    smoke_limits = {"head_epochs": 1}

    def __init__(self, knobs: SSKDKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        self.student_head = ss_head(student.feature_dim)
        self.teacher_head = ss_head(teacher.feature_dim).requires_grad_(False)  # trained only in `pretrain`

    @classmethod
    def uses_labels(cls, knobs: SSKDKnobs) -> bool:
        return knobs.lambda_ce > 0 or (knobs.lambda_tf > 0 and knobs.ratio_tf < 1)

    @classmethod
    def uses_teacher_logits(cls, knobs: SSKDKnobs) -> bool:
        return knobs.lambda_kd > 0 or knobs.lambda_tf > 0

    @classmethod
    def has_main_loss(cls, knobs: SSKDKnobs) -> bool:
        return any(w > 0 for w in (knobs.lambda_ce, knobs.lambda_kd, knobs.lambda_tf, knobs.lambda_ss))

    @classmethod
    def batch_key(cls, knobs: SSKDKnobs) -> object:
        return "rotated views"  # packed only with students that see the same 4b-row batches

    def forward(self, step: Step) -> Terms:
        k = self.knobs
        s, t = step.s, step.t
        n, b = len(s.feature), len(step.y)
        if n != VIEWS * b:
            raise ValueError(f"sskd trains on {VIEWS} rotated views an image: got {n} outputs for {b} labels")
        nor, rot = view_rows(n, s.feature.device)
        terms = Terms()
        if k.lambda_ce > 0:
            terms.add("ce", k.lambda_ce, F.cross_entropy(s.logits[nor], step.y))
        if k.lambda_kd > 0:
            terms.add("kd", k.lambda_kd, kd_loss(s.logits[nor], t.logits[nor].detach(), k.kd_T))
        if k.lambda_tf > 0:
            t_rot = t.logits[rot].detach()
            keep = kept_rows(F.softmax(t_rot / k.tf_T, 1), step.y.repeat_interleave(VIEWS - 1), k.ratio_tf)
            terms.add("tf", k.scale * k.lambda_tf, kd_loss(s.logits[rot][keep], t_rot[keep], k.tf_T))
        if k.lambda_ss > 0:
            r_s = self.student_head(s.feature)
            with torch.no_grad():
                r_t = self.teacher_head(t.feature.detach())
            s_sim, t_sim = similarities(r_s[rot], r_s[nor]), similarities(r_t[rot], r_t[nor])
            keep = kept_rows(t_sim, own_images(b, t_sim.device), k.ratio_ss)
            terms.add("ss", k.scale * k.lambda_ss, kd_loss(s_sim[keep], t_sim[keep], k.ss_T))
        return terms

    def head_loss(self, t_feature: torch.Tensor) -> torch.Tensor:
        """The teacher head's stage loss on one batch of 4b teacher features."""
        r = self.teacher_head(t_feature)
        nor, rot = view_rows(len(r), r.device)
        return F.cross_entropy(similarities(r[rot], r[nor]), own_images(len(r) // VIEWS, r.device))

    def pretrain(self, ctx: Context) -> dict[str, float]:
        k = self.knobs
        if k.head_epochs == 0 or k.lambda_ss == 0:
            return {}
        ctx.teacher.eval()
        self.teacher_head.train().requires_grad_(True)

        def batch_loss(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                feature = ctx.teacher(x).feature
            return self.head_loss(feature)

        try:
            loss = run_stage(ctx, self.teacher_head.parameters(), k.head_epochs, batch_loss, lr=k.head_lr,
                             milestones=k.head_milestones)
        finally:
            self.teacher_head.requires_grad_(False)
        return {"sskd_head_loss": loss}
