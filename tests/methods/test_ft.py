"""FT against a hand computation, its scale invariance, the frozen paraphraser, its pre-training, real trials."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainables.models import build_model

from ..method_helpers import make, smoke_fit, step

R3 = math.sqrt(3)
ONES = [[1., 1.], [1., 1.]]
# 2 samples, 2x2 maps, 2 channels in both models; rate 0.5 -> a 1-channel factor.
S = torch.tensor([[[[3., 4.], [0., 0.]], ONES], [ONES, ONES]])
T = torch.tensor([[[[0., 1.], [0., 0.]], ONES], [[[2., 2.], [2., 2.]], ONES]])
# With translator and paraphraser encoder made "keep channel 0" (see `identity`), the factors are the
# maps' channel 0. Flattened and L2-normalised: sample 1 (.6, .8, 0, 0) vs (0, 1, 0, 0): |differences|
# sum .8; sample 2 (1, 1, 1, 1)/2 both: 0. Mean over 2 samples x 4 values: .8 / 8.
FT = 0.8 / 8


def identity(seq: nn.Sequential) -> None:
    """Each conv keeps input channel o as output channel o (centre tap 1, bias 0); BN is the identity in
    eval mode with eps 0; LeakyReLU is the identity on the non-negative maps used here."""
    for layer in seq:
        if isinstance(layer, nn.Conv2d):
            layer.weight.data.zero_()
            layer.bias.data.zero_()
            for o in range(min(layer.in_channels, layer.out_channels)):
                layer.weight.data[o, o, 1, 1] = 1.0
        elif isinstance(layer, nn.BatchNorm2d):
            layer.eps = 0.0


def ft(s_shape=(2, 2, 2), t_shape=(2, 2, 2), **knobs):
    m = make("ft", 2, 2, s_maps=[s_shape], t_maps=[t_shape], **knobs)
    identity(m.translator)
    identity(m.paraphraser.encoder)
    return m.eval()


def loss(m, s, t):
    terms = m(step(torch.zeros(len(s), 2), torch.zeros(len(t), 2), s_maps=[s], t_maps=[t]))
    assert set(terms) == {"ft"}
    return terms["ft"]


@pytest.mark.parametrize("weight", [1.0, 500.0])
def test_loss_equals_hand_computation(weight):
    assert loss(ft(weight=weight), S, T).item() == pytest.approx(weight * FT, rel=1e-6)


def test_default_weight_is_200():
    assert loss(ft(), S, T).item() == pytest.approx(200 * FT, rel=1e-6)


def test_attention_factor_as_crd():
    # CRD's factor: channel mean of factor^2, L2-normalised. sqrt3, 2 -> squares 3, 4 -> (.6, .8, 0, 0).
    s = S.clone()
    s[0, 0] = torch.tensor([[R3, 2.], [0., 0.]])
    assert loss(ft(factor="attention", weight=1.0), s, T).item() == pytest.approx(FT, rel=1e-5)


def test_invariant_to_positive_scaling_of_the_factors():
    # Bias-free convs and LeakyReLU are positively homogeneous, and the factors are L2-normalised.
    m = ft(weight=1.0)
    assert loss(m, S * 3.0, T * 0.25).item() == pytest.approx(FT, rel=1e-6)


def test_modules_sized_from_the_last_maps():
    m = make("ft", 2, 2, s_maps=[(8, 8, 8), (256, 8, 8)], t_maps=[(8, 8, 8), (64, 8, 8)])
    assert m.paraphraser.encoder[0].in_channels == 64 and m.paraphraser.encoder[2].out_channels == 32
    assert m.translator[0].in_channels == 256 and m.translator[3].out_channels == 32
    mlp = make("ft", 2, 2, s_maps=[(16,)], t_maps=[(32,), (32,)], rate=0.25)
    assert mlp.translator[3].out_channels == 8


def test_gradients_reach_student_map_and_translator_not_paraphraser_or_teacher():
    torch.manual_seed(0)
    s = torch.randn(4, 3, 4, 4, requires_grad=True)
    t = torch.randn(4, 6, 2, 2, requires_grad=True)  # smaller: the student's factor is pooled
    m = make("ft", 2, 2, s_maps=[s.shape[1:]], t_maps=[t.shape[1:]])
    m(step(torch.zeros(4, 2), torch.zeros(4, 2), s_maps=[s], t_maps=[t]))["ft"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.translator.parameters())
    assert all(p.grad is None and not p.requires_grad for p in m.paraphraser.parameters())
    assert t.grad is None


def test_pretrain_fits_the_paraphraser_to_the_teacher_then_freezes_it():
    torch.manual_seed(0)
    teacher = build_model("mlp", num_classes=3, in_channels=1, image_size=2, hidden=[8]).eval()
    x = torch.randn(16, 1, 2, 2)
    ctx = SimpleNamespace(cfg={"train": {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}}, student=None,
                          teacher=teacher, device=torch.device("cpu"), batches=lambda e: [(x, None, None)])
    m = make("ft", 2, 2, s_maps=[(4,)], t_maps=[(8,)], paraphraser_epochs=30)
    t_before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        t = teacher(x, with_maps=True).maps[-1][:, :, None, None]
        before = nn.functional.mse_loss(m.paraphraser(t), t).item()
    metrics = m.pretrain(ctx)
    assert set(metrics) == {"ft_paraphraser_loss"} and metrics["ft_paraphraser_loss"] < before
    with torch.no_grad():
        assert nn.functional.mse_loss(m.paraphraser(t), t).item() < 0.8 * before
    assert all(not p.requires_grad for p in m.paraphraser.parameters())  # not in the trial's optimizer
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))


@pytest.mark.parametrize("arch", ["mlp", "resnet"])
def test_one_real_epoch(tmp_path, arch):
    (metrics,) = smoke_fit("ft", tmp_path, arch=arch, paraphraser_epochs=1)
    assert "train/ft" in metrics and math.isfinite(metrics["train/ft"])
    assert math.isfinite(metrics["pretrain/ft_paraphraser_loss"])
