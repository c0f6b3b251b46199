"""SP (Tung & Mori): hand computation, rotation/scale invariance, gradients, real epochs (the default
placement's gradients: test_contract.py)."""
import math

import pytest
import torch

from trainables.methods import method_class

from ..method_helpers import make, smoke_fit, step

# Student map: G = I. Teacher map: f f^T = [[1, 1], [1, 2]] -> rows (1, 1)/sqrt2, (1, 2)/sqrt5.
S_MAP = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
T_MAP = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
r2, r5 = math.sqrt(2), math.sqrt(5)
SP = ((1 / r2 - 1) ** 2 + (1 / r2) ** 2 + (1 / r5) ** 2 + (2 / r5 - 1) ** 2) / 4  # / b^2


def run(m, s_map, t_map):
    b = s_map.shape[0]
    return m(step(torch.zeros(b, 2), torch.zeros(b, 2), s_maps=[s_map], t_maps=[t_map]))


def test_loss_equals_hand_computation_on_flat_and_conv_maps():
    m = make("sp", 2, 2, s_maps=[(2,)], t_maps=[(2,)])
    terms = run(m, S_MAP, T_MAP)
    assert set(terms) == {"sp"}
    assert terms["sp"].item() == pytest.approx(3000 * SP, rel=1e-5)
    conv = run(make("sp", 2, 2, weight=1.0), S_MAP.view(2, 2, 1, 1), T_MAP.view(2, 1, 1, 2))
    assert conv["sp"].item() == pytest.approx(SP, rel=1e-5)


def test_uses_the_last_map_only():
    m = make("sp", 2, 2, weight=1.0)
    terms = m(step(torch.zeros(2, 2), torch.zeros(2, 2), s_maps=[torch.randn(2, 5), S_MAP],
                   t_maps=[torch.randn(2, 7), T_MAP]))
    assert terms["sp"].item() == pytest.approx(SP, rel=1e-5)


def test_invariant_to_orthogonal_transform_and_scale_of_either_map():
    torch.manual_seed(0)
    s, t = torch.randn(6, 8, 2, 2), torch.randn(6, 4, 3, 3)
    m = make("sp", 2, 2, weight=1.0)
    base = run(m, s, t)["sp"].item()
    q, _ = torch.linalg.qr(torch.randn(32, 32))
    rotated = (s.flatten(1) @ q).view_as(s)
    assert run(m, rotated * 5.0, t)["sp"].item() == pytest.approx(base, rel=1e-4)
    q, _ = torch.linalg.qr(torch.randn(36, 36))
    assert run(m, s, 0.1 * (t.flatten(1) @ q).view_as(t))["sp"].item() == pytest.approx(base, rel=1e-4)


def test_needs_maps_and_no_labels_or_logits():
    cls = method_class("sp")
    assert cls.needs_maps and not cls.student_needs_head(cls.Knobs())


@pytest.mark.parametrize("arch", ["mlp", "resnet"])
def test_one_real_epoch(tmp_path, arch):
    (metrics,) = smoke_fit("sp", tmp_path, arch=arch)
    assert math.isfinite(metrics["train/sp"]) and metrics["train/sp"] > 0


# --- `at: pooled`: RRKD's SPKD on the pooled embedding (rrkd.ipynb at aa4298b, cell 14, LitSPDistiller) ----

def test_default_is_the_last_map():
    assert method_class("sp").Knobs().at == "map"
    with pytest.raises(ValueError):
        method_class("sp").Knobs(at="logits")


def test_pooled_loss_equals_hand_computation_and_ignores_the_maps():
    torch.manual_seed(0)
    m = make("sp", 2, 2, weight=1.0, at="pooled")
    # the pooled features are the hand-computed pair; the maps are noise that must not count
    terms = m(step(S_MAP, T_MAP, s_maps=[torch.randn(2, 4, 2, 2)], t_maps=[torch.randn(2, 3, 2, 2)]))
    assert set(terms) == {"sp"}
    assert terms["sp"].item() == pytest.approx(SP, rel=1e-5)
    # and the map placement on the same step compares the maps instead
    mapped = make("sp", 2, 2, weight=1.0)(step(S_MAP, T_MAP, s_maps=[T_MAP], t_maps=[T_MAP]))
    assert mapped["sp"].item() == pytest.approx(0.0, abs=1e-7)
    # the weight scales it (CRD's default 3000)
    assert make("sp", 2, 2, at="pooled")(step(S_MAP, T_MAP))["sp"].item() == pytest.approx(3000 * SP, rel=1e-5)


def test_pooled_is_the_notebooks_loss():
    """LitSPDistiller.step: (z z^T) row-L2-normalised for each side, then F.mse_loss(teacher_rel, student_rel)."""
    torch.manual_seed(1)
    s, t = torch.randn(8, 256), torch.relu(torch.randn(8, 512))
    t_rel, s_rel = t.mm(t.T), s.mm(s.T)
    t_rel = t_rel / t_rel.norm(dim=1, keepdim=True)
    s_rel = s_rel / s_rel.norm(dim=1, keepdim=True)
    expected = torch.nn.functional.mse_loss(t_rel, s_rel)
    got = make("sp", 256, 512, weight=1.0, at="pooled")(step(s, t))["sp"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pooled_gradients_reach_the_student_feature_not_the_teacher():
    torch.manual_seed(0)
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 9, requires_grad=True)
    s_map = torch.randn(4, 3, 2, 2, requires_grad=True)
    make("sp", 6, 9, at="pooled")(step(s, t, s_maps=[s_map], t_maps=[torch.randn(4, 5, 2, 2)]))["sp"].backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None and s_map.grad is None


def test_pooled_one_real_epoch(tmp_path):
    (metrics,) = smoke_fit("sp", tmp_path, arch="resnet", at="pooled")
    assert math.isfinite(metrics["train/sp"]) and metrics["train/sp"] > 0
