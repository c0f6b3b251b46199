"""Miles & Mikolajczyk's recipe against hand computations, its BatchNorm invariance, its gradients."""
import math

import pytest
import torch
from torch import nn

from trainables.methods import method_class

from ..method_helpers import make, smoke_fit, step

S = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
T = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
# S - T = [[1, 0], [2, 3]]: sum of |.|^alpha is 1 + 2 + 3 = 6 (alpha 1), 1 + 4 + 9 = 14 (alpha 2),
# 1 + 16 + 81 = 98 (alpha 4); its mean square is 14 / 4.


def recipe(d_s=2, d_t=2, identity=True, **knobs):
    m = make("recipe", d_s, d_t, classes=2, **{"lambda_kl": 0.0, "lambda_ce": 0.0, **knobs})
    if identity and isinstance(m.proj, nn.Linear):
        with torch.no_grad():
            m.proj.weight.copy_(torch.eye(d_t, d_s))
            m.proj.bias.zero_()
    return m


# --- (1) the loss against hand computations ---------------------------------------------------

@pytest.mark.parametrize("alpha, total", [(1.0, 6.0), (2.0, 14.0), (4.0, 98.0)])
def test_logsum_without_normalisation(alpha, total):
    terms = recipe(norm="none", alpha=alpha, weight=1.0)(step(S, T))
    assert set(terms) == {"rep"}
    assert terms["rep"].item() == pytest.approx(math.log(total), rel=1e-6)


def test_defaults_weight_two_alpha_four_and_mse_distance():
    assert recipe(norm="none")(step(S, T))["rep"].item() == pytest.approx(2 * math.log(98), rel=1e-6)
    assert recipe(norm="none", distance="l2")(step(S, T))["rep"].item() == pytest.approx(2 * 14 / 4, rel=1e-6)
    # projector none (equal dims) is the identity too.
    assert recipe(norm="none", projector="none")(step(S, T))["rep"].item() == pytest.approx(2 * math.log(98))


def test_l2_norm():
    # Rows normalised: a = (.6, .8), (0, 1); b = (.8, .6), (0, 1). |a - b|^2 sums to .04 + .04.
    s, t = torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([[4.0, 3.0], [0.0, 5.0]])
    rep = recipe(norm="l2", alpha=2.0, weight=1.0)(step(s, t))["rep"]
    assert rep.item() == pytest.approx(math.log(0.08), rel=1e-5)


def test_batchnorm_uses_batch_statistics_and_eps_1e4():
    # Student columns (1, 3) and (3, 1): mean 2, biased variance 1 -> a = [[-1, 1], [1, -1]] · s.
    # Teacher columns (0, 2) -> (-1, 1) · s and (0, 4): mean 2, variance 4 -> (-1, 1) · u.
    s_ = 1 / math.sqrt(1 + 1e-4)
    u = 2 / math.sqrt(4 + 1e-4)
    s, t = torch.tensor([[1.0, 3.0], [3.0, 1.0]]), torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    m = recipe(weight=1.0)  # norm batchnorm, alpha 4 by default
    # a - b = [[0, s + u], [0, -(s + u)]]
    assert m(step(s, t))["rep"].item() == pytest.approx(math.log(2 * (s_ + u) ** 4), rel=1e-6)
    m.eval()  # still batch statistics: no running estimates exist
    assert m(step(s, t))["rep"].item() == pytest.approx(math.log(2 * (s_ + u) ** 4), rel=1e-6)


def test_groupnorm_16_groups():
    # 32 dims -> groups of 2 neighbours. A pair (1, 0) normalises to (g, -g), g = .5 / sqrt(.25 + 1e-5).
    g = 0.5 / math.sqrt(0.25 + 1e-5)
    s = torch.tensor([[1.0, 0.0] * 16] * 2)
    t = torch.tensor([[0.0, 1.0] * 16] * 2)
    rep = recipe(32, 32, projector="none", norm="groupnorm", alpha=1.0, weight=1.0)(step(s, t))["rep"]
    assert rep.item() == pytest.approx(math.log(2 * 32 * 2 * g), rel=1e-6)


