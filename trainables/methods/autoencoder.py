"""`autoencoder`: no teacher; the model is trained as the encoder of an autoencoder (MSE reconstruction).

RRKD's self-supervised MNIST teachers and their AE-32 baseline are such encoders (papers/002 §5.1).

A decoder, a learnable module of the method (trained with the model, dropped after), maps the model's
pooled feature back to the input; the loss is the mean squared error to the *normalised* input the
model saw (`step.x`, augmentation included): recon = weight · mean((decoder(z) − x)²).

The decoder mirrors the encoder when the encoder is an MLP on flattened images (every stage map flat):
its hidden widths are the encoder's hidden widths in reverse, the embedding itself excluded, e.g. the
AE-64 teacher's encoder 784 → 128 → 64 gets the decoder 64 → 128 → 784 (RRKD's {128, 64, 128}).
Each hidden layer is Linear → Dropout(`dropout`) → ReLU, the output a plain Linear. For a conv encoder
there is no mirror to take: one hidden layer as wide as the feature. `decoder_hidden` overrides both.
RRKD's decoder ends in Tanh on inputs scaled to [-1, 1]; here the target is the normalised input, whose
range is not [-1, 1], so the output stays linear.

The input size comes from the data in `setup` (channels × image size²), before the optimiser is built;
a method made without a trial (the unit tests) builds its decoder from the first batch it sees, or by
`build_decoder`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step

if TYPE_CHECKING:
    from ..trial import Context


class AutoencoderKnobs(Knobs):
    weight: float = Field(1.0, gt=0, description=(
        "weight of the reconstruction MSE; with SGD and weight decay 0, weight w is learning rate x w"
        " (RRKD's AE-32 baseline at lr 1e-8 = lr 0.1 with weight 1e-7)"))
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout of the decoder's hidden layers (RRKD: 0.5 in all models)")
    decoder_hidden: list[int] | None = Field(None, description=(
        "hidden widths of the decoder; None = the encoder's hidden widths in reverse (an MLP encoder), one"
        " layer as wide as the feature otherwise"))


def mirrored_hidden(student: ModelInfo) -> list[int]:
    """The decoder's hidden widths: an MLP encoder's hidden widths reversed, without the embedding."""
    shapes = student.map_shapes
    if shapes and all(len(s) == 1 for s in shapes):
        widths = [s[0] for s in shapes]
        if widths[-1] == student.feature_dim:  # the last map is the feature itself (ae_encoder, mlp)
            widths = widths[:-1]
        return widths[::-1]
    return [student.feature_dim]


def decoder(d_in: int, hidden: Sequence[int], d_out: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


@METHODS.register("autoencoder")
class Autoencoder(Method):
    Knobs = AutoencoderKnobs
    needs_teacher = False

    def __init__(self, knobs: AutoencoderKnobs, student: ModelInfo, teacher: ModelInfo | None, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        self.feature_dim = student.feature_dim
        self.hidden = list(knobs.decoder_hidden) if knobs.decoder_hidden is not None else mirrored_hidden(student)
        self.decoder: nn.Sequential | None = None
        self.input_shape: tuple[int, ...] | None = None

    def build_decoder(self, input_shape: Sequence[int]) -> nn.Sequential:
        """The decoder for inputs of shape (C, H, W) (or any shape: it is flattened)."""
        self.input_shape = tuple(int(s) for s in input_shape)
        self.decoder = decoder(self.feature_dim, self.hidden, math.prod(self.input_shape), self.knobs.dropout)
        return self.decoder

    def setup(self, ctx: "Context") -> None:
        if self.decoder is None:  # built once per trial; a resume then loads its weights
            data = ctx.data
            self.build_decoder((data.in_channels, data.image_size, data.image_size)).to(ctx.device)

    def distill(self, step: Step) -> dict[str, torch.Tensor]:
        x = step.x
        if self.decoder is None:
            self.build_decoder(x.shape[1:]).to(x.device)
        elif math.prod(x.shape[1:]) != math.prod(self.input_shape):
            raise ValueError(f"autoencoder: the decoder was built for inputs {self.input_shape}, the batch has"
                             f" {tuple(x.shape[1:])}")
        recon = self.decoder(step.s.feature)
        return {"recon": self.knobs.weight * F.mse_loss(recon, x.flatten(1).to(recon.dtype))}
