"""FT (Kim et al., 2018): factor transfer through a paraphraser and a translator.

Paraphraser P (on the teacher's last stage map, C_t channels): encoder 3x3 conv C_t -> C_t -> k C_t -> k C_t,
decoder 3x3 transposed conv k C_t -> k C_t -> C_t -> C_t, LeakyReLU(0.1) after each, no BatchNorm (authors'
code and CRD). It is trained first (`pretrain`, `paraphraser_epochs` epochs) to reconstruct the teacher's
map, mean squared error (CRD's MSELoss; the authors' released code used L1Loss), then frozen:
no gradient, no update.
Translator T (on the student's last stage map): encoder 3x3 conv C_s -> C_s -> k C_t -> k C_t, each conv
-> BN -> LeakyReLU(0.1) (CRD's Translator; the authors' has no BN), trained with the student.

Factors F_t = P.encoder(t), F_s = T(s) (the larger average-pooled to the smaller one's size);
loss = mean over (b, D) of | F_s / ||F_s|| - F_t / ||F_t|| |  (p = 1), each factor flattened to D values
and L2-normalised per sample, as the authors' code (utils.FT + L1Loss). CRD's FactorTransfer instead
normalises the channel mean of the squared factor (an attention map): `factor: attention` gives that.
Tap: the last stage map (CRD's feat[-2]).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from ._maps import as_map, map_shape, match_size
from ._stage import run_stage
from .base import Context, DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted



class FTKnobs(Knobs):
    weight: float = Field(200.0, ge=0, description="base weight: 200 as the CoSS supplement ('Factor"
                                                   " 200') and CRD's scripts (-b 200)")
    rate: float = Field(0.5, gt=0, description="paraphrase rate k: the factor has k C_t channels;"
                                               " 0.5 as the paper, the authors' code and CRD")
    paraphraser_epochs: int = Field(30, ge=0, description="epochs training the paraphraser before"
                                                          " distillation; 30 as CRD's --init_epochs")
    paraphraser_lr: float | None = Field(None, gt=0, description="learning rate of the paraphraser stage;"
                                                                 " default the trial's (CRD used 0.01 with"
                                                                 " ResNet/WRN students, the trial's otherwise)")
    factor: Literal["flatten", "attention"] = Field(
        "flatten", description="flatten: the whole factor, L2-normalised (the authors' code); attention:"
                               " mean_c factor^2, L2-normalised (CRD's FactorTransfer)")


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


class Paraphraser(nn.Module):
    def __init__(self, c: int, k: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _act(), nn.Conv2d(c, k, 3, padding=1), _act(),
                                     nn.Conv2d(k, k, 3, padding=1), _act())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(k, k, 3, padding=1), _act(),
                                     nn.ConvTranspose2d(k, c, 3, padding=1), _act(),
                                     nn.ConvTranspose2d(c, c, 3, padding=1), _act())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """The reconstruction of t."""
        return self.decoder(self.encoder(t))


def translator(c_s: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_s, c_s, 3, padding=1), nn.BatchNorm2d(c_s), _act(),
                         nn.Conv2d(c_s, k, 3, padding=1), nn.BatchNorm2d(k), _act(),
                         nn.Conv2d(k, k, 3, padding=1), nn.BatchNorm2d(k), _act())


def factor_vector(f: torch.Tensor, kind: str) -> torch.Tensor:
    v = f.flatten(1) if kind == "flatten" else f.pow(2).mean(1).flatten(1)
    return F.normalize(v, dim=1)


def ft_loss(f_s: torch.Tensor, f_t: torch.Tensor, kind: str = "flatten") -> torch.Tensor:
    f_s, f_t = match_size(f_s, f_t)
    return (factor_vector(f_s, kind) - factor_vector(f_t, kind)).abs().mean()


@METHODS.register("ft")
class FT(Method):
    Knobs = FTKnobs
    needs_maps = True
    smoke_limits = {"paraphraser_epochs": 1}

    def __init__(self, knobs: FTKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        if not student.map_shapes or not teacher.map_shapes:
            raise ValueError("ft needs a stage map from both models")
        c_s, c_t = map_shape(student.map_shapes[-1])[0], map_shape(teacher.map_shapes[-1])[0]
        k = max(1, int(c_t * knobs.rate))
        self.paraphraser = Paraphraser(c_t, k).requires_grad_(False)  # trained only in `pretrain`
        self.translator = translator(c_s, k)

    def distill(self, step: Step) -> dict[str, Term]:
        with torch.no_grad():
            f_t = self.paraphraser.encoder(as_map(step.t.maps[-1]))
        f_s = self.translator(as_map(step.s.maps[-1]))
        return {"ft": weighted(self.knobs.weight, ft_loss(f_s, f_t, self.knobs.factor))}

    def pretrain(self, ctx: Context) -> dict[str, float]:
        if self.knobs.paraphraser_epochs == 0:
            return {}
        ctx.teacher.eval()
        self.paraphraser.train().requires_grad_(True)

        def batch_loss(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t = as_map(ctx.teacher(x, with_maps=True, preact=self.preact).maps[-1])
            return F.mse_loss(self.paraphraser(t), t)

        try:
            loss = run_stage(ctx, self.paraphraser.parameters(), self.knobs.paraphraser_epochs, batch_loss,
                             lr=self.knobs.paraphraser_lr)
        finally:
            self.paraphraser.requires_grad_(False)
        return {"ft_paraphraser_loss": loss}
