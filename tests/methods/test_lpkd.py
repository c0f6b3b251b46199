"""LPKD (Chen et al., as RRKD used it): hand computation, invariances, gradients (one real epoch: test_contract.py).

The defaults are the RRKD notebook's (sigma^2 1, a sum over the batch / k, T 1); the numbers its own code
gives are checked in test_authors_others.py."""
import math

import pytest
import torch

from trainables.methods import method_class

from ..method_helpers import make, step

# Teacher on a line at 0, 1, 3: nearest neighbours 0->1 (d^2 1), 1->0 (d^2 1), 2->1 (d^2 4).
T = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
# Student: ||s0 - s1||^2 = 1, ||s2 - s1||^2 = 4.
S = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
# sigma^2 1 (the default), summed over the batch and divided by k = 1 (reduction sum, the default).
LP_SIGMA1 = (math.exp(-1) * 1 + math.exp(-1) * 1 + math.exp(-4) * 4) / 1
# Adaptive sigma^2: the mean of those squared distances, (1 + 1 + 4) / 3 = 2.
LP_ADAPTIVE = (math.exp(-0.5) * 1 + math.exp(-0.5) * 1 + math.exp(-2) * 4) / 1


def lp_only(k=1, **knobs):
    return make("lpkd", 2, 2, lambda_ce=0.0, soft_weight=0.0, k=k, **knobs)


def test_locality_loss_equals_hand_computation():
    terms = lp_only()(step(S, T))
    assert set(terms) == {"lp"}
    assert terms["lp"].item() == pytest.approx(1.5 * LP_SIGMA1, rel=1e-5)
    assert lp_only(sigma2="adaptive")(step(S, T))["lp"].item() == pytest.approx(1.5 * LP_ADAPTIVE, rel=1e-5)
    # reduction mean divides by the batch size as well: b = 3.
    assert lp_only(reduction="mean")(step(S, T))["lp"].item() == pytest.approx(1.5 * LP_SIGMA1 / 3, rel=1e-5)
    # sigma^2 4 (the notebook's normalizing_constant 2): exp(-d^2 / 4).
    lp4 = 2 * math.exp(-0.25) + math.exp(-1) * 4
    assert lp_only(sigma2=4.0)(step(S, T))["lp"].item() == pytest.approx(1.5 * lp4, rel=1e-5)


def test_sum_over_k_neighbours_divides_by_k_only():
    # k = 2 on the line 0, 1, 3: N(0) = {1, 2}, N(1) = {0, 2}, N(2) = {1, 0}; teacher d^2 1, 9, 1, 4, 4, 9.
    # Student d^2 on the same pairs: 1, 9, 1, 4, 4, 9. Sum over i and j, / k.
    pairs = [(1, 1), (9, 9), (1, 1), (4, 4), (4, 4), (9, 9)]
    want = sum(math.exp(-dt) * ds for dt, ds in pairs) / 2
    assert lp_only(k=2)(step(S, T))["lp"].item() == pytest.approx(1.5 * want, rel=1e-5)
    assert lp_only(k=2, reduction="mean")(step(S, T))["lp"].item() == pytest.approx(1.5 * want / 3, rel=1e-5)


def test_defaults_are_the_rrkd_notebooks():
    k = method_class("lpkd").Knobs()
    assert (k.weight, k.soft_weight, k.lambda_ce, k.k, k.sigma2, k.reduction, k.T) == (1.5, 2.0, 1.0, 5, 1.0, "sum", 1.0)
    for bad in ({"sigma2": 0.0}, {"sigma2": "auto"}, {"sigma2": None}, {"reduction": "batchmean"}):
        with pytest.raises(ValueError):
            method_class("lpkd").Knobs(**bad)


def test_soft_cross_entropy_equals_hand_computation():
    # T 1 (the default): teacher logits ln(3/4, 1/4) soften to (3/4, 1/4); student logits 0 to (1/2, 1/2).
    m = make("lpkd", 2, 2, classes=2, lambda_ce=0.0, k=1)
    t_logits = torch.log(torch.tensor([[0.75, 0.25]] * 3))
    terms = m(step(S, T, s_logits=torch.zeros(3, 2), t_logits=t_logits))
    assert set(terms) == {"lp", "soft"}
    assert terms["soft"].item() == pytest.approx(2.0 * math.log(2), rel=1e-5)  # -(3/4 + 1/4) ln(1/2)
    # T 0.5 (the paper's tau): logits 0.5 * ln(3/4, 1/4) soften to the same (3/4, 1/4), no T^2 factor.
    m = make("lpkd", 2, 2, classes=2, lambda_ce=0.0, k=1, T=0.5)
    terms = m(step(S, T, s_logits=torch.zeros(3, 2), t_logits=0.5 * t_logits))
    assert terms["soft"].item() == pytest.approx(2.0 * math.log(2), rel=1e-5)


def test_invariant_to_rigid_motions_and_equivariant_to_student_scale():
    torch.manual_seed(0)
    s, t = torch.randn(8, 3), torch.randn(8, 6)
    m = lp_only(k=3, sigma2=2.0)
    base = m(step(s, t))["lp"].item()
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    assert m(step(s @ q + torch.randn(3), t))["lp"].item() == pytest.approx(base, rel=1e-4)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    assert m(step(s, t @ q - 2.0))["lp"].item() == pytest.approx(base, rel=1e-4)
    assert m(step(2.0 * s, t))["lp"].item() == pytest.approx(4 * base, rel=1e-4)
    # The batch-adaptive sigma^2 also makes it blind to the teacher's scale.
    adaptive = lp_only(k=3, sigma2="adaptive")
    assert adaptive(step(s, 10.0 * t))["lp"].item() == pytest.approx(adaptive(step(s, t))["lp"].item(), rel=1e-4)


def test_gradients_reach_student_not_teacher():
    torch.manual_seed(0)
    s, t = torch.randn(6, 3, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    sl, tl = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    m = make("lpkd", 3, 5, classes=4)
    sum(m(step(s, t, y=torch.tensor([0, 1, 2, 3, 0, 1]), s_logits=sl, t_logits=tl)).values()).backward()
    for x in (s, sl):
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert t.grad is None and tl.grad is None


def test_teacher_logits_only_with_the_soft_term():
    cls = method_class("lpkd")
    assert cls.uses_teacher_logits(cls.Knobs()) and cls.uses_labels(cls.Knobs())
    unsup = cls.Knobs(soft_weight=0, lambda_ce=0)
    assert not cls.uses_teacher_logits(unsup) and not cls.student_needs_head(unsup)
