"""AB (Heo et al., 2019): knowledge transfer via the activation boundaries of hidden neurons.

On the pre-ReLU stage outputs except the stem (`preact`), a connector c (identity when the student's map
already has the teacher's channels and size, else CRD's ConvReg without ReLU: conv -> BN) maps each
student map onto the teacher's; with margin mu, per element,
    (c(s) + mu)^2  where t <= 0 and c(s) > -mu,      (c(s) - mu)^2  where t > 0 and c(s) <= mu,
0 elsewhere (the student is pushed to the teacher's side of 0, by at least mu). Per pair the sum over all
elements; pair i of n weighted 2^(i - n + 1) (the deepest 1, then 1/2, 1/4 ...); the total divided by the
batch size and multiplied by 3/1000. All as the authors' code and the CRD benchmark
(RepDistiller distiller_zoo/AB.py, models/util.py Connector).

Training, as CRD's: an initialisation stage (`pretrain`, `init_epochs` epochs) trains the student and the
connectors with this loss alone; the main stage is then CE/KD only (CRD's train loop sets loss_kd = 0 for
AB whatever its -b), so `weight` defaults to 0. The "ab" term is still returned at weight 0 (it is then
0, with a graph), so a trial whose other weights are 0 still has a loss tensor to step on.
"""
from __future__ import annotations


import torch
from pydantic import Field
from torch import nn

from ..registry import METHODS
from ._maps import ConvReg, as_map, check_pairs, map_shape, stage_pairs
from ._stage import match_maps_stage
from .base import Context, DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted


class ABKnobs(Knobs):
    weight: float = Field(0.0, ge=0, description="main-stage weight; 0 as the authors' and CRD's code (CRD's"
                                                 " train loop uses no AB loss after the init stage)")
    margin: float = Field(1.0, gt=0, description="margin mu of the alternative L2 loss; 1.0 as the authors"
                                                 " and CRD")
    init_epochs: int = Field(30, ge=0, description="epochs of the init stage training the student and"
                                                   " connectors with the AB loss; 30 as CRD's --init_epochs")


def boundary_loss(s: torch.Tensor, t: torch.Tensor, margin: float) -> torch.Tensor:
    """Sum over all elements of the authors' alternative L2 loss."""
    neg = ((s > -margin) & (t <= 0)).to(s.dtype)
    pos = ((s <= margin) & (t > 0)).to(s.dtype)
    return ((s + margin).pow(2) * neg + (s - margin).pow(2) * pos).sum()


def ab_loss(s_maps: list[torch.Tensor], t_maps: list[torch.Tensor], margin: float) -> torch.Tensor:
    n, b = len(s_maps), s_maps[0].shape[0]
    total = sum(2.0 ** (i - n + 1) * boundary_loss(s, t, margin) for i, (s, t) in enumerate(zip(s_maps, t_maps)))
    return total / b / 1000 * 3


@METHODS.register("ab")
class AB(Method):
    Knobs = ABKnobs
    needs_maps = True
    preact = True  # the authors and CRD read the stage outputs before their last ReLU
    smoke_limits = {"init_epochs": 1}

    def __init__(self, knobs: ABKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        check_pairs("ab", student, teacher)
        self.connectors = nn.ModuleList(
            nn.Identity() if map_shape(s)[:2] == map_shape(t)[:2] else ConvReg(s, t, relu=False)
            for s, t in stage_pairs(student.map_shapes, teacher.map_shapes))

    def loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor]) -> torch.Tensor:
        pairs = stage_pairs(s_maps, t_maps)
        s = [c(as_map(f)) for c, (f, _) in zip(self.connectors, pairs)]
        t = [as_map(f.detach()) for _, f in pairs]
        return ab_loss(s, t, self.knobs.margin)

    def distill(self, step: Step) -> dict[str, Term]:
        return {"ab": weighted(self.knobs.weight, self.loss(step.s.maps, step.t.maps))}

    def pretrain(self, ctx: Context) -> dict[str, float]:
        if self.knobs.init_epochs == 0:
            return {}
        return {"ab_init_loss": match_maps_stage(self, ctx, self.knobs.init_epochs)}
