"""CC (Peng et al., CRD placement): hand computation, invariances, gradients, one real epoch."""
import math

import pytest
import torch

from trainables.methods import method_class
from trainables.methods.cc import correlation_matrix

from ..method_helpers import make, smoke_fit, step

S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos 0
T = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos 1/sqrt2


def identity_embeddings(m):
    with torch.no_grad():
        for e in (m.embed_s, m.embed_t):
            e.weight.copy_(torch.eye(2))
            e.bias.zero_()
    return m


def test_loss_equals_hand_computation():
    # gamma 0.5, order 1: C = e^-1 (1 + cos). Off-diagonal: e^-1 vs e^-1 (1 + 1/sqrt2); diagonal equal.
    m = identity_embeddings(make("cc", 2, 2, embed_dim=2, rbf_gamma=0.5, taylor_order=1))
    terms = m(step(S, T))
    assert set(terms) == {"cc"}
    assert terms["cc"].item() == pytest.approx(0.02 * 2 * (math.exp(-1) / math.sqrt(2)) ** 2 / 4, rel=1e-5)
    # Defaults gamma 0.4, order 2: C = e^-0.8 (1 + 0.8 cos + 0.32 cos^2).
    m = identity_embeddings(make("cc", 2, 2, weight=1.0, embed_dim=2))
    c = 1 / math.sqrt(2)
    off = math.exp(-0.8) * (0.8 * c + 0.32 * c * c)
    assert m(step(S, T))["cc"].item() == pytest.approx(2 * off ** 2 / 4, rel=1e-5)


def test_high_order_expansion_is_the_gaussian_rbf_of_unit_vectors():
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    rbf = torch.exp(-0.4 * torch.cdist(e, e) ** 2)
    assert torch.allclose(correlation_matrix(e, 0.4, 12), rbf, atol=1e-5)


def test_invariant_to_batch_order_and_to_rotating_an_embedding():
    torch.manual_seed(0)
    s, t = torch.randn(6, 3), torch.randn(6, 5)
    m = make("cc", 3, 5, embed_dim=4)
    base = m(step(s, t))["cc"].item()
    perm = torch.randperm(6)
    assert m(step(s[perm], t[perm]))["cc"].item() == pytest.approx(base, rel=1e-5)
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    with torch.no_grad():
        m.embed_t.weight.copy_(q @ m.embed_t.weight)
        m.embed_t.bias.copy_(q @ m.embed_t.bias)
    assert m(step(s, t))["cc"].item() == pytest.approx(base, rel=1e-4)


def test_gradients_reach_student_and_both_embeddings_not_teacher():
    torch.manual_seed(0)
    m = make("cc", 3, 5, embed_dim=4)
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 5, requires_grad=True)
    m(step(s, t))["cc"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert t.grad is None


def test_no_labels_or_logits():
    cls = method_class("cc")
    assert not cls.student_needs_head(cls.Knobs()) and not cls.needs_maps


def test_one_real_epoch(tmp_path):
    (metrics,) = smoke_fit("cc", tmp_path, arch="mlp")
    assert math.isfinite(metrics["train/cc"])
