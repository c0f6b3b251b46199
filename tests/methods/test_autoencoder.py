"""autoencoder: the decoder's shape, the loss by hand, where gradients go, one real epoch."""
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
    m = autoencoder(2, maps=[(2,)], weight=3.0)
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
    m2 = autoencoder(2, maps=[(2,)], weight=3.0, scale=2.0)
    m2.decoder = dec
    m2.input_shape = (1, 2, 2)
    assert m2(step(z, x=x))["recon"].item() == pytest.approx(6.0 * 3 / 8, rel=1e-6)


def test_labels_only_through_lambda_ce():
    m = autoencoder(2, maps=[(2,)], lambda_ce=1.0, classes=3)
    m.build_decoder((4,))
    logits = torch.zeros(2, 3)
    terms = m(step(torch.ones(2, 2), x=torch.zeros(2, 4), s_logits=logits, y=torch.tensor([0, 2])))
    assert set(terms) == {"recon", "ce"} and terms["ce"].item() == pytest.approx(math.log(3), rel=1e-6)


def test_gradients_reach_encoder_features_and_decoder():
    torch.manual_seed(0)
    m = autoencoder(3, maps=[(5,), (3,)])
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
