"""FitNet against a hand computation, its hint tap and regressor shapes (gradients and real trials:
test_contract.py)."""

import pytest
import torch

from trainables.methods.fitnet import ConvReg

from ..method_helpers import make, step

# 2 samples, 1 channel, 2x2 maps.
S = torch.tensor([[[[1., -2.], [3., 0.]]], [[[-1., -1.], [2., 2.]]]])
T = torch.tensor([[[[1., 0.], [1., 0.]]], [[[0., 1.], [2., 2.]]]])
# With the regressor made the identity (1x1 conv weight 1, bias 0; BatchNorm in eval mode with running
# mean 0, var 1, eps 0) it computes relu(s): sample 1 (1, 0, 3, 0) vs (1, 0, 1, 0): squared errors sum 4;
# sample 2 (0, 0, 2, 2) vs (0, 1, 2, 2): 1. Mean over 8 elements: 5/8.
FITNET = 5 / 8


def fitnet(s_shapes=((1, 2, 2),), t_shapes=((1, 2, 2),), **knobs):
    return make("fitnet", 2, 2, s_maps=s_shapes, t_maps=t_shapes, **knobs)


def identity(m):
    m.regressor.conv.weight.data.fill_(1.0)
    m.regressor.conv.bias.data.zero_()
    m.regressor.bn.eps = 0.0
    return m.eval()


@pytest.mark.parametrize("weight", [1.0, 100.0])
def test_loss_equals_hand_computation(weight):
    m = identity(fitnet(weight=weight))
    terms = m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=[S], t_maps=[T]))
    assert set(terms) == {"fitnet"}
    assert terms["fitnet"].item() == pytest.approx(weight * FITNET, rel=1e-6)


def test_default_weight_is_100():
    m = identity(fitnet())
    assert m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=[S], t_maps=[T]))["fitnet"].item() == \
        pytest.approx(100 * FITNET, rel=1e-6)


def test_hint_is_the_middle_map_as_crd_hint_layer_2():
    s = [(1, 8, 8), (2, 8, 8), (3, 4, 4), (4, 2, 2)]
    t = [(5, 8, 8), (6, 8, 8), (7, 4, 4), (8, 2, 2)]
    m = fitnet(s, t)
    assert (m.s_layer, m.t_layer) == (2, 2)
    assert (m.regressor.conv.in_channels, m.regressor.conv.out_channels) == (3, 7)
    m = fitnet(s, t, hint_layer=3)
    assert (m.regressor.conv.in_channels, m.regressor.conv.out_channels) == (4, 8)
    # An MLP pair: hidden [16] against [32, 32] -> the student's only layer, the teacher's second.
    m = fitnet([(16,)], [(32,), (32,)])
    assert (m.s_layer, m.t_layer) == (0, 1)
    with pytest.raises(ValueError, match="hint_layer 1"):
        fitnet([(16,)], [(32,), (32,)], hint_layer=1)


@pytest.mark.parametrize("s_hw,t_hw,kind", [(8, 4, "Conv2d"), (4, 8, "ConvTranspose2d"), (8, 8, "Conv2d"),
                                            (6, 4, "Conv2d"), (3, 8, "ConvTranspose2d"), (1, 1, "Conv2d")])
def test_regressor_outputs_the_teachers_shape(s_hw, t_hw, kind):
    reg = ConvReg((3, s_hw, s_hw), (5, t_hw, t_hw))
    assert type(reg.conv).__name__ == kind
    assert reg(torch.randn(2, 3, s_hw, s_hw)).shape == (2, 5, t_hw, t_hw)
    assert ConvReg((3,), (5,))(torch.randn(4, 3)).shape == (4, 5, 1, 1)  # an MLP layer
