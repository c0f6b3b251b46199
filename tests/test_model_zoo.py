"""The model zoo beyond the CIFAR ResNets and the MLP: CRD's CIFAR zoo, RRKD's models, torchvision's
ImageNet models. Shapes of every output, exact parameter counts, checkpoint loading, no downloads."""
import socket
import warnings

import pytest
import torch
import torchvision

from trainables.models import build_model, model_options

# name -> (input channels/size, classes, feature dim, map shapes without the batch dim, maps with a preact
# version). CIFAR and RRKD models on 32x32, ImageNet ones on 64x64 (enough to check them, and fast),
# MNIST on 28x28.
C32, I64 = (3, 32), (3, 64)
_WRN1 = [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
_WRN2 = [(16, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8)]
_VGG = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)]
_R18 = [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
ZOO = {
    "wrn_16_1": (C32, 100, 64, _WRN1, [1, 2, 3]),
    "wrn_16_2": (C32, 100, 128, _WRN2, [1, 2, 3]),
    "wrn_40_1": (C32, 100, 64, _WRN1, [1, 2, 3]),
    "wrn_40_2": (C32, 100, 128, _WRN2, [1, 2, 3]),
    "vgg8": (C32, 100, 512, _VGG, [1, 2, 3, 4]),
    "vgg11": (C32, 100, 512, _VGG, [1, 2, 3, 4]),
    "vgg13": (C32, 100, 512, _VGG, [1, 2, 3, 4]),
    "vgg16": (C32, 100, 512, _VGG, [1, 2, 3, 4]),
    "vgg19": (C32, 100, 512, _VGG, [1, 2, 3, 4]),
    "MobileNetV2": (C32, 100, 1280, [(16, 16, 16), (12, 16, 16), (16, 8, 8), (48, 4, 4), (160, 2, 2)], []),
    "ShuffleV1": (C32, 100, 960, [(24, 32, 32), (240, 16, 16), (480, 8, 8), (960, 4, 4)], [1, 2, 3]),
    "ShuffleV2": (C32, 100, 1024, [(24, 32, 32), (116, 16, 16), (232, 8, 8), (464, 4, 4)], [1, 2, 3]),
    "ResNet18": (C32, 100, 512, [(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)],
                 [1, 2, 3, 4]),
    "ResNet50": (C32, 100, 2048, [(64, 32, 32), (256, 32, 32), (512, 16, 16), (1024, 8, 8), (2048, 4, 4)],
                 [1, 2, 3, 4]),
    "resnet9x0.5": (C32, 100, 256, [(32, 32, 32), (32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4)],
                    [1, 2, 3, 4]),
    "resnet18": (I64, 1000, 512, _R18, [0, 1, 2, 3]),
    "resnet34": (I64, 1000, 512, _R18, [0, 1, 2, 3]),
    "resnet50": (I64, 1000, 2048, [(256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)], [0, 1, 2, 3]),
    "efficientnet_b0": (I64, 1000, 1280, [(24, 16, 16), (40, 8, 8), (112, 4, 4), (1280, 2, 2)], []),
    "mobilenet_v2": (I64, 1000, 1280, [(24, 16, 16), (32, 8, 8), (96, 4, 4), (1280, 2, 2)], []),
    "mobilenet_v3_large": (I64, 1000, 960, [(24, 16, 16), (40, 8, 8), (112, 4, 4), (960, 2, 2)], []),
    "ae_encoder": ((1, 28), 10, 64, [(128,), (64,)], [0]),
}
IMAGENET = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_large"]

_cache: dict[str, torch.nn.Module] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Batches of two gain nothing from more threads, and on a busy machine OpenMP's waiting threads
    multiply the time; restored after this file."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(name: str) -> torch.nn.Module:
    """One instance per model for the whole file (building the big ones is the slow part)."""
    if name not in _cache:
        (c, s), n, *_ = ZOO[name]
        torch.manual_seed(0)
        _cache[name] = build_model(name, num_classes=n, in_channels=c, image_size=s).eval()
    return _cache[name]


def _input(name: str) -> torch.Tensor:
    (c, s), *_ = ZOO[name]
    return torch.randn(2, c, s, s, generator=torch.Generator().manual_seed(1))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(ZOO))
