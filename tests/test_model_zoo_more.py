"""The torchvision teachers of Miles & Mikolajczyk's Table 1 (RegNet-Y, ViT, ConvNeXt): shapes, exact
parameter counts against torchvision's, the feature each returns, and loading torchvision's weights."""
import pytest
import torch
import torchvision

from trainables.models import build_model, model_options

# name -> (image size, feature dim, map shapes without the batch dim). 64x64 where the model takes any
# size; ViT's position embedding is built for 224 (torchvision's weights).
MORE = {
    "regnet_y_16gf": (64, 3024, [(224, 16, 16), (448, 8, 8), (1232, 4, 4), (3024, 2, 2)]),
    "convnext_tiny": (64, 768, [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]),
    "vit_b_16": (224, 768, [(768, 14, 14)] * 4),
}
_cache: dict[str, torch.nn.Module] = {}


@pytest.fixture(autouse=True, scope="module")
def _few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 4))
    yield
    torch.set_num_threads(before)


def _model(name: str) -> torch.nn.Module:
    if name not in _cache:
        torch.manual_seed(0)
        _cache[name] = build_model(name, num_classes=1000, in_channels=3, image_size=MORE[name][0]).eval()
    return _cache[name]


def _input(name: str) -> torch.Tensor:
    s = MORE[name][0]
    return torch.randn(2, 3, s, s, generator=torch.Generator().manual_seed(1))


def _torchvision(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    tv = getattr(torchvision.models, name)(weights=None)
    for m in tv.modules():  # non-trivial BatchNorm statistics, so a missed buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return tv.eval()


@pytest.mark.parametrize("name", list(MORE))
def test_shapes(name):
    _, dim, shapes = MORE[name]
    model = _model(name)
    with torch.no_grad():
        out = model(_input(name), with_maps=True)
        pre = model(_input(name), with_maps=True, preact=True)
        plain = model(_input(name))
    assert model.feature_dim == dim and out.feature.shape == (2, dim) and out.logits.shape == (2, 1000)
    assert [tuple(m.shape[1:]) for m in out.maps] == shapes
    assert all(torch.equal(a, b) for a, b in zip(out.maps, pre.maps))  # no preact version
    assert plain.maps == [] and torch.equal(plain.feature, out.feature)


@pytest.mark.parametrize("name", list(MORE))
def test_param_counts_are_torchvisions(name):
    count = sum(p.numel() for p in _model(name).parameters())
    assert count == sum(p.numel() for p in _torchvision(name).parameters())
    assert count == torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]


@pytest.mark.parametrize("name", list(MORE))
def test_torchvision_weights_load_and_the_feature_is_pre_logits(tmp_path, name):
    tv = _torchvision(name)
    torch.save(tv.state_dict(), tmp_path / "w.pth")
    model = build_model(name, 1000, 3, MORE[name][0], weights=str(tmp_path / "w.pth")).eval()
    x = _input(name)
    with torch.no_grad():
        out = model(x)
        assert torch.allclose(out.logits, tv(x), atol=1e-4)
        head = {"regnet_y_16gf": lambda: tv.fc, "convnext_tiny": lambda: tv.classifier[2],
                "vit_b_16": lambda: tv.heads.head}[name]()
        assert torch.allclose(head(out.feature), out.logits, atol=1e-5)  # the feature is what the head reads
    headless = build_model(name, 0, 3, MORE[name][0], weights=str(tmp_path / "w.pth")).eval()
    assert headless.fc is None
    with torch.no_grad():
        h = headless(x)
    assert h.logits is None and torch.allclose(h.feature, out.feature, atol=1e-5)


def test_the_features_by_hand():
    x = _input("convnext_tiny")
    tv = _torchvision("convnext_tiny")
    model = build_model("convnext_tiny", 1000, 3, 64).eval()
    model.load_state_dict(model.adapt_state_dict(tv.state_dict()))
    with torch.no_grad():  # ConvNeXt: pooled, then the classifier's LayerNorm2d
        assert torch.allclose(model(x).feature, tv.classifier[:2](tv.avgpool(tv.features(x))), atol=1e-5)
    x = _input("vit_b_16")
    tv = _torchvision("vit_b_16")
    model = build_model("vit_b_16", 1000, 3, 224).eval()
    model.load_state_dict(model.adapt_state_dict(tv.state_dict()))
    with torch.no_grad():  # ViT: the class token after the encoder (its final LayerNorm included)
        tokens = tv.encoder(torch.cat([tv.class_token.expand(2, -1, -1), tv._process_input(x)], dim=1))
        assert torch.allclose(model(x).feature, tokens[:, 0], atol=1e-5)


def test_vit_needs_its_image_size():
    assert model_options("vit_b_16") == {"weights": None}
    small = build_model("vit_b_16", 10, 1, 32).eval()  # any multiple of 16, one input channel
    assert small(torch.randn(2, 1, 32, 32)).logits.shape == (2, 10)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model("vit_b_16", 10, 3, 28)
    with pytest.raises(ValueError, match="built for 32x32"):
        small(torch.randn(2, 1, 64, 64))


def test_other_input_channels():
    for name in ("regnet_y_16gf", "convnext_tiny"):
        model = build_model(name, 10, 1, 32).eval()
        assert model(torch.randn(2, 1, 32, 32)).logits.shape == (2, 10)
