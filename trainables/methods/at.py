"""AT (Zagoruyko & Komodakis, 2017): attention transfer on the stage maps except the stem.

Attention map of a (b, C, H, W) map: a(f) = row( mean_c |f|^p ) over the H*W positions (L2-normalised
per sample). Per stage pair: mean over (b, H*W) of (a(f_s) - a(f_t))^2, the larger map first average-pooled
to the smaller one's size; the terms of all pairs are summed. p = 2 and the taps feat[1:-1] (every stage
output, not the stem) as in the CRD benchmark code (RepDistiller distiller_zoo/AT.py).

On an MLP a hidden layer (b, h) is the map (b, h, 1, 1): one position, so the attention map is 1 for
every sample (0 for an all-zero layer) and the loss is degenerate (0, no gradient): AT has nothing to
say about a map without spatial extent.

This module also holds the map helpers the other map-based methods share (`map_shape`, `as_map`,
`match_size`, `stage_pairs`).
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted

T = TypeVar("T")


# --- map helpers shared by the map-based methods -------------------------------------------------

def map_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """A stage map's shape without the batch dim as (C, H, W); an MLP's (h,) is (h, 1, 1)."""
    if len(shape) == 3:
        return int(shape[0]), int(shape[1]), int(shape[2])
    if len(shape) == 1:
        return int(shape[0]), 1, 1
    raise ValueError(f"a stage map is (C, H, W) or (h,), got shape {tuple(shape)}")


def as_map(f: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) as is; an MLP's hidden layer (b, h) as (b, h, 1, 1)."""
    if f.dim() == 4:
        return f
    if f.dim() == 2:
        return f[:, :, None, None]
    raise ValueError(f"a stage map is (b, C, H, W) or (b, h), got shape {tuple(f.shape)}")


def match_size(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two maps down to the other's spatial size (as CRD's losses do)."""
    h, w = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
    if a.shape[2:] != (h, w):
        a = F.adaptive_avg_pool2d(a, (h, w))
    if b.shape[2:] != (h, w):
        b = F.adaptive_avg_pool2d(b, (h, w))
    return a, b


def stage_maps(maps: Sequence[T]) -> list[T]:
    """CRD's feat[1:-1]: every stage output except the stem (maps[0]); a model with one map keeps it."""
    return list(maps[1:]) if len(maps) > 1 else list(maps)


def stage_pairs(s: Sequence[T], t: Sequence[T]) -> list[tuple[T, T]]:
    """(student, teacher) pairs of stage maps (shapes or tensors). When the two models have different
    numbers of stages (an MLP pair, say) the deepest ones are paired: last with last, and so on."""
    s, t = stage_maps(s), stage_maps(t)
    n = min(len(s), len(t))
    return list(zip(s[len(s) - n:], t[len(t) - n:]))


def check_pairs(name: str, student: ModelInfo, teacher: ModelInfo) -> int:
    n = len(stage_pairs(student.map_shapes, teacher.map_shapes))
    if n == 0:
        raise ValueError(f"method {name!r} needs stage maps from both models (student has "
                         f"{len(student.map_shapes)}, teacher {len(teacher.map_shapes)})")
    return n


# --- AT --------------------------------------------------------------------------------------------

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
