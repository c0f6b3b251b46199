"""NST (Huang & Wang, 2017): neuron selectivity transfer, an MMD between the two sets of channels.

Per stage pair (the larger map average-pooled to the smaller one's size), each channel's H*W responses
are L2-normalised; with the polynomial kernel k(x, y) = (x . y)^2 (d = 2, c = 0) and the channels of one
sample as the two sets,
    MMD^2 = mean_ij k(t_i, t_j) + mean_ij k(s_i, s_j) - 2 mean_ij k(s_i, t_j),
averaged over the batch and summed over the pairs. Taps feat[1:-1] (every stage output, not the stem),
kernel and the full MMD (teacher-teacher term included, a constant) as in the CRD benchmark code
(RepDistiller distiller_zoo/NST.py). Channel counts may differ; only the spatial sizes are matched.

Base weight 50: CRD's scripts/run_cifar_distill.sh (`--distill nst -b 50`, RepDistiller b84f547c). The CoSS
supplement (Table 1) adapted CRD's code and lists no weights of its own, so it ran this one too.

On an MLP a hidden layer (b, h) is (b, h, 1, 1): each "channel" has one response, normalised to its sign,
so the loss only compares which units are active and gives no gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..registry import METHODS
from ._maps import as_map, check_pairs, match_size, stage_pairs
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted


class NSTKnobs(Knobs):
    weight: float = Field(50.0, ge=0, description="base weight: 50 as CRD's scripts/run_cifar_distill.sh"
                                                  " (-b 50), which the CoSS supplement's adapted CRD code ran")


def poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(b, n, d), (b, m, d) -> mean of (a_i . b_j)^2 over the batch and all (i, j)."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


def nst_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    s, t = match_size(as_map(s), as_map(t))
    s, t = F.normalize(s.flatten(2), dim=2), F.normalize(t.flatten(2), dim=2)
    return poly_kernel(t, t) + poly_kernel(s, s) - 2 * poly_kernel(s, t)


@METHODS.register("nst")
class NST(Method):
    Knobs = NSTKnobs
    needs_maps = True

    def __init__(self, knobs: NSTKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        check_pairs("nst", student, teacher)

    def distill(self, step: Step) -> dict[str, Term]:
        pairs = stage_pairs(step.s.maps, step.t.maps)
        return {"nst": weighted(self.knobs.weight, sum(nst_loss(s, t.detach()) for s, t in pairs))}
