import pytest
import torch

from trainables.models import build_model, cifar_resnet, mlp, model_options
from trainables.registry import MODELS

# The models whose map layout this file knows; the rest of the zoo is tested in test_model_zoo.py.
OWN = [n for n in MODELS.names() if MODELS.get(n).__module__ in (cifar_resnet.__name__, mlp.__name__)]


def _input(name: str) -> torch.Tensor:
    return torch.randn(2, 1, 8, 8) if name == "mlp" else torch.randn(2, 3, 32, 32)


def _build(name: str, num_classes: int = 100):
    shape = _input(name).shape
    return build_model(name, num_classes=num_classes, in_channels=shape[1], image_size=shape[2])


def _expected_maps(name: str, model) -> list[tuple]:
    if name == "mlp":
        return [(2, lin.out_features) for lin in model.linears]
    stem = model.conv1.out_channels
    widths = [stage[-1].conv2.out_channels for stage in model.stages]
    return [(2, stem, 32, 32), (2, widths[0], 32, 32), (2, widths[1], 16, 16), (2, widths[2], 8, 8)]


@pytest.mark.parametrize("name", OWN)
def test_shapes_and_preact(name):
    torch.manual_seed(0)
    model = _build(name).eval()
    x = _input(name)
    with torch.no_grad():
        post = model(x, with_maps=True)
        pre = model(x, with_maps=True, preact=True)
        plain = model(x)
    assert post.feature.shape == (2, model.feature_dim)
    assert post.logits.shape == (2, 100)
    assert plain.maps == []
    assert [tuple(m.shape) for m in post.maps] == _expected_maps(name, model)
    assert [m.shape for m in pre.maps] == [m.shape for m in post.maps]
    assert torch.equal(pre.feature, post.feature) and torch.equal(pre.logits, post.logits)
    assert torch.equal(plain.logits, post.logits)
    for m in post.maps:
        assert (m >= 0).all()
    # The resnet stem has no pre-activation map (as in CRD); every stage map does.
    staged = pre.maps if name == "mlp" else pre.maps[1:]
    for m in staged:
        assert (m < 0).any()


@pytest.mark.parametrize("name,count", [
    ("resnet8x4", 1_233_540), ("resnet32x4", 7_433_860), ("resnet20", 278_324), ("resnet56", 861_620),
])
def test_crd_param_counts(name, count):
    assert sum(p.numel() for p in _build(name).parameters()) == count


@pytest.mark.parametrize("name", ["resnet8", "mlp"])
def test_headless(name):
    model = _build(name, num_classes=0)
    assert model.fc is None
    out = model(_input(name))
    assert out.logits is None and out.feature.shape == (2, model.feature_dim)


@pytest.mark.parametrize("name", ["resnet8", "mlp"])
def test_gradient_reaches_first_layer(name):
    model = _build(name, num_classes=0)
    model(_input(name)).feature.sum().backward()
    first = model.conv1.weight if name != "mlp" else model.linears[0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_build_model_rejects_unknown_option():
    with pytest.raises(ValueError, match="'widht'"):
        build_model("resnet20", num_classes=10, in_channels=3, image_size=32, widht=2)
    with pytest.raises(ValueError, match="'depth'"):
        build_model("mlp", num_classes=10, in_channels=1, image_size=8, depth=3)


def test_mlp_options():
    assert model_options("mlp") == {"hidden": (256,), "dropout": 0.0, "batchnorm": False}
    assert model_options("resnet20") == {}
    model = build_model("mlp", 10, 1, 8, hidden=[32, 16], dropout=0.1, batchnorm=True).eval()
    out = model(torch.randn(2, 1, 8, 8), with_maps=True)
    assert model.feature_dim == 16 and [m.shape for m in out.maps] == [(2, 32), (2, 16)]
    with pytest.raises(ValueError, match="hidden layer"):
        build_model("mlp", 10, 1, 8, hidden=[])


def test_resnet_other_input_size():
    out = _build("resnet8")(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 100)
