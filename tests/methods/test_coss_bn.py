"""CoSS BN variant (supp. section 4): hand computation, invariance (gradients and one real epoch:
test_contract.py)."""
import math

import pytest
import torch

from trainables.methods import method_class

from ..method_helpers import make, step

EPS = 1e-5  # BatchNorm1d's
S = torch.tensor([[1.0, 5.0], [3.0, 1.0]])
T = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
# Fresh BN (gamma 1, beta 0), batch statistics with the biased variance. Dimension 0: 1, 3 -> mean 2,
# variance 1 -> -/+ z0; dimension 1: 5, 1 -> mean 3, variance 4 -> +/- z1.
Z0, Z1 = 1 / math.sqrt(1 + EPS), 2 / math.sqrt(4 + EPS)
MSE = ((-Z0 - 0) ** 2 + (Z1 - 2) ** 2 + (Z0 - 2) ** 2 + (-Z1 - 0) ** 2) / 4


def test_loss_equals_hand_computation():
    terms = make("coss_bn", 2, 2)(step(S, T))
    assert set(terms) == {"bn"}
    assert terms["bn"].item() == pytest.approx(MSE, rel=1e-5)
    assert make("coss_bn", 2, 2, weight=3.0)(step(S, T))["bn"].item() == pytest.approx(3 * MSE, rel=1e-5)


def test_invariant_to_a_positive_affine_map_of_each_student_dimension():
    torch.manual_seed(0)
    s, t = torch.randn(8, 4), torch.randn(8, 4)
    m = make("coss_bn", 4, 4)
    base = m(step(s, t))["bn"].item()
    moved = s * (torch.rand(4) * 3 + 0.2) + torch.randn(4) * 5
    assert m(step(moved, t))["bn"].item() == pytest.approx(base, rel=1e-3)


def test_no_labels_or_logits():
    cls = method_class("coss_bn")
    assert not cls.student_needs_head(cls.Knobs()) and not cls.needs_maps