def test_shapes_and_preact(name):
    _, n, dim, shapes, with_preact = ZOO[name]
    model, x = _model(name), _input(name)
    with torch.no_grad():
        post = model(x, with_maps=True)
        pre = model(x, with_maps=True, preact=True)
    assert model.feature_dim == dim and post.feature.shape == (2, dim)
    assert post.logits.shape == (2, n)
    assert [tuple(m.shape[1:]) for m in post.maps] == shapes
    assert [m.shape for m in pre.maps] == [m.shape for m in post.maps]
    assert torch.equal(pre.feature, post.feature) and torch.equal(pre.logits, post.logits)
    for i, (a, b) in enumerate(zip(post.maps, pre.maps)):
        assert torch.equal(a, b) != (i in with_preact), f"map {i}"
        if i in with_preact and not name.startswith("wrn"):
            assert (a >= 0).all() and (b < 0).any()  # post-ReLU vs pre-ReLU


def test_plain_forward_has_no_maps():
    out = _model("resnet9x0.5")(_input("resnet9x0.5"))
    assert out.maps == [] and out.logits.shape == (2, 100)


def test_wrn_preact_maps_are_the_next_batchnorm():
    """CRD's WRN preact maps: each stage output through the BN that opens the next stage (or the last BN)."""
    model, x = _model("wrn_16_1"), _input("wrn_16_1")
    with torch.no_grad():
        post = model(x, with_maps=True).maps
        pre = model(x, with_maps=True, preact=True).maps
        bns = [model.block2.layer[0].bn1, model.block3.layer[0].bn1, model.bn1]
        for i, bn in enumerate(bns, start=1):
            assert torch.allclose(pre[i], bn(post[i]))


# Exact counts with 100 classes (checked against RepDistiller's definitions) and the CRD zoo's published
# rounded figures (millions).
@pytest.mark.parametrize("name,count,published", [
    ("wrn_40_2", 2_255_156, 2.26), ("wrn_16_2", 703_284, 0.70), ("wrn_40_1", 569_780, 0.57),
    ("wrn_16_1", 180_916, None), ("vgg13", 9_462_180, 9.46), ("vgg8", 3_965_028, 3.96),
    ("vgg11", 9_277_284, None), ("vgg16", 14_774_436, None), ("vgg19", 20_086_692, None),
    ("MobileNetV2", 812_836, 0.81), ("ShuffleV1", 949_258, 0.95), ("ShuffleV2", 1_355_528, 1.36),
    ("ResNet18", 11_220_132, None), ("ResNet50", 23_705_252, 23.71), ("resnet9x0.5", 1_252_100, None),
])
def test_crd_param_counts(name, count, published):
    assert _params(_model(name)) == count
    if published is not None:
        assert abs(count / 1e6 - published) < 0.01  # the paper rounds some up (2.255 M), some down (3.965 M)


@pytest.mark.parametrize("name,count", [
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
    ("efficientnet_b0", 5_288_548), ("mobilenet_v2", 3_504_872), ("mobilenet_v3_large", 5_483_032),
])
def test_imagenet_param_counts_are_torchvisions(name, count):
    assert _params(_model(name)) == count
    assert torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"] == count


@pytest.mark.parametrize("name", ["wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "resnet9x0.5",
                                  "resnet18", "mobilenet_v2", "mobilenet_v3_large", "ae_encoder"])
def test_headless(name):
    (c, s), _, dim, shapes, _ = ZOO[name]
    model = build_model(name, num_classes=0, in_channels=c, image_size=s).eval()
    assert model.fc is None
    out = model(_input(name), with_maps=True)
    assert out.logits is None and out.feature.shape == (2, dim) and len(out.maps) == len(shapes)


def test_other_input_channels_and_sizes():
    assert build_model("wrn_16_1", 10, 1, 32)(torch.randn(2, 1, 32, 32)).logits.shape == (2, 10)
    assert build_model("resnet18", 10, 1, 32)(torch.randn(2, 1, 32, 32)).logits.shape == (2, 10)
    # CRD's VGG max-pools before its last block only on 64x64 input (TinyImageNet)
    maps = build_model("vgg8", 200, 3, 64).eval()(torch.randn(2, 3, 64, 64), with_maps=True).maps
    assert [tuple(m.shape[2:]) for m in maps] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]


