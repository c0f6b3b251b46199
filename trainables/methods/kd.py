"""`kd`: Hinton et al., "Distilling the knowledge in a neural network" (2015).

kl = weight * T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch, plus the base class's
cross-entropy. Defaults are the CRD benchmark's KD row (RepDistiller `--distill kd -r 0.1 -a 0.9`,
T 4): 0.1 * CE + 0.9 * KD. The term is logged as `kl` because the base class reserves `kd` for the
common `lambda_kd` term (which, for this method, would only add a second copy of the same loss).
"""
from __future__ import annotations

from pydantic import Field

from ..registry import METHODS
from .base import Knobs, Method, Step, Term, kd_loss, weighted


class KDKnobs(Knobs):
    lambda_ce: float = Field(0.1, ge=0, description="cross-entropy with labels (CRD's KD: -r 0.1)")
    weight: float = Field(0.9, ge=0, description="weight of the KL term (CRD's KD: -a 0.9)")
    T: float = Field(4.0, gt=0, description="softmax temperature (CRD's KD: 4)")


@METHODS.register("kd")
class KD(Method):
    Knobs = KDKnobs
    teacher_logits = True

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        return {"kl": weighted(k.weight, kd_loss(step.s.logits, step.t.logits.detach(), k.T))}
