"""`rkd`: relational KD (Park et al., CVPR 2019), on the pooled features.

distance: psi_D(i, j) = ||f_i - f_j|| / mu, mu the mean over the b(b-1) distinct pairs;
angle: psi_A(i, j, k) = <e(f_j - f_i), e(f_k - f_i)> with e() L2-normalising (vertex i; a zero
vector, j = i or k = i, gives 0 on both sides). Each term is the Huber loss (delta 1) between teacher
and student, averaged over all b^2 pairs / b^3 triplets (degenerate ones are 0 on both sides).
dist = weight * w_dist * L_D, angle = weight * w_angle * L_A. Dimensions may differ: nothing is learned.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from .base import Knobs, Method, Step, Term, weighted

EPS = 1e-12


class RKDKnobs(Knobs):
    weight: float = Field(1.0, ge=0, description="loss weight: CRD's RKD -b 1, the CoSS supp. base weight")
    w_dist: float = Field(25.0, ge=0, description="weight of the distance term (Park et al.: 25)")
    w_angle: float = Field(50.0, ge=0, description="weight of the angle term (Park et al.: 50)")


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (b, b) with an exact 0 diagonal and finite gradients."""
    sq = x.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(EPS)
    off = 1.0 - torch.eye(len(x), device=x.device, dtype=x.dtype)
    return d2.sqrt() * off


def distance_potential(x: torch.Tensor) -> torch.Tensor:
    d = pairwise_distances(x)
    b = len(x)
    return d / (d.sum() / max(b * (b - 1), 1)).clamp_min(EPS)


def angle_potential(x: torch.Tensor) -> torch.Tensor:
    e = F.normalize(x[None, :, :] - x[:, None, :], dim=2)  # e[i, j] = unit(x_j - x_i)
    return torch.bmm(e, e.transpose(1, 2))                  # [i, j, k] = cos of angle j-i-k


def rkd_terms(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = s.flatten(1), t.flatten(1)
    dist = F.smooth_l1_loss(distance_potential(s), distance_potential(t))
    angle = F.smooth_l1_loss(angle_potential(s), angle_potential(t))
    return dist, angle


@METHODS.register("rkd")
class RKD(Method):
    Knobs = RKDKnobs

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        dist, angle = rkd_terms(step.s.feature, step.t.feature.detach())
        return {"dist": weighted(k.weight * k.w_dist, dist), "angle": weighted(k.weight * k.w_angle, angle)}
