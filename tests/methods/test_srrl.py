"""SRRL against a hand computation, its invariance, where its gradients go, and what it needs."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainables.methods import method_class

from ..method_helpers import make, smoke_fit, step

S = torch.tensor([[1.0, 3.0], [3.0, 1.0]])
T = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
T_LOGITS = torch.tensor([[0.0, 2.0, 2.0], [1.0, 1.0, 2.0]])
# Connector weight = I. BatchNorm (batch statistics, eps 1e-5): each column is (1, 3) or (3, 1), mean 2,
# biased variance 1, so it becomes (-c, c) or (c, -c), c = 1/sqrt(1 + 1e-5); ReLU: f = [[0, c], [c, 0]].
C = 1 / math.sqrt(1 + 1e-5)
FM = ((C - 2) ** 2 + (C - 1) ** 2 + 1) / 4          # f - T = [[0, c - 2], [c - 1, -1]]
# Teacher head W = [[1, 0], [0, 1], [1, 1]], b = (0, 0, 1): f -> [[0, c, c + 1], [c, 0, c + 1]].
SR = ((C - 2) ** 2 + (C - 1) ** 2 + (C - 1) ** 2 + 1 + (C - 1) ** 2) / 6


def teacher_ctx(weight, bias):
    fc = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        fc.weight.copy_(weight)
        fc.bias.copy_(bias)
    return SimpleNamespace(teacher=SimpleNamespace(fc=fc))


def srrl(d_s=2, d_t=2, classes=3, identity=True, **knobs):
    m = make("srrl", d_s, d_t, classes=classes, **{"lambda_ce": 0.0, **knobs})
    if identity:
        with torch.no_grad():
            m.connector[0].weight.copy_(torch.eye(d_t, d_s))
    if m.use_sr:
        m.setup(teacher_ctx(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0.0, 0.0, 1.0])))
    return m


# --- (1) the loss against a hand computation ------------------------------------------------------

def test_loss_equals_hand_computation():
    terms = srrl()(step(S, T, t_logits=T_LOGITS))
    assert set(terms) == {"fm", "sr"}
    assert terms["fm"].item() == pytest.approx(FM, rel=1e-6)
    assert terms["sr"].item() == pytest.approx(SR, rel=1e-6)
    weighted = srrl(weight=2.0, lambda_fm=0.5, lambda_sr=3.0)(step(S, T, t_logits=T_LOGITS))
    assert weighted["fm"].item() == pytest.approx(2 * 0.5 * FM, rel=1e-6)
    assert weighted["sr"].item() == pytest.approx(2 * 3.0 * SR, rel=1e-6)


def test_without_the_softmax_term_only_feature_matching_and_no_teacher_head():
    m = srrl(classes=0, lambda_sr=0.0)  # a headless teacher is fine once the sr term is off
    assert set(m(step(S, T))) == {"fm"}
    assert m(step(S, T))["fm"].item() == pytest.approx(FM, rel=1e-6)


def test_what_it_needs():
    cls = method_class("srrl")
    default = cls.Knobs()
    assert cls.uses_teacher_logits(default) and cls.uses_labels(default)
    unsup = cls.Knobs(lambda_ce=0.0, lambda_sr=0.0)
    assert not cls.uses_teacher_logits(unsup) and not cls.uses_labels(unsup)
    # The sr term runs through the teacher's head, not the student's: no student head for it alone.
    assert not cls.student_needs_head(cls.Knobs(lambda_ce=0.0))
    with pytest.raises(ValueError, match="teacher's classifier"):
        make("srrl", 2, 2, classes=0)
    with pytest.raises(ValueError, match="lambda_fm or lambda_sr"):
        make("srrl", 2, 2, classes=3, lambda_fm=0.0, lambda_sr=0.0)


def test_teacher_head_is_copied_not_learned_nor_checkpointed():
    m = srrl()
    assert torch.equal(m.head_weight, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert "head_weight" not in m.state_dict() and "head_bias" not in m.state_dict()
    assert {n for n, _ in m.named_parameters()} == {"connector.0.weight", "connector.1.weight", "connector.1.bias"}


# --- (2) invariance: the connector's BatchNorm removes any shift of the student feature --------

def test_invariant_to_translating_the_student_feature():
    torch.manual_seed(0)
    s, t, tl = torch.randn(8, 3), torch.randn(8, 4).relu(), torch.randn(8, 5)
    m = make("srrl", 3, 4, classes=5, lambda_ce=0.0)
    m.setup(teacher_ctx(torch.randn(5, 4), torch.randn(5)))
    base = m(step(s, t, t_logits=tl))
    moved = m(step(s + torch.tensor([5.0, -3.0, 0.5]), t, t_logits=tl))
    for name in ("fm", "sr"):
        assert moved[name].item() == pytest.approx(base[name].item(), rel=1e-5)
    # ...while a per-dimension rescaling is not a symmetry: the test can tell.
    scaled = m(step(s * torch.tensor([5.0, 0.1, 1.0]), t, t_logits=tl))
    assert scaled["fm"].item() != pytest.approx(base["fm"].item(), rel=1e-3)


# --- (3) gradients --------------------------------------------------------------------------------

def test_gradients_reach_student_and_connector_not_teacher():
    torch.manual_seed(0)
    m = make("srrl", 3, 4, classes=5)
    m.setup(teacher_ctx(torch.randn(5, 4), torch.randn(5)))
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 4, requires_grad=True)
    tl = torch.randn(6, 5, requires_grad=True)
    s_logits = torch.randn(6, 5, requires_grad=True)
    sum(m(step(s, t, y=torch.arange(6) % 5, s_logits=s_logits, t_logits=tl)).values()).backward()
    assert s.grad.abs().sum() > 0 and s_logits.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.connector.parameters())
    assert t.grad is None and tl.grad is None
    assert not m.head_weight.requires_grad and m.head_weight.grad is None


# --- (4) one real epoch ---------------------------------------------------------------------------

@pytest.mark.parametrize("knobs, terms", [
    ({}, ("fm", "sr", "ce")),                                   # the paper's supervised loss
    ({"lambda_ce": 0.0, "lambda_sr": 0.0}, ("fm",)),            # the unsupervised adaptation
])
def test_smoke_fit(tmp_path, knobs, terms, one_thread):
    (metrics,) = smoke_fit("srrl", tmp_path, arch="mlp", **knobs)
    for term in terms:
        assert math.isfinite(metrics[f"train/{term}"]), term
    assert math.isfinite(metrics["train/loss"])
