"""RKD (Park et al.): hand computation, similarity-transform invariance (gradients and one real epoch:
test_contract.py)."""
import math

import pytest
import torch

from trainables.methods import method_class

from ..method_helpers import make, step

S = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
T = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])


def huber(x):
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# Distances of the pairs (01, 02, 12), each divided by the mean over the 6 ordered pairs.
MU_S, MU_T = (2 + math.sqrt(2)) / 3, (3 + math.sqrt(5)) / 3
D_S = [1 / MU_S, 1 / MU_S, math.sqrt(2) / MU_S]
D_T = [2 / MU_T, 1 / MU_T, math.sqrt(5) / MU_T]
# 9 entries: each pair twice, the diagonal 0 on both sides.
DIST = 2 * sum(huber(a - b) for a, b in zip(D_S, D_T)) / 9
# Cosine of the angle at each vertex (0, 1, 2). Student: 0, 1/sqrt2, 1/sqrt2; teacher: (2,0),(0,1) -> 0;
# (-2,0),(-2,1) -> 2/sqrt5; (0,-1),(2,-1) -> 1/sqrt5. 27 triplets: each proper one twice, the rest 0 = 0
# (a repeated vertex) or 1 = 1 (j = k).
A_S = [0.0, 1 / math.sqrt(2), 1 / math.sqrt(2)]
A_T = [0.0, 2 / math.sqrt(5), 1 / math.sqrt(5)]
ANGLE = 2 * sum(huber(a - b) for a, b in zip(A_S, A_T)) / 27


def test_loss_equals_hand_computation():
    terms = make("rkd", 2, 2)(step(S, T))
    assert set(terms) == {"dist", "angle"}
    assert terms["dist"].item() == pytest.approx(25 * DIST, rel=1e-5)
    assert terms["angle"].item() == pytest.approx(50 * ANGLE, rel=1e-5)
    scaled = make("rkd", 2, 2, weight=2.0, w_dist=1.0, w_angle=3.0)(step(S, T))
    assert scaled["dist"].item() == pytest.approx(2 * DIST, rel=1e-5)
    assert scaled["angle"].item() == pytest.approx(6 * ANGLE, rel=1e-5)


def test_invariant_to_rotation_translation_and_scale_of_either_space():
    torch.manual_seed(0)
    s, t = torch.randn(7, 5), torch.randn(7, 9)
    m = make("rkd", 5, 9)
    base = m(step(s, t))
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    moved = m(step(3.0 * s @ q + torch.randn(5), t))
    q, _ = torch.linalg.qr(torch.randn(9, 9))
    moved_t = m(step(s, 0.2 * t @ q - 4.0))
    for other in (moved, moved_t):
        for k in ("dist", "angle"):
            assert other[k].item() == pytest.approx(base[k].item(), rel=1e-4, abs=1e-6)


def test_no_labels_or_logits():
    cls = method_class("rkd")
    assert not cls.student_needs_head(cls.Knobs()) and not cls.needs_maps
