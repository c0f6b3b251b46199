"""autoencoder: the decoder's shape (RRKD's notebook architecture by default), the loss by hand, the [-1, 1]
target of the Tanh output, where gradients go, one real epoch."""
import math

import pytest
import torch
from torch import nn

from trainables.methods import method_class
from trainables.methods.autoencoder import mirrored_hidden
from trainables.methods.base import ModelInfo

from ..method_helpers import make, smoke_fit, step


def autoencoder(s_dim=2, maps=(), **knobs):
    return make("autoencoder", s_dim, None, s_maps=maps, **knobs)


LEGACY = {"output": "linear", "code_activation": False}  # kd-sweep's decoder before the notebook's


def test_needs_no_teacher_labels_or_logits():
    cls = method_class("autoencoder")
    knobs = cls.Knobs()
    assert not cls.needs_teacher
    assert not cls.uses_labels(knobs) and not cls.uses_teacher_logits(knobs) and not cls.student_needs_head(knobs)
    assert cls.has_main_loss(knobs)
    with pytest.raises(ValueError):
        cls.Knobs(weight=0)


def test_decoder_mirrors_an_mlp_encoder():
    # RRKD's AE-64 encoder 784 -> 128 -> 64 (ae_encoder maps: the hidden layer, then the embedding):
    # decoder 64 -> 128 -> 784, i.e. the autoencoder {128, 64, 128}.
    m = autoencoder(64, maps=[(128,), (64,)])
    dec = m.build_decoder((1, 28, 28))
    linears = [l for l in dec if isinstance(l, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(64, 128), (128, 784)]
    assert any(isinstance(l, nn.Dropout) and l.p == 0.5 for l in dec)
    # an mlp's feature is its last hidden layer: no extra layer for it
    assert mirrored_hidden(ModelInfo(16, [(32,), (16,)], 0)) == [32]
    assert mirrored_hidden(ModelInfo(16, [(16,)], 0)) == []
    # a conv encoder: one hidden layer as wide as the feature; decoder_hidden overrides
    assert mirrored_hidden(ModelInfo(64, [(16, 8, 8), (64, 4, 4)], 0)) == [64]
    m = autoencoder(8, maps=[(16, 4, 4)], decoder_hidden=[5, 7], dropout=0.0)
    dims = [(l.in_features, l.out_features) for l in m.build_decoder((3, 4, 4)) if isinstance(l, nn.Linear)]
    assert dims == [(8, 5), (5, 7), (7, 48)]


def test_loss_equals_hand_computation():
    m = autoencoder(2, maps=[(2,)], weight=3.0, **LEGACY)
    dec = m.build_decoder((1, 2, 2))  # no hidden layer: one Linear(2, 4)
    with torch.no_grad():
        dec[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
        dec[0].bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    z = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    x = torch.tensor([[[[1.0, 2.0], [3.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    # reconstructions (1, 2, 3, 1) and (0, -1, -1, 1): squared errors 0, 0, 0, 0 and 0, 1, 1, 1
    terms = m(step(z, x=x))
    assert set(terms) == {"recon"}
    assert terms["recon"].item() == pytest.approx(3.0 * 3 / 8, rel=1e-6)
    # scale multiplies it as every method's own term
    m2 = autoencoder(2, maps=[(2,)], weight=3.0, scale=2.0, **LEGACY)
    m2.decoder = dec
    m2.input_shape = (1, 2, 2)
    assert m2(step(z, x=x))["recon"].item() == pytest.approx(6.0 * 3 / 8, rel=1e-6)


def test_labels_only_through_lambda_ce():
    m = autoencoder(2, maps=[(2,)], lambda_ce=1.0, classes=3)
    m.build_decoder((4,))
    m.set_input_scale((0.5,), (0.5,))
    logits = torch.zeros(2, 3)
    terms = m(step(torch.ones(2, 2), x=torch.zeros(2, 4), s_logits=logits, y=torch.tensor([0, 2])))
    assert set(terms) == {"recon", "ce"} and terms["ce"].item() == pytest.approx(math.log(3), rel=1e-6)


def test_gradients_reach_encoder_features_and_decoder():
    torch.manual_seed(0)
    m = autoencoder(3, maps=[(5,), (3,)])
    m.set_input_scale((0.1307,), (0.3081,))
    z = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(4, 1, 3, 3, requires_grad=True)
    m.train()
    sum(m(step(z, x=x)).values()).backward()  # built lazily from the batch's shape
    assert m.input_shape == (1, 3, 3)
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.decoder.parameters())
    assert x.grad is None or x.grad.abs().sum() > 0  # the input is the target, never a learnable


def test_decoder_is_a_learnable_module_of_the_method():
    m = autoencoder(4, maps=[(8,), (4,)])
    m.build_decoder((1, 2, 2))
    names = [n for n, _ in m.named_parameters()]
    assert names and all(n.startswith("decoder.") for n in names)
    with pytest.raises(ValueError, match="built for inputs"):
        m(step(torch.zeros(2, 4), x=torch.zeros(2, 1, 3, 3)))


def test_one_real_epoch(tmp_path):
    (metrics,) = smoke_fit("autoencoder", tmp_path, "mlp")
    for term in ("recon", "loss"):
        assert math.isfinite(metrics[f"train/{term}"])
    assert metrics["train/recon"] > 0 and 0 <= metrics["eval/knn_top1"] <= 100


def test_training_lowers_the_reconstruction_error(tmp_path):
    first, *_, last = smoke_fit("autoencoder", tmp_path, "mlp", epochs=4)
    assert last["train/recon"] < first["train/recon"]


# --- RRKD's autoencoders as the authors' notebook builds them ------------------------------------------
# Ramos-Ramos/rrkd rrkd.ipynb, commit aa4298b, cells 6 and 8: every Linear but the last is followed by
# Dropout(0.5) -> ReLU, the last by Tanh; the encoder is model[:5] (flatten, Linear, Dropout, ReLU, Linear),
# so the decoder part is model[5:]: Dropout, ReLU, Linear, Dropout, ReLU, Linear, Tanh.
NOTEBOOK_DECODERS = {  # (encoder hidden, code) -> the notebook's model[5:] (less its final Rearrange)
    (128, 64): [("Dropout", 0.5), ("ReLU",), ("Linear", 64, 128), ("Dropout", 0.5), ("ReLU",),
                ("Linear", 128, 784), ("Tanh",)],   # create_mnist_ae_teacher: AE {128, 64, 128}
    (64, 32): [("Dropout", 0.5), ("ReLU",), ("Linear", 32, 64), ("Dropout", 0.5), ("ReLU",),
               ("Linear", 64, 784), ("Tanh",)],     # create_mnist_ae_student: AE {64, 32, 64}
}


def layers(dec: nn.Sequential) -> list[tuple]:
    out = []
    for m in dec:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.Dropout):
            out.append(("Dropout", m.p))
        else:
            out.append((type(m).__name__,))
    return out


@pytest.mark.parametrize("hidden, code", list(NOTEBOOK_DECODERS))
def test_default_decoder_is_the_notebooks(hidden, code):
    m = autoencoder(code, maps=[(hidden,), (code,)])  # the ae_encoder's maps: the hidden layer, the embedding
    dec = m.build_decoder((1, 28, 28))
    assert layers(dec) == NOTEBOOK_DECODERS[(hidden, code)]
    # the whole autoencoder (ae_encoder + decoder) has the notebook's parameter count
    from trainables.models import build_model

    enc = build_model("ae_encoder", 0, 1, 28, hidden=[hidden], embedding_dim=code)
    n = sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in dec.parameters())
    widths = [784, hidden, code, hidden, 784]
    assert n == sum(a * b + b for a, b in zip(widths, widths[1:]))  # 218,192 (AE-64), 105,392 (AE-32)


def test_knobs_give_the_earlier_decoder_back():
    m = autoencoder(64, maps=[(128,), (64,)], **LEGACY)
    assert layers(m.build_decoder((1, 28, 28))) == [("Linear", 64, 128), ("Dropout", 0.5), ("ReLU",),
                                                    ("Linear", 128, 784)]
    m = autoencoder(64, maps=[(128,), (64,)], code_activation=False)  # Tanh alone
    assert [l[0] for l in layers(m.build_decoder((1, 28, 28)))] == ["Linear", "Dropout", "ReLU", "Linear", "Tanh"]
    m = autoencoder(64, maps=[(128,), (64,)], output="linear")  # the code's activation alone
    assert [l[0] for l in layers(m.build_decoder((1, 28, 28)))] == ["Dropout", "ReLU", "Linear", "Dropout", "ReLU",
                                                                    "Linear"]
    with pytest.raises(ValueError):
        method_class("autoencoder").Knobs(output="sigmoid")


def test_code_activation_drops_the_negative_code():
    torch.manual_seed(0)
    m = autoencoder(4, maps=[(8,), (4,)])
    dec = m.build_decoder((1, 2, 2)).eval()
    z = torch.randn(16, 4)
    assert torch.equal(dec(z), dec(z.clamp_min(0)))
    legacy = autoencoder(4, maps=[(8,), (4,)], **LEGACY).build_decoder((1, 2, 2)).eval()
    assert not torch.equal(legacy(z), legacy(z.clamp_min(0)))


def test_tanh_output_lies_in_minus_one_one():
    torch.manual_seed(0)
    dec = autoencoder(8, maps=[(16,), (8,)]).build_decoder((1, 28, 28))
    out = dec(1e3 * torch.randn(32, 8))  # saturating codes
    assert out.shape == (32, 784)
    assert out.min() >= -1 and out.max() <= 1 and out.abs().max() > 0.99
    legacy = autoencoder(8, maps=[(16,), (8,)], **LEGACY).build_decoder((1, 28, 28))
    assert legacy(1e3 * torch.randn(32, 8)).abs().max() > 1  # a linear output is not bounded


def test_tanh_target_is_the_image_in_minus_one_one():
    # MNIST normalised with kd-sweep's mean/std: the target is the notebook's Normalize(0.5, 0.5) view
    x01 = torch.rand(3, 1, 4, 4)
    m = autoencoder(2, maps=[(2,)])
    m.set_input_scale((0.1307,), (0.3081,))
    torch.testing.assert_close(m.target((x01 - 0.1307) / 0.3081), (2 * x01 - 1).flatten(1))
    assert m.target((x01 - 0.1307) / 0.3081).min() >= -1 - 1e-6
    # on data normalised with mean = std = 0.5 the target is the input itself
    m.set_input_scale((0.5,), (0.5,))
    x = 2 * x01 - 1
    torch.testing.assert_close(m.target(x), x.flatten(1))
    # per channel (SVHN's statistics)
    mean, std = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    m.set_input_scale(mean, std)
    x01 = torch.rand(2, 3, 4, 4)
    xn = (x01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(m.target(xn), (2 * x01 - 1).flatten(1))
    with pytest.raises(ValueError, match="channels"):
        m.target(torch.zeros(2, 1, 4, 4))
    # the legacy output reconstructs the normalised input
    legacy = autoencoder(2, maps=[(2,)], **LEGACY)
    assert torch.equal(legacy.target(xn), xn.flatten(1))


def test_tanh_loss_equals_hand_computation():
    m = autoencoder(2, maps=[(2,)], weight=2.0, code_activation=False, dropout=0.0)
    dec = m.build_decoder((1, 1, 2))  # Linear(2, 2) -> Tanh
    m.set_input_scale((0.5,), (0.25,))
    with torch.no_grad():
        dec[0].weight.copy_(torch.eye(2))
        dec[0].bias.zero_()
    z = torch.tensor([[0.5, -1.0]])
    x = torch.tensor([[[[2.0, -2.0]]]])  # pixels x * 0.25 + 0.5 = (1, 0): target 2 * (1, 0) - 1 = (1, -1)
    recon = torch.tanh(z)
    expected = 2.0 * ((recon - torch.tensor([[1.0, -1.0]])) ** 2).mean()
    assert m(step(z, x=x))["recon"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_tanh_needs_the_input_scale():
    m = autoencoder(2, maps=[(2,)])
    with pytest.raises(RuntimeError, match="mean/std"):
        m(step(torch.zeros(2, 2), x=torch.zeros(2, 1, 2, 2)))


def test_setup_reads_the_scale_off_the_data_and_does_not_checkpoint_it():
    from types import SimpleNamespace

    data = SimpleNamespace(mean=(0.1307,), std=(0.3081,), in_channels=1, image_size=28)
    ctx = SimpleNamespace(data=data, device=torch.device("cpu"), cfg={"dataset": {"name": "mnist"}})
    m = autoencoder(64, maps=[(128,), (64,)])
    m.setup(ctx)
    assert m.input_shape == (1, 28, 28) and layers(m.decoder) == NOTEBOOK_DECODERS[(128, 64)]
    assert m.in_mean.tolist() == pytest.approx([0.1307]) and m.in_std.tolist() == pytest.approx([0.3081])
    assert all(k.startswith("decoder.") for k in m.state_dict())  # the scale is derived, not a weight
    m2 = autoencoder(64, maps=[(128,), (64,)])
    with pytest.raises(ValueError, match="output: linear"):
        m2.setup(SimpleNamespace(data=SimpleNamespace(in_channels=1, image_size=28), device=torch.device("cpu"),
                                 cfg={"dataset": {"name": "imagenet"}}))
    autoencoder(64, maps=[(128,), (64,)], output="linear").setup(
        SimpleNamespace(data=SimpleNamespace(in_channels=1, image_size=28), device=torch.device("cpu"),
                        cfg={"dataset": {"name": "imagenet"}}))
