"""CoSS against a hand computation, its invariance, and where its gradients go."""
import math

import pytest
import torch

from trainables.methods import method_class
from trainables.models import Output

T = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
S = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
# By hand. Rows: t -> (.6, .8), (0, 1); s -> (.8, .6), (0, 1); cosines .96 and 1.
CO = -(0.96 + 1.0) / 2
# Columns (each feature dimension over the batch): t -> (1, 0), (4, 1)/sqrt(17); s -> (1, 0), (3, 2)/sqrt(13).
SS = -(1.0 + 14.0 / math.sqrt(17 * 13)) / 2


def coss(dataset="cifar100", **knobs):
    cls = method_class("coss")
    return cls(cls.Knobs.model_validate(knobs), student_dim=2, teacher_dim=2, dataset=dataset)


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("beta", [1.0, 50.0])
def test_loss_equals_hand_computation(lam, beta):
    terms = coss(**{"lambda": lam, "beta": beta})(Output(S, None), Output(T, None), torch.zeros(2, dtype=torch.long))
    assert set(terms) == {"co", "ss"}
    assert terms["co"].item() == pytest.approx(beta * CO, rel=1e-6)
    assert terms["ss"].item() == pytest.approx(beta * lam * SS, rel=1e-6)


def test_cifar_default_is_plain_cosine_times_50_and_imagenet_uses_temperatures():
    y = torch.zeros(2, dtype=torch.long)
    cifar = coss()(Output(S, None), Output(T, None), y)
    assert sum(cifar.values()).item() == pytest.approx(50 * (CO + SS), rel=1e-6)
    imnet = coss(dataset="imagenet")(Output(S, None), Output(T, None), y)  # post: / (0.07 * 0.1), beta 1
    assert sum(imnet.values()).item() == pytest.approx((CO + SS) / (0.07 * 0.1), rel=1e-5)


def test_space_term_is_invariant_to_scaling_a_feature_dimension():
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    m = coss(**{"lambda": 1.0, "beta": 1.0})
    y = torch.zeros(8, dtype=torch.long)
    base = m(Output(s, None), Output(t, None), y)["ss"]
    scale = torch.tensor([1.0, 7.0, 0.1, 1.0, 3.0])
    assert m(Output(s * scale, None), Output(t, None), y)["ss"].item() == pytest.approx(base.item(), rel=1e-5)
    # ...while the per-sample cosine term does change: the test can tell the two apart.
    assert m(Output(s * scale, None), Output(t, None), y)["co"].item() != pytest.approx(
        m(Output(s, None), Output(t, None), y)["co"].item(), rel=1e-3)


def test_gradients_reach_student_and_projector_not_teacher():
    torch.manual_seed(0)
    cls = method_class("coss")
    m = cls(cls.Knobs(), student_dim=3, teacher_dim=4, dataset="cifar100")  # dims differ: a projector
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 4, requires_grad=True)
    loss = sum(m(Output(s, None), Output(t.detach(), None), torch.zeros(6, dtype=torch.long)).values())
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.proj.parameters())
    assert t.grad is None


def test_scale_and_cross_entropy_terms():
    cls = method_class("coss")
    m = cls(cls.Knobs.model_validate({"beta": 1.0, "scale": 2.0, "lambda_ce": 0.5}), 2, 2, "cifar100")
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    terms = m(Output(S, logits), Output(T, None), y)
    assert terms["co"].item() == pytest.approx(2 * CO, rel=1e-6)
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert terms["ce"].item() == pytest.approx(0.5 * ce, rel=1e-6)
