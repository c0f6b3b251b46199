"""CoSS against a hand computation, its invariance, and where its gradients go."""
import math

import pytest
import torch

from .method_helpers import make, step

T = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
S = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
# By hand. Rows: t -> (.6, .8), (0, 1); s -> (.8, .6), (0, 1); cosines .96 and 1.
CO = -(0.96 + 1.0) / 2
# Columns (each feature dimension over the batch): t -> (1, 0), (4, 1)/sqrt(17); s -> (1, 0), (3, 2)/sqrt(13).
SS = -(1.0 + 14.0 / math.sqrt(17 * 13)) / 2


def coss(dataset="cifar100", **knobs):
    return make("coss", 2, 2, dataset=dataset, **knobs)


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("beta", [1.0, 50.0])
def test_loss_equals_hand_computation(lam, beta):
    terms = coss(**{"lambda": lam, "beta": beta})(step(S, T))
    assert set(terms) == {"co", "ss"}
    assert terms["co"].item() == pytest.approx(beta * CO, rel=1e-6)
    assert terms["ss"].item() == pytest.approx(beta * lam * SS, rel=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_raw_terms_are_the_unweighted_values_whatever_the_weights(lam):
    """What a curve compares across a sweep over lambda: the raw term does not move with the weight
    (at lambda 0 the weighted ss is 0 but the raw one still says how far apart the spaces are)."""
    terms = coss(**{"lambda": lam, "beta": 50.0, "scale": 2.0, "lambda_ce": 0.5})(
        step(S, T, y=torch.tensor([0, 1]), s_logits=torch.tensor([[0.0, 0.0], [0.0, 0.0]])))
    assert terms.raw["ss"].item() == pytest.approx(SS, rel=1e-6)
    assert terms.raw["co"].item() == pytest.approx(CO, rel=1e-6)
    assert terms.raw["ce"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert terms["ss"].item() == pytest.approx(2 * 50 * lam * SS, rel=1e-6)
    assert terms["ce"].item() == pytest.approx(0.5 * math.log(2), rel=1e-6)


def test_cifar_default_is_plain_cosine_times_50_and_imagenet_uses_temperatures():
    cifar = coss()(step(S, T))
    assert sum(cifar.values()).item() == pytest.approx(50 * (CO + SS), rel=1e-6)
    imnet = coss(dataset="imagenet")(step(S, T))  # post: / (0.07 * 0.1), beta 1
    assert sum(imnet.values()).item() == pytest.approx((CO + SS) / (0.07 * 0.1), rel=1e-5)


def test_space_term_is_invariant_to_scaling_a_feature_dimension():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    m = coss(**{"lambda": 1.0, "beta": 1.0})
    base = m(step(s, t))["ss"]
    scale = torch.tensor([1.0, 7.0, 0.1, 1.0, 3.0])
    assert m(step(s * scale, t))["ss"].item() == pytest.approx(base.item(), rel=1e-5)
    # ...while the per-sample cosine term does change: the test can tell the two apart.
    assert m(step(s * scale, t))["co"].item() != pytest.approx(m(step(s, t))["co"].item(), rel=1e-3)


def test_gradients_reach_student_and_projector_not_teacher():
    torch.manual_seed(0)
    m = make("coss", 3, 4)  # dims differ: a projector
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 4, requires_grad=True)
    loss = sum(m(step(s, t.detach())).values())
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.proj.parameters())
    assert t.grad is None


def test_scale_and_cross_entropy_terms():
    m = make("coss", 2, 2, beta=1.0, scale=2.0, lambda_ce=0.5)
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    terms = m(step(S, T, y=torch.tensor([0, 1]), s_logits=logits))
    assert terms["co"].item() == pytest.approx(2 * CO, rel=1e-6)
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert terms["ce"].item() == pytest.approx(0.5 * ce, rel=1e-6)


def test_components_of_supp_table_2():
    only_ss = coss(**{"lambda": 1.0, "lambda_co": 0.0, "beta": 1.0})(step(S, T))
    assert only_ss["co"].item() == 0 and only_ss["ss"].item() == pytest.approx(SS, rel=1e-6)
    with pytest.raises(Exception, match="both 0"):
        coss(**{"lambda": 0.0, "lambda_co": 0.0})
