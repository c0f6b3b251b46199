"""DKD (Zhao et al.): hand computation, the KD decomposition, warm-up, invariance (gradients and one real
epoch: test_contract.py)."""
import math

import pytest
import torch

from trainables.methods import base, method_class

from ..method_helpers import make, step

# One sample, label 0. With T 4, logits 4*ln(p) soften to p.
P_T = torch.tensor([[0.5, 0.25, 0.25]])   # binary (1/2, 1/2), non-target (1/2, 1/2)
P_S = torch.tensor([[0.25, 0.5, 0.25]])   # binary (1/4, 3/4), non-target (2/3, 1/3)
TCKD = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
NCKD = 0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))
FEAT = torch.zeros(1, 2)
Y = torch.tensor([0])


def run(m, s_logits, t_logits, y=Y, epoch=1):
    f = torch.zeros(len(y), 2)
    return m(step(f, f, y=y, s_logits=s_logits, t_logits=t_logits, epoch=epoch))


def test_loss_equals_hand_computation():
    m = make("dkd", 2, 2, classes=3, warmup=0, lambda_ce=0.0)
    terms = run(m, 4 * P_S.log(), 4 * P_T.log())
    assert set(terms) == {"tckd", "nckd"}
    assert terms["tckd"].item() == pytest.approx(16 * 1.0 * TCKD, rel=1e-5)
    assert terms["nckd"].item() == pytest.approx(16 * 8.0 * NCKD, rel=1e-5)


def test_linear_warmup_over_the_first_epochs():
    m = make("dkd", 2, 2, classes=3, lambda_ce=0.0)  # warm-up 20
    full = run(make("dkd", 2, 2, classes=3, warmup=0, lambda_ce=0.0), 4 * P_S.log(), 4 * P_T.log())
    for epoch, w in ((1, 1 / 20), (5, 0.25), (20, 1.0), (200, 1.0)):
        got = run(m, 4 * P_S.log(), 4 * P_T.log(), epoch=epoch)
        assert got["nckd"].item() == pytest.approx(w * full["nckd"].item(), rel=1e-5)


def test_tckd_and_nckd_decompose_kd():
    # Zhao et al. Eq. 6: KD = TCKD + (1 - p_t of the target class) * NCKD (here T 1, one sample).
    torch.manual_seed(0)
    s, t = torch.randn(1, 6), torch.randn(1, 6)
    y = torch.tensor([2])
    terms = run(make("dkd", 2, 2, classes=6, warmup=0, beta=1.0, T=1.0, lambda_ce=0.0), s, t, y=y)
    p_gt = t.softmax(1)[0, 2].item()
    assert (terms["tckd"] + (1 - p_gt) * terms["nckd"]).item() == pytest.approx(
        base.kd_loss(s, t, 1.0).item(), rel=1e-5)


def test_invariant_to_a_constant_added_per_row():
    torch.manual_seed(0)
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 4, 2])
    m = make("dkd", 2, 2, classes=5, warmup=0, lambda_ce=0.0)
    a = run(m, s, t, y=y)
    b = run(m, s + 3 * torch.randn(4, 1), t - 3 * torch.randn(4, 1), y=y)
    for k in ("tckd", "nckd"):
        assert b[k].item() == pytest.approx(a[k].item(), rel=1e-4)


def test_always_needs_labels_and_teacher_logits():
    cls = method_class("dkd")
    k = cls.Knobs(lambda_ce=0)
    assert cls.uses_labels(k) and cls.uses_teacher_logits(k) and cls.student_needs_head(k)