def test_gradient_reaches_the_stem():
    model = build_model("resnet9x0.5", 10, 3, 32)
    model(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    assert model.conv1.weight.grad.abs().sum() > 0


def test_head_dropout_leaves_the_feature_intact():
    """mobilenet_v2 / efficientnet_b0 keep torchvision's Dropout before the classifier, not on the feature."""
    model = build_model("mobilenet_v2", 10, 3, 32).train()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert torch.allclose(a.feature, b.feature) and not torch.allclose(a.logits, b.logits)


def test_options():
    assert model_options("wrn_40_2") == {} and model_options("ResNet50") == {}
    assert model_options("resnet18") == {"weights": None}
    assert model_options("ae_encoder") == {"hidden": (128,), "embedding_dim": 64, "dropout": 0.5,
                                           "nonlinear_head": False}
    with pytest.raises(ValueError, match="'weights'"):
        build_model("wrn_16_1", 10, 3, 32, weights="x.pth")


# --- RRKD's MNIST models -------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden,dim,head,encoder,total", [
    ([128], 64, False, 108_736, None),        # AE-64 teacher ("109K")
    ([64], 32, False, 52_320, None),          # AE-32 student ("52K")
    ([1200], 1200, True, 2_383_200, 2_395_210),  # MLP-1200 teacher ("2M" with its head)
    ([32], 32, True, 26_176, 26_506),         # MLP-32 student ("26K")
])
def test_rrkd_mnist_sizes(hidden, dim, head, encoder, total):
    opts = {"hidden": hidden, "embedding_dim": dim, "nonlinear_head": head}
    assert _params(build_model("ae_encoder", 0, 1, 28, **opts)) == encoder
    if total is not None:
        assert _params(build_model("ae_encoder", 10, 1, 28, **opts)) == total
        # the existing mlp has the same sizes (its feature is the last hidden layer after its ReLU)
        mlp = build_model("mlp", 10, 1, 28, hidden=[*hidden, dim], dropout=0.5)
        assert _params(mlp) == total


def test_ae_encoder_embedding_is_linear_and_head_is_rrkds():
    model = build_model("ae_encoder", 10, 1, 28, hidden=[32], embedding_dim=32, nonlinear_head=True).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x, with_maps=True)
        assert torch.equal(out.maps[-1], out.feature) and (out.feature < 0).any()  # no activation
        linear = model.fc[-1]
        assert torch.allclose(out.logits, linear(torch.relu(out.feature)))  # Dropout -> ReLU -> Linear
    with pytest.raises(ValueError, match="hidden layer"):
        build_model("ae_encoder", 10, 1, 28, hidden=[])


# --- Checkpoints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,keys,head", [
    ("wrn_40_2", ["block1.layer.0.convShortcut.weight", "block3.layer.5.bn2.running_var", "bn1.weight"], "fc"),
    ("vgg13", ["block0.0.weight", "block0.4.running_mean", "block4.3.bias"], "classifier"),
    ("MobileNetV2", ["conv1.0.weight", "blocks.6.0.conv.7.weight", "conv2.1.running_var"], "classifier.0"),
    ("ShuffleV2", ["layer1.0.conv5.weight", "layer3.3.bn3.bias", "conv2.weight", "bn2.weight"], "linear"),
    ("ResNet50", ["layer1.0.shortcut.0.weight", "layer4.2.bn3.weight", "bn1.weight"], "linear"),
])
def test_repdistiller_checkpoints_load(name, keys, head):
    """The CIFAR zoo keeps RepDistiller's parameter names; only the classifier is renamed to `fc`."""
    model = _model(name)
    own = model.state_dict()
    assert all(k in own for k in keys)
    saved = {"model": {k.replace("fc.", head + ".", 1) if k.startswith("fc.") else k: v.clone()
                       for k, v in own.items()}, "epoch": 240}
    assert model.adapt_state_dict(saved["model"]).keys() == own.keys()