def test_kl_term_at_temperature_one():
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4 log(3/2) + 1/4 log(1/2), the same for both rows.
    s_logits = torch.zeros(2, 2)
    t_logits = torch.tensor([[math.log(3), 0.0]] * 2)
    m = recipe(norm="none", lambda_kl=0.5)
    terms = m(step(S, T, s_logits=s_logits, t_logits=t_logits))
    assert set(terms) == {"rep", "kl"}
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert terms["kl"].item() == pytest.approx(0.5 * kl, rel=1e-6)
    # The common knobs: scale multiplies the method's own terms, lambda_ce adds CE.
    m = recipe(norm="none", lambda_kl=1.0, lambda_ce=1.0, scale=3.0)
    terms = m(step(S, T, y=torch.tensor([0, 1]), s_logits=s_logits, t_logits=t_logits))
    assert terms["rep"].item() == pytest.approx(3 * 2 * math.log(98), rel=1e-6)
    assert terms["kl"].item() == pytest.approx(3 * kl, rel=1e-6)
    assert terms["ce"].item() == pytest.approx(math.log(2), rel=1e-6)


def test_what_it_needs():
    cls = method_class("recipe")
    assert cls.uses_teacher_logits(cls.Knobs()) and cls.uses_labels(cls.Knobs())
    off = cls.Knobs(lambda_kl=0.0, lambda_ce=0.0)
    assert not cls.uses_teacher_logits(off) and not cls.student_needs_head(off)


def test_bad_configurations_are_clear_errors():
    with pytest.raises(ValueError, match="projector 'none' needs equal feature dims"):
        make("recipe", 3, 4, projector="none")
    with pytest.raises(ValueError, match="not a multiple of 16"):
        make("recipe", 3, 20, norm="groupnorm")
    with pytest.raises(ValueError, match="norm"):
        make("recipe", 3, 4, norm="layernorm")


# --- (2) BatchNorm makes it blind to a per-dimension affine change of the teacher feature --------

def test_batchnorm_invariant_to_per_dimension_affine_teacher_change():
    torch.manual_seed(0)
    s, t = torch.randn(16, 3), torch.randn(16, 4) * 2
    scale, shift = torch.tensor([0.5, 3.0, 1.0, 7.0]), torch.tensor([10.0, -2.0, 0.0, 1.0])
    m = recipe(3, 4, identity=False)
    base = m(step(s, t))["rep"].item()
    assert m(step(s, t * scale + shift))["rep"].item() == pytest.approx(base, rel=1e-4)
    # Without normalisation the same change is seen: the test can tell.
    plain = recipe(3, 4, identity=False, norm="none")
    assert plain(step(s, t * scale + shift))["rep"].item() != pytest.approx(plain(step(s, t))["rep"].item(), rel=1e-3)


# --- (3) gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("projector", ["linear", "mlp"])
def test_gradients_reach_student_and_projector_not_teacher(projector):
    torch.manual_seed(0)
    m = recipe(3, 4, identity=False, projector=projector, lambda_kl=1.0)
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 4, requires_grad=True)
    s_logits = torch.randn(6, 5, requires_grad=True)
    t_logits = torch.randn(6, 5, requires_grad=True)
    sum(m(step(s, t, s_logits=s_logits, t_logits=t_logits)).values()).backward()
    assert s.grad.abs().sum() > 0 and s_logits.grad.abs().sum() > 0
    params = list(m.proj.parameters())
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert t.grad is None and t_logits.grad is None


# --- (4) one real epoch ---------------------------------------------------------------------------

@pytest.mark.parametrize("knobs, terms", [
    ({}, ("rep", "kl", "ce")),                                          # linear + batchnorm + KL: ImageNet release
    ({"projector": "mlp", "norm": "groupnorm", "lambda_kl": 0.0}, ("rep", "ce")),  # the CIFAR projector
    ({"norm": "l2", "distance": "l2"}, ("rep", "kl", "ce")),
    ({"norm": "none", "alpha": 2.0, "lambda_ce": 0.0, "lambda_kl": 0.0}, ("rep",)),
])
def test_smoke_fit(tmp_path, knobs, terms, one_thread):
    (metrics,) = smoke_fit("recipe", tmp_path, arch="mlp", **knobs)
    for term in terms:
        assert math.isfinite(metrics[f"train/{term}"]), term
    assert math.isfinite(metrics["train/loss"])
