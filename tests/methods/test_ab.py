"""AB against a hand computation, its layer weights and sign invariance, gradients, its init stage, real trials."""
import math
from types import SimpleNamespace

import pytest
import torch

from trainables.methods import method_class
from trainables.models import build_model

from ..method_helpers import make, smoke_fit, step

# 2 samples, 1 channel, 2x2 (pre-activation) maps; same shapes, so no connector.
S = torch.tensor([[[[0.5, -2.], [0., 2.]]], [[[-0.5, 3.], [-3., 0.5]]]])
T = torch.tensor([[[[-1., -1.], [1., 1.]]], [[[0., 2.], [0., 2.]]]])
# By hand, margin 1: (s + 1)^2 where t <= 0 and s > -1; (s - 1)^2 where t > 0 and s <= 1; else 0.
# Sample 1: (.5, -1) -> 2.25; (-2, -1) -> 0; (0, 1) -> 1; (2, 1) -> 0.     Sum 3.25.
# Sample 2: (-.5, 0) -> .25;  (3, 2) -> 0;   (-3, 0) -> 0; (.5, 2) -> .25.  Sum .5.
# One layer (weight 2^0 = 1); divided by the batch size 2, times 3/1000.
AB = (3.25 + 0.5) / 2 / 1000 * 3


def ab(s_shapes=((1, 2, 2),), t_shapes=((1, 2, 2),), **knobs):
    return make("ab", 2, 2, s_maps=s_shapes, t_maps=t_shapes, **knobs)


def loss(s_maps, t_maps, **knobs):
    m = ab([f.shape[1:] for f in s_maps], [f.shape[1:] for f in t_maps], **knobs)
    terms = m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=s_maps, t_maps=t_maps))
    assert set(terms) == {"ab"}
    return terms["ab"]


def test_uses_pre_activation_maps():
    assert method_class("ab").preact is True and method_class("ab").needs_maps is True


@pytest.mark.parametrize("weight", [1.0, 4.0])
def test_loss_equals_hand_computation(weight):
    assert loss([S], [T], weight=weight).item() == pytest.approx(weight * AB, rel=1e-6)


def test_main_stage_weight_defaults_to_zero_but_the_term_can_step():
    term = loss([S.clone().requires_grad_()], [T])
    assert term.item() == 0.0 and term.requires_grad


def test_deeper_layers_weigh_more():
    # Stem dropped; two stage pairs of the same maps: weights 1/2 (shallower) and 1 (deepest).
    stem = torch.randn(2, 3, 2, 2)
    assert loss([stem, S, S], [stem, T, T], weight=1.0).item() == pytest.approx(1.5 * AB, rel=1e-6)


def test_teacher_enters_only_through_its_signs():
    torch.manual_seed(0)
    s, t = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    base = loss([s], [t], weight=1.0).item()
    assert loss([s], [t * 7.0], weight=1.0).item() == pytest.approx(base, rel=1e-6)
    # A student on the teacher's side of 0 by at least the margin has nothing left to learn.
    assert loss([torch.where(t > 0, 1.5, -1.5)], [t], weight=1.0).item() == 0.0
    assert loss([torch.where(t > 0, 0.5, -0.5)], [t], weight=1.0).item() > 0


def test_gradients_reach_student_maps_and_connectors_not_teacher():
    torch.manual_seed(0)
    s = [torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 4, 2, 2, requires_grad=True)]
    t = [torch.randn(2, 5, 4, 4, requires_grad=True), torch.randn(2, 6, 2, 2, requires_grad=True)]
    stem = torch.zeros(2, 1, 4, 4)
    m = ab([stem.shape[1:]] + [f.shape[1:] for f in s], [stem.shape[1:]] + [f.shape[1:] for f in t], weight=1.0)
    assert len(m.connectors) == 2 and len(list(m.parameters())) > 0
    m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=[stem] + s, t_maps=[stem] + t))["ab"].backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in s)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert all(f.grad is None for f in t)


def test_init_stage_trains_student_and_connectors_on_the_ab_loss_alone():
    torch.manual_seed(0)
    student = build_model("mlp", num_classes=3, in_channels=1, image_size=2, hidden=[3])
    teacher = build_model("mlp", num_classes=3, in_channels=1, image_size=2, hidden=[4, 4]).eval()
    x = torch.randn(16, 1, 2, 2)
    # A large lr: the AB loss carries a factor 3/1000.
    ctx = SimpleNamespace(cfg={"train": {"lr": 5.0, "momentum": 0.9, "weight_decay": 0.0}}, student=student,
                          teacher=teacher, device=torch.device("cpu"), batches=lambda e: [(x, None, None)])
    m = ab([(3,)], [(4,), (4,)], init_epochs=30)
    t_before = [p.clone() for p in teacher.parameters()]
    c_before = [p.clone() for p in m.parameters()]

    def current():
        with torch.no_grad():
            return m.loss(student(x, with_maps=True, preact=True).maps, teacher(x, with_maps=True, preact=True).maps)

    before = current().item()
    metrics = m.pretrain(ctx)
    assert set(metrics) == {"ab_init_loss"} and math.isfinite(metrics["ab_init_loss"])
    assert current().item() < 0.5 * before
    assert all(torch.equal(a, b) for a, b in zip(t_before, teacher.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(c_before, m.parameters()))
    assert ab(init_epochs=0).pretrain(ctx) == {}


@pytest.mark.parametrize("arch", ["mlp", "resnet"])
def test_one_real_epoch(tmp_path, arch):
    (metrics,) = smoke_fit("ab", tmp_path, arch=arch, init_epochs=1)
    assert metrics["train/ab"] == 0.0  # main-stage weight 0
    assert math.isfinite(metrics["pretrain/ab_init_loss"])
