"""Stage-map helpers the map-based methods share (AT, FitNet, AB, FSP, FT, NST, VID): shapes, pairing of
the student's and the teacher's stages, size matching, and CRD's conv regressor."""
from __future__ import annotations

from typing import Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelInfo

T = TypeVar("T")


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


class ConvReg(nn.Module):
    """CRD's ConvReg: maps a (C_s, H_s, W_s) map to (C_t, H_t, W_t), conv -> BN (-> ReLU).

    H_s = 2 H_t: 3x3 conv, stride 2; 2 H_s = H_t: 4x4 transposed conv, stride 2; H_s >= H_t: a conv with
    kernel (1 + H_s - H_t, 1 + W_s - W_t) (1x1 when sizes agree). CRD raises for any other smaller
    student map; here a transposed conv with kernel (1 + H_t - H_s, 1 + W_t - W_s) covers it.
    """

    def __init__(self, s_shape: Sequence[int], t_shape: Sequence[int], relu: bool = True):
        super().__init__()
        (sc, sh, sw), (tc, th, tw) = map_shape(s_shape), map_shape(t_shape)
        if (sh, sw) == (2 * th, 2 * tw):
            self.conv = nn.Conv2d(sc, tc, 3, stride=2, padding=1)
        elif (2 * sh, 2 * sw) == (th, tw):
            self.conv = nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
        elif sh >= th and sw >= tw:
            self.conv = nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
        elif sh <= th and sw <= tw:
            self.conv = nn.ConvTranspose2d(sc, tc, (1 + th - sh, 1 + tw - sw))
        else:
            raise ValueError(f"no conv regressor from a {sh}x{sw} map to a {th}x{tw} one")
        self.bn = nn.BatchNorm2d(tc)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(as_map(x)))
        return torch.relu(x) if self.relu else x
