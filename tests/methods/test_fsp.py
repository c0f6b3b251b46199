"""FSP against a hand computation, its matrix definition and invariance, gradients, its init stage, real trials."""
import math
from types import SimpleNamespace

import pytest
import torch

from trainables.methods.fsp import fsp_matrices
from trainables.models import build_model

from ..method_helpers import make, smoke_fit, step

ONES = [[1., 1.], [1., 1.]]
# 2 samples, 2x2 maps; each model: a 1-channel bottom map and a 2-channel top map.
S_BOT = torch.tensor([[[[1., 2.], [3., 4.]]], [ONES]])
S_TOP = torch.tensor([[[[1., 0.], [0., 0.]], ONES], [ONES, [[0., 0.], [0., 0.]]]])
T_BOT = S_BOT.clone()
T_TOP = torch.tensor([[[[0., 0.], [0., 1.]], ONES], [ONES, [[0., 0.], [0., 0.]]]])
# By hand. G[j, i] = mean over the 4 positions of top_j * bottom_i (a 2x1 matrix per sample).
# Sample 1: student (1/4, 10/4), teacher (4/4, 10/4): squared differences .75^2 and 0.
# Sample 2: the same maps in both: 0. Mean over 2 samples x 2 x 1 entries: .5625 / 4.
FSP = 0.75 ** 2 / 4


def fsp(s_shapes, t_shapes, **knobs):
    return make("fsp", 2, 2, s_maps=s_shapes, t_maps=t_shapes, **knobs)


def loss(s_maps, t_maps, **knobs):
    m = fsp([f.shape[1:] for f in s_maps], [f.shape[1:] for f in t_maps], **knobs)
    terms = m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=s_maps, t_maps=t_maps))
    assert set(terms) == {"fsp"}
    return terms["fsp"]


@pytest.mark.parametrize("weight", [1.0, 50.0])
def test_loss_equals_hand_computation(weight):
    assert loss([S_BOT, S_TOP], [T_BOT, T_TOP], weight=weight).item() == pytest.approx(weight * FSP, rel=1e-6)


def test_main_stage_weight_defaults_to_zero_but_the_term_can_step():
    term = loss([S_BOT.clone().requires_grad_(), S_TOP], [T_BOT, T_TOP])
    assert term.item() == 0.0 and term.requires_grad


def test_matrix_is_the_position_mean_of_top_times_bottom():
    torch.manual_seed(0)
    bot, top = torch.randn(3, 2, 4, 4), torch.randn(3, 5, 4, 4)
    (g,) = fsp_matrices([bot, top])
    assert g.shape == (3, 5, 2)
    assert g[1, 3, 0].item() == pytest.approx((top[1, 3] * bot[1, 0]).mean().item(), rel=1e-5)
    # MLP layers (b, h) are one-position maps: the matrix is the outer product of the two layers.
    a, b = torch.randn(3, 2), torch.randn(3, 4)
    (g,) = fsp_matrices([a, b])
    assert torch.allclose(g, b[:, :, None] * a[:, None, :])
    # A larger bottom map is average-pooled to the top's size first.
    big = torch.randn(3, 2, 8, 8)
    (g,) = fsp_matrices([big, top])
    assert torch.allclose(g, fsp_matrices([torch.nn.functional.avg_pool2d(big, 2), top])[0], atol=1e-6)


def test_invariant_to_moving_the_positions_of_all_maps_alike():
    torch.manual_seed(0)
    s = [torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    t = [torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)]
    base = loss(s, t, weight=1.0).item()
    perm = torch.randperm(16)
    moved = [f.flatten(2)[:, :, perm].view_as(f) for f in s]
    assert loss(moved, t, weight=1.0).item() == pytest.approx(base, rel=1e-5)
    # ...while moving one map's positions alone changes it: the test can tell.
    assert loss([moved[0]] + s[1:], t, weight=1.0).item() != pytest.approx(base, rel=1e-3)


def test_stem_counts_and_channels_differing_need_connectors():
    m = fsp([(16, 8, 8), (16, 8, 8), (32, 4, 4)], [(16, 8, 8), (16, 8, 8), (32, 4, 4)])
    assert list(m.parameters()) == []  # same widths: exactly CRD's FSP
    m = fsp([(32, 8, 8), (64, 8, 8), (128, 4, 4)], [(16, 8, 8), (16, 8, 8), (32, 4, 4)])
    assert [c[0].in_channels for c in m.connectors] == [32, 64, 128]
    assert [c[0].out_channels for c in m.connectors] == [16, 16, 32]
    with pytest.raises(ValueError, match="two stage maps"):
        fsp([(16,)], [(32,), (32,)])


def test_gradients_reach_student_maps_and_connectors_not_teacher():
    torch.manual_seed(0)
    s = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True)]
    t = [torch.randn(2, 5, 4, 4, requires_grad=True), torch.randn(2, 6, 2, 2, requires_grad=True)]
    m = fsp([f.shape[1:] for f in s], [f.shape[1:] for f in t], weight=1.0)
    m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=s, t_maps=t))["fsp"].backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s)
    assert len(list(m.parameters())) > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert all(f.grad is None for f in t)


def test_init_stage_trains_the_student_to_match_the_matrices():
    torch.manual_seed(0)
    student = build_model("mlp", num_classes=3, in_channels=1, image_size=2, hidden=[4, 4])
    teacher = build_model("mlp", num_classes=3, in_channels=1, image_size=2, hidden=[4, 4]).eval()
    x = torch.randn(16, 1, 2, 2)
    ctx = SimpleNamespace(cfg={"train": {"lr": 1.0, "momentum": 0.9, "weight_decay": 0.0}}, student=student,
                          teacher=teacher, device=torch.device("cpu"), batches=lambda e: [(x, None, None)])
    m = fsp([(4,), (4,)], [(4,), (4,)], init_epochs=30)
    t_before = [p.clone() for p in teacher.parameters()]

    def current():
        with torch.no_grad():
            return m.loss(student(x, with_maps=True).maps, teacher(x, with_maps=True).maps)

    before = current().item()
    metrics = m.pretrain(ctx)
    assert set(metrics) == {"fsp_init_loss"} and math.isfinite(metrics["fsp_init_loss"])
    assert current().item() < 0.9 * before
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))


def test_one_real_epoch_resnet(tmp_path):
    (metrics,) = smoke_fit("fsp", tmp_path, arch="resnet", init_epochs=1)
    assert metrics["train/fsp"] == 0.0  # main-stage weight 0
    assert math.isfinite(metrics["pretrain/fsp_init_loss"])


def test_mlp_smoke_pair_has_too_few_layers(tmp_path):
    # smoke_fit's MLP student has one hidden layer: no FSP matrix exists, and the trial says so up front.
    with pytest.raises(ValueError, match="two stage maps"):
        smoke_fit("fsp", tmp_path, arch="mlp", init_epochs=1)
