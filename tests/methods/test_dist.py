"""DIST (Huang et al.): hand computation on logits and features, invariances, gradients, real epochs."""
import math

import pytest
import torch

from trainables.methods import method_class

from ..method_helpers import make, smoke_fit, step

# Class profiles of 2 samples over 3 classes.
P_T = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.25, 0.5]])
P_S = torch.tensor([[0.25, 0.5, 0.25], [0.25, 0.25, 0.5]])
# Rows. Sample 0, centred: t (1/6, -1/12, -1/12), s (-1/12, 1/6, -1/12): dot -1/48, norms^2 1/24 -> rho -1/2.
# Sample 1: identical -> rho 1.
INTER = 1 - (-0.5 + 1.0) / 2
# Columns (each class over the batch of 2). Class 0: s constant -> rho 0; class 1: t constant -> 0;
# class 2: both rise -> 1.
INTRA = 1 - (0.0 + 0.0 + 1.0) / 3
FEAT = torch.zeros(2, 2)


def test_logits_loss_equals_hand_computation():
    # With T 4, logits 4*ln(p) soften back to p; each term carries T^2 = 16 and beta = gamma = 2.
    m = make("dist", 2, 2, classes=3)
    terms = m(step(FEAT, FEAT, y=torch.tensor([0, 2]), s_logits=4 * P_S.log(), t_logits=4 * P_T.log()))
    assert set(terms) == {"inter", "intra", "ce"}
    assert terms["inter"].item() == pytest.approx(2 * 16 * INTER, rel=1e-5)
    assert terms["intra"].item() == pytest.approx(2 * 16 * INTRA, rel=1e-5)


def test_features_loss_equals_hand_computation():
    # The same profiles as raw features: no softmax, no T.
    m = make("dist", 3, 3, target="features", lambda_ce=0.0, beta=1.0, gamma=3.0)
    terms = m(step(P_S, P_T))
    assert set(terms) == {"inter", "intra"}
    assert terms["inter"].item() == pytest.approx(INTER, rel=1e-5)
    assert terms["intra"].item() == pytest.approx(3 * INTRA, rel=1e-5)


def test_logits_invariant_to_a_constant_added_per_row():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    m = make("dist", 2, 2, classes=5, lambda_ce=0.0)
    feat = torch.zeros(6, 2)
    base = m(step(feat, feat, s_logits=s, t_logits=t))
    moved = m(step(feat, feat, s_logits=s + 5 * torch.randn(6, 1), t_logits=t - 5 * torch.randn(6, 1)))
    for k in ("inter", "intra"):
        assert moved[k].item() == pytest.approx(base[k].item(), rel=1e-4)


def test_features_relations_invariant_to_positive_affine_maps():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    m = make("dist", 4, 4, target="features", lambda_ce=0.0)
    base = m(step(s, t))
    rows = m(step(s * (torch.rand(6, 1) + 0.5) + torch.randn(6, 1), t))  # per sample: inter unchanged
    cols = m(step(s, t * (torch.rand(1, 4) + 0.5) + torch.randn(1, 4)))  # per dimension: intra unchanged
    assert rows["inter"].item() == pytest.approx(base["inter"].item(), rel=1e-4)
    assert cols["intra"].item() == pytest.approx(base["intra"].item(), rel=1e-4)


def test_gradients_logits_and_features_with_projector():
    torch.manual_seed(0)
    s, t = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    feat = torch.zeros(5, 2)
    sum(make("dist", 2, 2, classes=4, lambda_ce=0.0)(step(feat, feat, s_logits=s, t_logits=t)).values()).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None

    m = make("dist", 3, 6, target="features", lambda_ce=0.0)  # dims differ: a Linear projector
    fs, ft = torch.randn(5, 3, requires_grad=True), torch.randn(5, 6, requires_grad=True)
    sum(m(step(fs, ft)).values()).backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0 and ft.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.proj.parameters())


def test_what_it_needs_depends_on_the_target():
    cls = method_class("dist")
    assert cls.uses_teacher_logits(cls.Knobs()) and cls.uses_labels(cls.Knobs())
    feats = cls.Knobs(target="features", lambda_ce=0)
    assert not cls.uses_teacher_logits(feats) and not cls.student_needs_head(feats)
    assert cls.uses_teacher_logits(cls.Knobs(target="features", lambda_ce=0, lambda_kd=1))


@pytest.mark.parametrize("knobs", [{}, {"target": "features", "lambda_ce": 0.0}])
def test_one_real_epoch(tmp_path, knobs):
    (metrics,) = smoke_fit("dist", tmp_path, arch="mlp", **knobs)
    for term in ("inter", "intra"):
        assert math.isfinite(metrics[f"train/{term}"])
