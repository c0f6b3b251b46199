"""KD (Hinton): hand computation, shift invariance, what it needs (gradients and one real epoch:
test_contract.py)."""
import math

import pytest
import torch

from trainables.methods import method_class

from ..method_helpers import make, step

FEAT = torch.zeros(2, 2)
# With T 4, logits 4*ln(p) soften to p. Sample 0: teacher (3/4, 1/4), student (1/2, 1/2); sample 1 agrees.
T_LOGITS = 4 * torch.log(torch.tensor([[0.75, 0.25], [0.75, 0.25]]))
S_LOGITS = 4 * torch.log(torch.tensor([[0.5, 0.5], [0.75, 0.25]]))
KL0 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
KL = (KL0 + 0.0) / 2  # batch mean


def test_loss_equals_hand_computation():
    m = make("kd", 2, 2, classes=2)  # defaults: weight 0.9, T 4, lambda_ce 0.1
    terms = m(step(FEAT, FEAT, y=torch.tensor([0, 1]), s_logits=S_LOGITS, t_logits=T_LOGITS))
    assert set(terms) == {"kl", "ce"}
    assert terms["kl"].item() == pytest.approx(0.9 * 16 * KL, rel=1e-5)
    # Cross-entropy sees the raw logits: row 1 is 4*ln(3/4, 1/4), so p(class 1) = 1 / (3^4 + 1).
    ce = (math.log(2) + math.log(82)) / 2
    assert terms["ce"].item() == pytest.approx(0.1 * ce, rel=1e-5)


def test_invariant_to_a_constant_added_to_each_row_of_logits():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4)
    m = make("kd", 2, 2, classes=4, lambda_ce=0.0)
    base = m(step(torch.zeros(5, 2), torch.zeros(5, 2), s_logits=s, t_logits=t))["kl"]
    shifted = m(step(torch.zeros(5, 2), torch.zeros(5, 2), s_logits=s + torch.randn(5, 1) * 3,
                     t_logits=t - torch.randn(5, 1) * 3))["kl"]
    assert shifted.item() == pytest.approx(base.item(), rel=1e-5)


def test_needs_teacher_logits_and_labels_only_through_lambda_ce():
    cls = method_class("kd")
    assert cls.uses_teacher_logits(cls.Knobs()) and cls.uses_labels(cls.Knobs())
    assert not cls.uses_labels(cls.Knobs(lambda_ce=0))
