"""`dkd`: decoupled KD (Zhao et al., CVPR 2022).

With p = softmax(z / T): TCKD = T^2 KL(b_t || b_s) on the binary split b = [p_gt, 1 - p_gt];
NCKD = T^2 KL(q_t || q_s) with q the softmax over the non-target classes only; both averaged over
the batch. tckd = weight * w * alpha * TCKD, nckd = weight * w * beta * NCKD, where
w = min(epoch / warmup, 1) ramps the loss up linearly over the first `warmup` epochs (epochs count
from 1, so epoch 1 of 20 gives 1/20). The split needs the labels: DKD always uses them.
Defaults: the authors' CIFAR-100 configuration (CE 1, alpha 1, beta 8, T 4, warm-up 20).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import Knobs, Method, Step, Term, weighted


class DKDKnobs(Knobs):
    lambda_ce: float = Field(1.0, ge=0, description="cross-entropy with labels (DKD CIFAR-100: CE weight 1)")
    weight: float = Field(1.0, ge=0, description="multiplier on both DKD terms (DKD: alpha/beta carry the weights)")
    alpha: float = Field(1.0, ge=0, description="weight of TCKD (DKD: 1)")
    beta: float = Field(8.0, ge=0, description="weight of NCKD (DKD CIFAR-100: 8)")
    T: float = Field(4.0, gt=0, description="softmax temperature (DKD CIFAR-100: 4)")
    warmup: int = Field(20, ge=0, description="epochs of linear loss warm-up, 0 = none (DKD: 20)")


def dkd_terms(z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, T: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each with its T^2 factor, averaged over the batch."""
    b, c = z_s.shape
    gt = F.one_hot(y, c).bool()

    def binary(z: torch.Tensor) -> torch.Tensor:  # log [p_gt, 1 - p_gt]
        logp = F.log_softmax(z / T, 1)
        return torch.stack([logp[gt], logp.masked_fill(gt, float("-inf")).logsumexp(1)], 1)

    def non_target(z: torch.Tensor) -> torch.Tensor:  # log-softmax over the c - 1 other classes
        return F.log_softmax((z / T)[~gt].view(b, c - 1), 1)

    tckd = F.kl_div(binary(z_s), binary(z_t), reduction="batchmean", log_target=True)
    nckd = F.kl_div(non_target(z_s), non_target(z_t), reduction="batchmean", log_target=True)
    return T * T * tckd, T * T * nckd


@METHODS.register("dkd")
class DKD(Method):
    Knobs = DKDKnobs
    teacher_logits = True

    @classmethod
    def uses_labels(cls, knobs: DKDKnobs) -> bool:
        return True

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        tckd, nckd = dkd_terms(step.s.logits, step.t.logits.detach(), step.y, k.T)
        w = k.weight * (min(step.epoch / k.warmup, 1.0) if k.warmup > 0 else 1.0)
        return {"tckd": weighted(w * k.alpha, tckd), "nckd": weighted(w * k.beta, nckd)}
