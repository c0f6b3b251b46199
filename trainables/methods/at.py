"""AT (Zagoruyko & Komodakis, 2017): attention transfer on the stage maps except the stem.

Attention map of a (b, C, H, W) map: a(f) = row( mean_c |f|^p ) over the H*W positions (L2-normalised
per sample). Per stage pair: mean over (b, H*W) of (a(f_s) - a(f_t))^2, the larger map first average-pooled
to the smaller one's size; the terms of all pairs are summed. p = 2 and the taps feat[1:-1] (every stage
output, not the stem) as in the CRD benchmark code (RepDistiller distiller_zoo/AT.py).

On an MLP a hidden layer (b, h) is the map (b, h, 1, 1): one position, so the attention map is 1 for
every sample (0 for an all-zero layer) and the loss is degenerate (0, no gradient): AT has nothing to
say about a map without spatial extent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from ._maps import as_map, check_pairs, match_size, stage_pairs
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted


class ATKnobs(Knobs):
    weight: float = Field(1000.0, ge=0, description="base weight: 1000 as the CoSS supplement and"
                                                    " CRD's scripts (-b 1000)")
    p: float = Field(2.0, gt=0, description="attention map = mean over channels of |f|^p; 2 as the paper"
                                            " and CRD")


def attention(f: torch.Tensor, p: float) -> torch.Tensor:
    """(b, C, H, W) -> (b, H*W): mean_c |f|^p, L2-normalised per sample."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(s: torch.Tensor, t: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    s, t = match_size(as_map(s), as_map(t))
    return (attention(s, p) - attention(t, p)).pow(2).mean()


@METHODS.register("at")
class AT(Method):
    Knobs = ATKnobs
    needs_maps = True

    def __init__(self, knobs: ATKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        check_pairs("at", student, teacher)

    def distill(self, step: Step) -> dict[str, Term]:
        pairs = stage_pairs(step.s.maps, step.t.maps)
        loss = sum(at_loss(s, t.detach(), self.knobs.p) for s, t in pairs)
        return {"at": weighted(self.knobs.weight, loss)}
