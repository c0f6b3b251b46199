"""AT against a hand computation, its invariances, its taps, where its gradients go (real trials:
test_contract.py)."""
import math

import pytest
import torch
import torch.nn.functional as F

from ..method_helpers import make, step

R3 = math.sqrt(3)
# 2 samples, 2x2 maps; the student has 2 channels, the teacher 1.
S = torch.tensor([[[[1., 0.], [0., 0.]], [[1., 0.], [0., 0.]]],
                  [[[1., 1.], [1., 1.]], [[1., -1.], [1., -1.]]]])
T = torch.tensor([[[[0., 1.], [0., 0.]]],
                  [[[R3, 2.], [0., 0.]]]])
# By hand. Attention = mean over channels of f^2, L2-normalised over the 4 positions:
# sample 1: student (1, 0, 0, 0), teacher (0, 1, 0, 0): squared differences sum to 2;
# sample 2: student (1, 1, 1, 1)/2, teacher (3, 4, 0, 0)/5: .01 + .09 + .25 + .25 = .6.
# Mean over 2 samples x 4 positions: 2.6 / 8.
AT = 2.6 / 8


def feats(b=2):
    return torch.zeros(b, 2)


def at(s_maps, t_maps, **knobs):
    return make("at", 2, 2, s_maps=[m.shape[1:] for m in s_maps], t_maps=[m.shape[1:] for m in t_maps], **knobs)


def loss(s_maps, t_maps, **knobs):
    terms = at(s_maps, t_maps, **knobs)(step(feats(len(s_maps[0])), feats(len(t_maps[0])), s_maps=s_maps,
                                             t_maps=t_maps))
    assert set(terms) == {"at"}
    return terms["at"]


@pytest.mark.parametrize("weight", [1.0, 1000.0])
def test_loss_equals_hand_computation(weight):
    assert loss([S], [T], weight=weight).item() == pytest.approx(weight * AT, rel=1e-6)


def test_default_weight_is_1000_and_scale_multiplies():
    assert loss([S], [T]).item() == pytest.approx(1000 * AT, rel=1e-6)
    assert loss([S], [T], scale=2.0).item() == pytest.approx(2000 * AT, rel=1e-6)


def test_taps_skip_the_stem_and_sum_the_stages():
    stem_s, stem_t = torch.randn(2, 3, 2, 2), torch.randn(2, 4, 2, 2)
    assert loss([stem_s, S], [stem_t, T], weight=1.0).item() == pytest.approx(AT, rel=1e-6)
    assert loss([stem_s, S, S], [stem_t, T, T], weight=1.0).item() == pytest.approx(2 * AT, rel=1e-6)


def test_different_numbers_of_stages_pair_the_deepest():
    # An MLP-like pair: one student map against the teacher's last (its first counts as the stem).
    other = torch.randn(2, 1, 2, 2)
    assert loss([S], [other, T], weight=1.0).item() == pytest.approx(AT, rel=1e-6)


def test_larger_map_is_pooled_to_the_smaller():
    big = torch.rand(2, 3, 4, 4)
    assert loss([big], [T], weight=1.0).item() == pytest.approx(
        loss([F.avg_pool2d(big, 2)], [T], weight=1.0).item(), rel=1e-6)


def test_invariant_to_channel_order_and_positive_scaling_of_a_map():
    torch.manual_seed(0)
    s, t = torch.randn(4, 3, 4, 4), torch.randn(4, 5, 4, 4)
    base = loss([s], [t]).item()
    assert loss([s[:, [2, 0, 1]]], [t[:, [4, 3, 2, 1, 0]]]).item() == pytest.approx(base, rel=1e-5)
    per_sample = torch.tensor([0.5, 2.0, 7.0, 1.0])[:, None, None, None]
    assert loss([s * per_sample], [t * 3.0]).item() == pytest.approx(base, rel=1e-5)
    # ...while scaling one channel alone changes it: the test can tell.
    s2 = s.clone()
    s2[:, 0] *= 5
    assert loss([s2], [t]).item() != pytest.approx(base, rel=1e-3)


def test_mlp_layers_are_single_position_maps():
    # (b, h) is (b, h, 1, 1): the attention map is 1 for every sample, so the loss is 0.
    s, t = torch.rand(3, 4) + 0.1, torch.rand(3, 6) + 0.1
    assert loss([s], [t]).item() == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_student_maps_not_teacher():
    torch.manual_seed(0)
    s = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True)]
    t = [torch.randn(2, 5, 4, 4, requires_grad=True), torch.randn(2, 6, 2, 2, requires_grad=True)]
    m = at([torch.zeros(2, 1, 8, 8)] + s, [torch.zeros(2, 1, 8, 8)] + t)
    assert list(m.parameters()) == []  # AT adds no module
    loss([torch.zeros(2, 1, 8, 8)] + s, [torch.zeros(2, 1, 8, 8)] + t).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s)
    assert all(f.grad is None for f in t)
