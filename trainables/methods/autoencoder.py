"""`autoencoder`: no teacher; the model is trained as the encoder of an autoencoder (MSE reconstruction).

RRKD's self-supervised MNIST teachers and their AE-32 baseline are such encoders (papers/002 §5.1).

A decoder, a learnable module of the method (trained with the model, dropped after), maps the model's
pooled feature back to the input; recon = weight · mean((decoder(z) − target)²) over every pixel.

The decoder mirrors the encoder when the encoder is an MLP on flattened images (every stage map flat):
its hidden widths are the encoder's hidden widths in reverse, the embedding itself excluded, e.g. the
AE-64 teacher's encoder 784 → 128 → 64 gets the decoder 64 → 128 → 784 (RRKD's {128, 64, 128}).
Each hidden layer is Linear → Dropout(`dropout`) → ReLU. For a conv encoder there is no mirror to take:
one hidden layer as wide as the feature. `decoder_hidden` overrides both.

The defaults are RRKD's autoencoders exactly (Ramos-Ramos/rrkd rrkd.ipynb, commit aa4298b, cells 6 and 8:
`create_mnist_ae_teacher` / `create_mnist_ae_student`, Linear → Dropout(0.5) → ReLU after every Linear
but the last, whose encoder is `model[:5]`, ending at the code's plain Linear):
- `code_activation: true`: Dropout(`dropout`) → ReLU on the code before the decoder's first Linear
  (the notebook's `model[5:7]`; the encoder, and so the embedding that is distilled and probed, ends
  before them). (Dropout → ReLU equals ReLU → Dropout: dropout's scaling is positive.)
- `output: tanh`: the last Linear ends in Tanh, and the target is the image scaled to [-1, 1], what the
  notebook feeds its models (`T.Normalize(0.5, 0.5)`, cell 18) and reconstructs (`LitAE`, cell 11:
  `F.mse_loss(rec, x)`). kd-sweep normalises by the dataset's mean/std instead, so the target is
  recovered from the batch the model saw (`step.x`, augmentation included): 2 · (x · std + mean) − 1;
  on data normalised with mean = std = 0.5 that is `step.x` itself. `setup` reads mean/std off the
  trial's data; without a trial, `set_input_scale`.
- `output: linear`, `code_activation: false`: kd-sweep's earlier decoder, a plain Linear output against
  the normalised input `step.x`.

The input size comes from the data in `setup` (channels × image size²), before the optimiser is built;
a method made without a trial (the unit tests) builds its decoder from the first batch it sees, or by
`build_decoder`.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import Context, DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted



class AutoencoderKnobs(Knobs):
    weight: float = Field(1.0, gt=0, description=(
        "weight of the reconstruction MSE; with SGD and weight decay 0, weight w is learning rate x w"
        " (RRKD's AE-32 baseline at lr 1e-8 = lr 0.1 with weight 1e-7)"))
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout of the decoder's hidden layers (RRKD: 0.5 in all models)")
    decoder_hidden: list[int] | None = Field(None, description=(
        "hidden widths of the decoder; None = the encoder's hidden widths in reverse (an MLP encoder), one"
        " layer as wide as the feature otherwise"))
    code_activation: bool = Field(True, description=(
        "Dropout(dropout) -> ReLU on the code before the decoder's first Linear (RRKD's autoencoders,"
        " notebook cells 6/8); false: the code goes straight into it"))
    output: Literal["tanh", "linear"] = Field("tanh", description=(
        "tanh: Tanh output against the image scaled to [-1, 1] (RRKD's autoencoders, notebook cells 6/8/11/18);"
        " linear: a plain Linear output against the normalised input"))


def mirrored_hidden(student: ModelInfo) -> list[int]:
    """The decoder's hidden widths: an MLP encoder's hidden widths reversed, without the embedding."""
    shapes = student.map_shapes
    if shapes and all(len(s) == 1 for s in shapes):
        widths = [s[0] for s in shapes]
        if widths[-1] == student.feature_dim:  # the last map is the feature itself (ae_encoder, mlp)
            widths = widths[:-1]
        return widths[::-1]
    return [student.feature_dim]


def decoder(d_in: int, hidden: Sequence[int], d_out: int, dropout: float, code_activation: bool = False,
            output: str = "linear") -> nn.Sequential:
    layers: list[nn.Module] = []
    if code_activation:  # not in place: the code is the model's feature, read elsewhere too
        layers += [nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.ReLU()]
    d = d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, d_out))
    if output == "tanh":
        layers.append(nn.Tanh())
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
        # The data's normalisation, per channel, for the [-1, 1] target of `output: tanh`. Derived from
        # the data in setup, so not checkpointed.
        self.register_buffer("in_mean", None, persistent=False)
        self.register_buffer("in_std", None, persistent=False)

    def build_decoder(self, input_shape: Sequence[int]) -> nn.Sequential:
        """The decoder for inputs of shape (C, H, W) (or any shape: it is flattened)."""
        k = self.knobs
        self.input_shape = tuple(int(s) for s in input_shape)
        self.decoder = decoder(self.feature_dim, self.hidden, math.prod(self.input_shape), k.dropout,
                               k.code_activation, k.output)
        return self.decoder

    def set_input_scale(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The per-channel mean/std the inputs were normalised with (`output: tanh` undoes them)."""
        self.in_mean = torch.tensor(mean, dtype=torch.float32).flatten()
        self.in_std = torch.tensor(std, dtype=torch.float32).flatten()

    def setup(self, ctx: Context) -> None:
        data = ctx.data
        if self.knobs.output == "tanh":
            if getattr(data, "mean", None) is None or getattr(data, "std", None) is None:
                raise ValueError(f"autoencoder output: tanh needs the data's mean/std to scale the target to"
                                 f" [-1, 1]; {ctx.cfg['dataset']['name']} has none here: use output: linear")
            self.set_input_scale(data.mean, data.std)
            self.in_mean, self.in_std = self.in_mean.to(ctx.device), self.in_std.to(ctx.device)
        if self.decoder is None:  # built once per trial; a resume then loads its weights
            self.build_decoder((data.in_channels, data.image_size, data.image_size)).to(ctx.device)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder reconstructs, flattened: the normalised input, or (tanh) it scaled to [-1, 1]."""
        if self.knobs.output == "tanh":
            if self.in_mean is None:
                raise RuntimeError("autoencoder output: tanh: the input's mean/std are unknown (setup(ctx) or"
                                   " set_input_scale(mean, std) first)")
            c = len(self.in_mean)
            mean, std = self.in_mean.to(x.device), self.in_std.to(x.device)
            if c > 1:  # per channel: (b, C, H, W) batches only
                if x.dim() != 4 or x.shape[1] != c:
                    raise ValueError(f"autoencoder output: tanh: a batch of shape {tuple(x.shape)} does not have"
                                     f" the {c} channels of the mean/std it was given")
                mean, std = mean.view(1, c, 1, 1), std.view(1, c, 1, 1)
            x = 2 * (x * std + mean) - 1
        return x.flatten(1)

    def distill(self, step: Step) -> dict[str, Term]:
        x = step.x
        if self.decoder is None:
            self.build_decoder(x.shape[1:]).to(x.device)
        elif math.prod(x.shape[1:]) != math.prod(self.input_shape):
            raise ValueError(f"autoencoder: the decoder was built for inputs {self.input_shape}, the batch has"
                             f" {tuple(x.shape[1:])}")
        recon = self.decoder(step.s.feature)
        return {"recon": weighted(self.knobs.weight, F.mse_loss(recon, self.target(x).to(recon.dtype)))}
