"""FitNet (Romero et al., 2015): a hint on the middle stage map through a learnable conv regressor.

loss = mean over (b, C_t, H_t, W_t) of (r(s) - t)^2, r the regressor from the student's hint map to the
teacher's. Hint tap, regressor and single-stage training as in the CRD benchmark code (RepDistiller:
hint_layer 2 of [stem, stage1, stage2, stage3], models/util.py ConvReg, HintLoss = MSE, -b 100).

The hint map is index len(maps) // 2 of each model's maps (2 of CRD's four; on an MLP with hidden layers
[32, 32] the second, with [16] the only one) unless `hint_layer` names one index for both models.
"""
from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from ._maps import ConvReg, as_map
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted


class FitNetKnobs(Knobs):
    weight: float = Field(100.0, ge=0, description="base weight: 100 as CRD's scripts (-b 100)")
    hint_layer: int | None = Field(None, ge=0, description="index of the hint map in both models' maps;"
                                                          " default the middle one, len(maps) // 2: 2 of"
                                                          " [stem, stage1, stage2, stage3] as CRD's"
                                                          " hint_layer 2")


def hint_index(knobs: FitNetKnobs, info: ModelInfo, who: str) -> int:
    n = len(info.map_shapes)
    i = knobs.hint_layer if knobs.hint_layer is not None else n // 2
    if i >= n:
        raise ValueError(f"fitnet: hint_layer {i} but the {who} has {n} stage map(s)")
    return i


@METHODS.register("fitnet")
class FitNet(Method):
    Knobs = FitNetKnobs
    needs_maps = True

    def __init__(self, knobs: FitNetKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        self.s_layer = hint_index(knobs, student, "student")
        self.t_layer = hint_index(knobs, teacher, "teacher")
        self.regressor = ConvReg(student.map_shapes[self.s_layer], teacher.map_shapes[self.t_layer])

    def distill(self, step: Step) -> dict[str, Term]:
        s = self.regressor(step.s.maps[self.s_layer])
        t = as_map(step.t.maps[self.t_layer].detach())
        return {"fitnet": weighted(self.knobs.weight, F.mse_loss(s, t))}
