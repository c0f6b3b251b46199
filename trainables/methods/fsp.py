"""FSP (Yim et al., 2017): match the "flow of solution procedure" matrices between consecutive maps.

For consecutive maps (bottom f1: C1 channels, top f2: C2 channels; the larger average-pooled to the
smaller one's size) the FSP matrix of a sample is G[j, i] = mean over the H*W positions of f2_j * f1_i,
a C2 x C1 matrix. Per consecutive pair: mean over (b, C2, C1) of (G_s - G_t)^2; summed over the pairs. All
maps are used, the stem included (CRD's feat[:-1]: [stem, stage1, stage2, stage3], three matrices), as in
the CRD benchmark code (RepDistiller distiller_zoo/FSP.py).

Training, as the authors' and CRD's: an initialisation stage (`pretrain`, `init_epochs` epochs) trains the
student to match the teacher's FSP matrices; the main stage is then CE/KD only (CRD's train loop sets
loss_kd = 0 for FSP whatever its -b), so `weight` defaults to 0. The "fsp" term is still returned at
weight 0 (0, with a graph), so a trial whose other weights are 0 still has a loss tensor to step on.

FSP compares C2 x C1 matrices, so the two models need as many maps, with the same channels. CRD raises
otherwise ("num of channels not equal"). Here, where a student map's channels differ from the teacher's,
a connector (1x1 conv -> BN, the AB authors' connector) maps it onto the teacher's channels before its FSP
matrices are taken; it trains with the student in the init stage (identity where channels agree, so
same-width pairs get exactly CRD's FSP). With different numbers of maps the deepest ones are paired.
A model needs two maps at least: an MLP with one hidden layer cannot be a FSP student or teacher.
"""
from __future__ import annotations


import torch
from pydantic import Field
from torch import nn

from ..registry import METHODS
from ._maps import as_map, map_shape, match_size
from ._stage import match_maps_stage
from .base import Context, DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted



class FSPKnobs(Knobs):
    weight: float = Field(0.0, ge=0, description="main-stage weight; 0 as the authors' and CRD's code (CRD's"
                                                 " train loop uses no FSP loss after the init stage)")
    init_epochs: int = Field(30, ge=0, description="epochs of the init stage training the student to match"
                                                   " the FSP matrices; 30 as CRD's --init_epochs")


def fsp_matrices(maps: list[torch.Tensor]) -> list[torch.Tensor]:
    """[(b, C_{k+1}, C_k)]: G[j, i] = mean over positions of top_j * bottom_i, per consecutive pair."""
    out = []
    for bottom, top in zip(maps[:-1], maps[1:]):
        bottom, top = match_size(as_map(bottom), as_map(top))
        out.append(top.flatten(2) @ bottom.flatten(2).transpose(1, 2) / (top.shape[2] * top.shape[3]))
    return out


def fsp_loss(s_maps: list[torch.Tensor], t_maps: list[torch.Tensor]) -> torch.Tensor:
    return sum((gs - gt).pow(2).mean() for gs, gt in zip(fsp_matrices(s_maps), fsp_matrices(t_maps)))


def connector(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


@METHODS.register("fsp")
class FSP(Method):
    Knobs = FSPKnobs
    needs_maps = True
    smoke_limits = {"init_epochs": 1}

    def __init__(self, knobs: FSPKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        self.n = min(len(student.map_shapes), len(teacher.map_shapes))
        if self.n < 2:
            raise ValueError(f"fsp needs two stage maps or more in both models (student has "
                             f"{len(student.map_shapes)}, teacher {len(teacher.map_shapes)}): an FSP matrix"
                             " relates two consecutive maps")
        pairs = zip(student.map_shapes[-self.n:], teacher.map_shapes[-self.n:])
        self.connectors = nn.ModuleList(
            nn.Identity() if cs == ct else connector(cs, ct)
            for cs, ct in ((map_shape(s)[0], map_shape(t)[0]) for s, t in pairs))

    def loss(self, s_maps: list[torch.Tensor], t_maps: list[torch.Tensor]) -> torch.Tensor:
        s = [c(as_map(f)) for c, f in zip(self.connectors, s_maps[-self.n:])]
        t = [f.detach() for f in t_maps[-self.n:]]
        return fsp_loss(s, t)

    def distill(self, step: Step) -> dict[str, Term]:
        return {"fsp": weighted(self.knobs.weight, self.loss(step.s.maps, step.t.maps))}

    def pretrain(self, ctx: Context) -> dict[str, float]:
        if self.knobs.init_epochs == 0:
            return {}
        return {"fsp_init_loss": match_maps_stage(self, ctx, self.knobs.init_epochs)}
