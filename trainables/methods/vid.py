"""VID (Ahn et al., 2019): variational information distillation on the stage maps except the stem.

Per stage pair, a regressor mu (1x1 conv -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv, no biases, hidden
width = the teacher's channels) predicts the teacher map from the student's; the teacher map is modelled
as Gaussian with mean mu(s) and a learnable per-channel variance sigma_c^2 = softplus(alpha_c) + eps.
The loss is the negative log-likelihood without its constant,
    mean over (b, C_t, H, W) of  0.5 * ( (mu(s) - t)^2 / sigma_c^2 + log sigma_c^2 ),
summed over the pairs; the larger map is average-pooled to the smaller one's size first. alpha starts at
softplus^-1(init_var - eps), so sigma^2 starts at init_var. All as the authors' code, via the CRD benchmark
(RepDistiller distiller_zoo/VID.py: init_pred_var 5.0, eps 1e-5; taps feat[1:-1]).

Base weight 1: CRD's scripts/run_cifar_distill.sh (`--distill vid -b 1`, RepDistiller b84f547c). The CoSS
supplement (Table 1) adapted CRD's code and lists no weights of its own, so it ran this one too.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from ._maps import as_map, check_pairs, map_shape, match_size, stage_pairs
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted

EPS = 1e-5  # the variance floor of the authors' code


class VIDKnobs(Knobs):
    weight: float = Field(1.0, ge=0, description="base weight: 1 as CRD's scripts/run_cifar_distill.sh (-b 1),"
                                                 " which the CoSS supplement's adapted CRD code ran")
    init_var: float = Field(5.0, ge=1e-3, description="initial variance sigma^2 of every channel;"
                                                      " 5.0 as the authors' code and CRD (init_pred_var)")


def regressor(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
    """The authors' mean regressor: 1x1 conv -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv, no biases."""
    return nn.Sequential(nn.Conv2d(c_in, c_mid, 1, bias=False), nn.ReLU(),
                         nn.Conv2d(c_mid, c_mid, 1, bias=False), nn.ReLU(),
                         nn.Conv2d(c_mid, c_out, 1, bias=False))


def gaussian_nll(mean: torch.Tensor, target: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """mean of 0.5 * ((mean - target)^2 / var + log var); var is per channel, (C,)."""
    var = var.view(1, -1, 1, 1)
    return (0.5 * ((mean - target).pow(2) / var + var.log())).mean()


@METHODS.register("vid")
class VID(Method):
    Knobs = VIDKnobs
    needs_maps = True

    def __init__(self, knobs: VIDKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        check_pairs("vid", student, teacher)
        pairs = [(map_shape(s)[0], map_shape(t)[0]) for s, t in stage_pairs(student.map_shapes, teacher.map_shapes)]
        self.regressors = nn.ModuleList(regressor(cs, ct, ct) for cs, ct in pairs)
        alpha = math.log(math.expm1(knobs.init_var - EPS))  # softplus^-1(init_var - eps)
        self.log_scales = nn.ParameterList(nn.Parameter(torch.full((ct,), alpha)) for _, ct in pairs)

    def variances(self) -> list[torch.Tensor]:
        return [F.softplus(a) + EPS for a in self.log_scales]

    def distill(self, step: Step) -> dict[str, Term]:
        loss = 0.0
        pairs = stage_pairs(step.s.maps, step.t.maps)
        for (s, t), reg, var in zip(pairs, self.regressors, self.variances()):
            s, t = match_size(as_map(s), as_map(t.detach()))
            loss = loss + gaussian_nll(reg(s), t, var)
        return {"vid": weighted(self.knobs.weight, loss)}
