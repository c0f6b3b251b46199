"""NST against a hand computation, its invariances, where its gradients go (real trials:
test_contract.py)."""

import pytest
import torch

from ..method_helpers import make, step

# 2 samples, 2x2 maps; the student has 2 channels, the teacher 1.
S = torch.tensor([[[[2., 0.], [0., 0.]], [[3., 3.], [0., 0.]]],
                  [[[1., 1.], [1., 1.]], [[1., 1.], [1., 1.]]]])
T = torch.tensor([[[[5., 0.], [0., 0.]]],
                  [[[2., 2.], [2., 2.]]]])
# By hand. Each channel L2-normalised over its 4 positions, k(x, y) = (x . y)^2.
# Sample 1: s1 = (1, 0, 0, 0), s2 = (1, 1, 0, 0)/sqrt2, t1 = (1, 0, 0, 0):
#   k(s, s) entries 1, 1, 1/2, 1/2; k(t, t) 1; k(s, t) 1, 1/2.
# Sample 2: every channel (1, 1, 1, 1)/2, every kernel value 1.
# Means over the batch: ss (3 + 4)/8, tt 1, st (1.5 + 2)/4.
NST = 1 + 7 / 8 - 2 * 3.5 / 4  # = 0.125


def loss(s, t, **knobs):
    m = make("nst", 2, 2, s_maps=[s.shape[1:]], t_maps=[t.shape[1:]], **knobs)
    terms = m(step(torch.zeros(len(s), 2), torch.zeros(len(t), 2), s_maps=[s], t_maps=[t]))
    assert set(terms) == {"nst"}
    return terms["nst"]


@pytest.mark.parametrize("weight", [1.0, 50.0])
def test_loss_equals_hand_computation(weight):
    assert loss(S, T, weight=weight).item() == pytest.approx(weight * NST, rel=1e-6)


def test_default_weight_is_50():  # CRD's scripts/run_cifar_distill.sh: -b 50
    assert loss(S, T).item() == pytest.approx(50 * NST, rel=1e-6)


def test_zero_when_the_maps_agree():
    torch.manual_seed(0)
    s = torch.rand(3, 4, 2, 2)
    assert loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-5)


def test_invariant_to_positive_scaling_of_channels_and_their_order():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3, 4, 4), torch.randn(4, 5, 4, 4)
    base = loss(s, t).item()
    scale = torch.rand(4, 3, 1, 1) * 5 + 0.1  # a positive factor per sample and channel
    assert loss(s * scale, t * 2.5).item() == pytest.approx(base, rel=1e-5)
    assert loss(s[:, [1, 2, 0]], t[:, [4, 0, 3, 1, 2]]).item() == pytest.approx(base, rel=1e-5)
    # ...while moving one channel's responses around changes it: the test can tell.
    s2 = s.clone()
    s2[:, 0] = s2[:, 0].flip(-1)
    assert loss(s2, t).item() != pytest.approx(base, rel=1e-3)


def test_gradients_reach_student_maps_not_teacher():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 5, 2, 2, requires_grad=True)  # smaller: the student's map is pooled
    m = make("nst", 2, 2, s_maps=[s.shape[1:]], t_maps=[t.shape[1:]])
    assert list(m.parameters()) == []  # NST adds no module
    m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=[s], t_maps=[t]))["nst"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
