"""CC (Peng et al., CRD placement), both forms: hand computation, invariances, gradients (one real epoch:
test_contract.py)."""
import math

import pytest
import torch

from trainables.methods import method_class
from trainables.methods.cc import correlation_matrix

from ..method_helpers import make, step

S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos 0
T = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos 1/sqrt2


def identity_embeddings(m):
    with torch.no_grad():
        for e in (m.embed_s, m.embed_t):
            e.weight.copy_(torch.eye(2))
            e.bias.zero_()
    return m


# RepDistiller's Correlation on 3 samples: d = |S3 - T3| = (1, 0), (2, 1), (1, 2); consecutive products
# summed over dims: (1, 0).(2, 1) = 2, (2, 1).(1, 2) = 4; mean over the 2 pairs: 3.
S3 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
T3 = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, -1.0]])


def test_default_form_is_repdistillers_correlation():
    m = make("cc", 2, 2)
    assert m.knobs.form == "repdistiller" and m.knobs.weight == 0.02 and m.knobs.embed_dim == 128


@pytest.mark.parametrize("weight", [0.02, 1.0])
def test_repdistiller_form_equals_hand_computation(weight):
    m = identity_embeddings(make("cc", 2, 2, embed_dim=2, weight=weight))
    terms = m(step(S3, T3))
    assert set(terms) == {"cc"}
    assert terms["cc"].item() == pytest.approx(weight * 3.0, rel=1e-6)
    # Two samples: one pair, d = (1, 0), (2, 0) -> 2. The embedding applies before the difference.
    assert m(step(S3[:2], T3[:2]))["cc"].item() == pytest.approx(weight * 2.0, rel=1e-6)
    with torch.no_grad():
        m.embed_s.weight.mul_(2.0)
        m.embed_t.weight.mul_(2.0)
    assert m(step(S3, T3))["cc"].item() == pytest.approx(weight * 12.0, rel=1e-6)


def test_repdistiller_form_pairs_consecutive_samples_and_is_zero_for_one_sample():
    m = identity_embeddings(make("cc", 2, 2, embed_dim=2, weight=1.0))
    # Order (1, 0, 2): d = (2, 1), (1, 0), (1, 2): 2 + 1 = 3 / 2, not the 3 of the order (0, 1, 2).
    perm = torch.tensor([1, 0, 2])
    assert m(step(S3[perm], T3[perm]))["cc"].item() == pytest.approx(1.5, rel=1e-6)
    one = m(step(S3[:1], T3[:1]))["cc"]
    assert one.item() == 0.0 and one.requires_grad


def test_paper_form_equals_hand_computation():
    # gamma 0.5, order 1: C = e^-1 (1 + cos). Off-diagonal: e^-1 vs e^-1 (1 + 1/sqrt2); diagonal equal.
    m = identity_embeddings(make("cc", 2, 2, form="paper", embed_dim=2, rbf_gamma=0.5, taylor_order=1))
    terms = m(step(S, T))
    assert set(terms) == {"cc"}
    assert terms["cc"].item() == pytest.approx(0.02 * 2 * (math.exp(-1) / math.sqrt(2)) ** 2 / 4, rel=1e-5)
    # Defaults gamma 0.4, order 2: C = e^-0.8 (1 + 0.8 cos + 0.32 cos^2).
    m = identity_embeddings(make("cc", 2, 2, form="paper", weight=1.0, embed_dim=2))
    c = 1 / math.sqrt(2)
    off = math.exp(-0.8) * (0.8 * c + 0.32 * c * c)
    assert m(step(S, T))["cc"].item() == pytest.approx(2 * off ** 2 / 4, rel=1e-5)


def test_high_order_expansion_is_the_gaussian_rbf_of_unit_vectors():
    torch.manual_seed(0)
    e = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    rbf = torch.exp(-0.4 * torch.cdist(e, e) ** 2)
    assert torch.allclose(correlation_matrix(e, 0.4, 12), rbf, atol=1e-5)


def test_paper_form_invariant_to_batch_order_and_to_rotating_an_embedding():
    torch.manual_seed(0)
    s, t = torch.randn(6, 3), torch.randn(6, 5)
    m = make("cc", 3, 5, form="paper", embed_dim=4)
    base = m(step(s, t))["cc"].item()
    perm = torch.randperm(6)
    assert m(step(s[perm], t[perm]))["cc"].item() == pytest.approx(base, rel=1e-5)
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    with torch.no_grad():
        m.embed_t.weight.copy_(q @ m.embed_t.weight)
        m.embed_t.bias.copy_(q @ m.embed_t.bias)
    assert m(step(s, t))["cc"].item() == pytest.approx(base, rel=1e-4)


@pytest.mark.parametrize("form", ["repdistiller", "paper"])
def test_gradients_reach_student_and_both_embeddings_not_teacher(form):
    torch.manual_seed(0)
    m = make("cc", 3, 5, form=form, embed_dim=4)
    s = torch.randn(6, 3, requires_grad=True)
    t = torch.randn(6, 5, requires_grad=True)
    m(step(s, t))["cc"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert t.grad is None


def test_no_labels_or_logits():
    cls = method_class("cc")
    assert not cls.student_needs_head(cls.Knobs()) and not cls.needs_maps
