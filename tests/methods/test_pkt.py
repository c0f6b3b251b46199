"""PKT (Passalis & Tefas): hand computation, rotation/scale invariance (gradients and one real epoch:
test_contract.py)."""
import math

import pytest
import torch

from trainables.methods import method_class

from ..method_helpers import make, step

# Student rows orthogonal: kernel (cos + 1)/2 = [[1, .5], [.5, 1]] -> each row (2/3, 1/3).
# Teacher rows parallel (different norms): kernel all 1 -> each row (1/2, 1/2).
S = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
T = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
ROW = 0.5 * math.log(0.5 / (2 / 3)) + 0.5 * math.log(0.5 / (1 / 3))
PKT = 2 * ROW / 4  # both rows alike, mean over the b^2 = 4 entries


def test_loss_equals_hand_computation():
    terms = make("pkt", 2, 2)(step(S, T))
    assert set(terms) == {"pkt"}
    assert terms["pkt"].item() == pytest.approx(30000 * PKT, rel=1e-5)
    assert make("pkt", 2, 2)(step(T, T))["pkt"].item() == pytest.approx(0.0, abs=1e-3)


def test_invariant_to_orthogonal_transform_and_per_sample_scale():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 10)
    m = make("pkt", 4, 10, weight=1.0)
    base = m(step(s, t))["pkt"].item()
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    scale = torch.rand(6, 1) + 0.5
    assert m(step(scale * s @ q, t))["pkt"].item() == pytest.approx(base, rel=1e-4)
    q, _ = torch.linalg.qr(torch.randn(10, 10))
    assert m(step(s, t @ q * 7.0))["pkt"].item() == pytest.approx(base, rel=1e-4)


def test_no_labels_or_logits():
    cls = method_class("pkt")
    assert not cls.student_needs_head(cls.Knobs()) and not cls.needs_maps
