"""VID against a hand computation and its variance parametrisation (gradients and real trials:
test_contract.py)."""
import math

import pytest
import torch

from ..method_helpers import make, step

# 2 samples, 1 channel, 2x2 maps.
S = torch.tensor([[[[1., 2.], [3., 4.]]], [[[0., 0.], [0., 0.]]]])
T = torch.tensor([[[[1., 2.], [3., 2.]]], [[[1., 1.], [1., 1.]]]])
# With every 1x1 conv weight 1 the regressor is relu(relu(s)) = s (s >= 0). Squared errors: sample 1
# (0, 0, 0, 4), sample 2 (1, 1, 1, 1); mean 8/8 = 1. With variance v the loss is 0.5 * (1/v + log v).


def vid(s_shapes=((1, 2, 2),), t_shapes=((1, 2, 2),), **knobs):
    return make("vid", 2, 2, s_maps=s_shapes, t_maps=t_shapes, **knobs)


def identity_regressor(m):
    for layer in m.regressors[0]:
        if isinstance(layer, torch.nn.Conv2d):
            layer.weight.data.fill_(1.0)


@pytest.mark.parametrize("init_var", [5.0, 1.0, 0.5])
def test_loss_equals_hand_computation(init_var):
    m = vid(init_var=init_var)
    identity_regressor(m)
    assert m.variances()[0].tolist() == pytest.approx([init_var], rel=1e-5)
    terms = m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=[S], t_maps=[T]))
    assert set(terms) == {"vid"}
    expected = 1.0 * 0.5 * (1 / init_var + math.log(init_var))  # default weight 1 (CRD's -b 1)
    assert terms["vid"].item() == pytest.approx(expected, rel=1e-5)


def test_default_is_weight_1_and_variance_5():
    m = vid()
    identity_regressor(m)
    loss = m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=[S], t_maps=[T]))["vid"]
    assert loss.item() == pytest.approx(0.5 * (0.2 + math.log(5)), rel=1e-5)


def test_modules_sized_from_the_maps_with_the_teachers_width_inside():
    m = vid([(16, 8, 8), (3, 8, 8), (4, 4, 4)], [(16, 8, 8), (5, 8, 8), (6, 4, 4)])  # stems dropped
    assert len(m.regressors) == 2
    assert [(r[0].in_channels, r[0].out_channels, r[4].out_channels) for r in m.regressors] == [(3, 5, 5), (4, 6, 6)]
    assert [a.shape[0] for a in m.log_scales] == [5, 6]