def _torchvision(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    tv = getattr(torchvision.models, name)(weights=None)
    for m in tv.modules():  # non-trivial BatchNorm statistics, so a missed buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return tv.eval()


@pytest.mark.parametrize("name,wrap", [
    ("resnet18", lambda s: s),
    ("resnet18", lambda s: {"state_dict": {"module." + k: v for k, v in s.items()}, "epoch": 3}),
    ("resnet18", lambda s: {k: v for k, v in s.items() if "num_batches_tracked" not in k}),  # old files
    ("mobilenet_v2", lambda s: {"model": s}),
    ("mobilenet_v3_large", lambda s: s),
])
def test_weights_from_a_torchvision_state_dict(tmp_path, name, wrap):
    tv = _torchvision(name)
    path = tmp_path / "w.pth"
    torch.save(wrap(tv.state_dict()), path)
    model = build_model(name, 1000, 3, 32, weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, tv(x), atol=1e-5)


def test_weights_round_trip_own_state_dict(tmp_path):
    model = _model("efficientnet_b0")
    torch.save(model.state_dict(), tmp_path / "own.pth")
    again = build_model("efficientnet_b0", 1000, 3, 32, weights=str(tmp_path / "own.pth")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x, with_maps=True), again(x, with_maps=True)
    assert torch.equal(a.logits, b.logits) and all(torch.equal(p, q) for p, q in zip(a.maps, b.maps))


def test_weights_with_another_head(tmp_path):
    tv = _torchvision("resnet18")
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(UserWarning, match="fresh initialisation"):
        ten = build_model("resnet18", 10, 3, 64, weights=str(tmp_path / "r18.pth")).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        headless = build_model("resnet18", 0, 3, 64, weights=str(tmp_path / "r18.pth")).eval()
    body = torch.nn.Sequential(*list(tv.children())[:-1])
    with torch.no_grad():
        want = body(x).flatten(1)
        assert torch.allclose(ten(x).feature, want, atol=1e-5) and ten(x).logits.shape == (2, 10)
        assert torch.allclose(headless(x).feature, want, atol=1e-5)


def test_weights_from_a_moco_checkpoint(tmp_path):
    """MoCo v2: the query encoder under `module.encoder_q.`, its fc an MLP projector; a headless model
    takes the encoder and ignores the rest."""
    tv = _torchvision("resnet18")
    state = {f"module.encoder_q.{k}": v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    state.update({"module.encoder_q.fc.0.weight": torch.zeros(512, 512), "module.encoder_q.fc.2.weight":
                  torch.zeros(128, 512), "module.encoder_k.conv1.weight": torch.zeros(1), "queue": torch.zeros(1)})
    torch.save({"state_dict": state, "arch": "resnet18"}, tmp_path / "moco.pth.tar")
    model = build_model("resnet18", 0, 3, 32, weights=str(tmp_path / "moco.pth.tar")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x).feature, torch.nn.Sequential(*list(tv.children())[:-1])(x).flatten(1),
                              atol=1e-5)


def test_weights_for_another_model_are_refused(tmp_path):
    torch.save(_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="missing key 'layer1.2"):
        build_model("resnet34", 1000, 3, 64, weights=str(tmp_path / "r18.pth"))


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty torch hub cache, and any attempt to reach the network fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_uncached_torchvision_weights_raise(no_network):
    with pytest.raises(FileNotFoundError) as e:
        build_model("resnet18", 1000, 3, 224, weights="IMAGENET1K_V1")
    msg = str(e.value)
    assert str(no_network / "resnet18-f37072fd.pth") in msg and "never downloads" in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    with pytest.raises(FileNotFoundError, match="neither a file nor a torchvision weights name"):
        build_model("resnet18", 1000, 3, 224, weights="IMAGENET1K_V9")


def test_cached_torchvision_weights_load(no_network):
    tv = _torchvision("mobilenet_v2")
    no_network.mkdir(parents=True)
    url = torchvision.models.MobileNet_V2_Weights.DEFAULT.url
    torch.save(tv.state_dict(), no_network / url.rsplit("/", 1)[1])
    model = build_model("mobilenet_v2", 1000, 3, 32, weights="DEFAULT").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, tv(x), atol=1e-5)


def test_weights_file_must_be_weights_only(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match="not a weights-only checkpoint"):
        build_model("mobilenet_v2", 1000, 3, 32, weights=str(tmp_path / "module.pth"))
