"""CRD (Tian, Krishnan & Isola, ICLR 2020): contrastive representation distillation, label-free.

Both pooled features are embedded (Linear -> L2 norm, 128-d). Each side keeps a memory bank with one
row per training image; a sample's positive is its own row in the *other* side's bank and its
negatives are `nce_k` other rows drawn uniformly (the unsupervised mode of SPEC §1: no labels, so no
class-aware negatives). With s the student embedding and M_t the teacher bank (and symmetrically),
  P_j = exp(<M_t[j], s> / T) / Z,   Z = mean of exp(·/T) over the first batch × num_train (fixed then),
  nce = -1/b Σ_i [ log P_pos / (P_pos + K/N + 1e-7) + Σ_neg log (K/N) / (P_neg + K/N + 1e-7) ]  (CRD Eq. 18).
loss = weight · (nce_s + nce_t); after scoring, the batch's own rows of each bank move to
normalise(m · row + (1 - m) · embedding). The banks, and Z, are buffers: they checkpoint with the method.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted

NCE_EPS = 1e-7   # the CRD code's eps in Eq. 18
# Score against the whole bank (one matmul, then gather) when it is at most this many times the
# sampled rows: far less memory than gathering b × (K+1) × d rows, and the same numbers.
FULL_SCORE_RATIO = 8


class CRDKnobs(Knobs):
    weight: float = Field(0.8, gt=0, description=(
        "base weight (CRD benchmark code: -b 0.8; the CoSS supplement's unsupervised baseline uses the same)"))
    feat_dim: int = Field(128, ge=1, description="embedding dimension of both heads (CRD code: --feat_dim 128)")
    nce_k: int = Field(16384, ge=1, description=(
        "negatives per positive (CRD code: --nce_k 16384); capped at num_train - 1"))
    nce_t: float = Field(0.07, gt=0, description="temperature (CRD code: --nce_t 0.07)")
    nce_m: float = Field(0.5, ge=0, lt=1, description="memory-bank momentum (CRD code: --nce_m 0.5)")


class Embed(nn.Module):
    """CRD's embedding head: Linear -> L2 normalisation."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), dim=1)


def contrast_indices(pos: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """(b, 1 + k): each row its positive, then k indices drawn uniformly from the other n - 1 samples."""
    neg = torch.randint(0, n - 1, (len(pos), k), device=pos.device)
    neg = neg + (neg >= pos[:, None]).long()  # skip the positive itself
    return torch.cat([pos[:, None], neg], 1)


def bank_scores(v: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """<bank[idx[i, j]], v[i]> for each i, j: (b, 1 + k)."""
    if bank.shape[0] <= FULL_SCORE_RATIO * idx.shape[1]:
        return (v @ bank.T).gather(1, idx)
    return torch.bmm(bank[idx], v[:, :, None]).squeeze(2)


def nce_loss(p: torch.Tensor, n_data: int) -> torch.Tensor:
    """CRD Eq. 18 on normalised scores p (b, 1 + k), column 0 the positive; noise prior K / N."""
    m = p.shape[1] - 1
    noise = m / n_data
    log_d1 = torch.log(p[:, 0] / (p[:, 0] + noise + NCE_EPS))
    log_d0 = torch.log(noise / (p[:, 1:] + noise + NCE_EPS))
    return -(log_d1.sum() + log_d0.sum()) / p.shape[0]


def momentum_update(bank: torch.Tensor, idx: torch.Tensor, v: torch.Tensor, m: float) -> torch.Tensor:
    """A new bank whose rows idx are normalise(m · bank[idx] + (1 - m) · v); the other rows unchanged."""
    rows = bank[idx] * m + v.detach() * (1 - m)
    return bank.index_copy(0, idx, rows / rows.norm(dim=1, keepdim=True))


@METHODS.register("crd")
class CRD(Method):
    Knobs = CRDKnobs

    def __init__(self, knobs: CRDKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        if data.num_train < 2:
            raise ValueError("crd needs at least 2 training samples (one positive and one negative)")
        d = knobs.feat_dim
        self.n_data = data.num_train
        self.k = min(knobs.nce_k, data.num_train - 1)
        self.embed_s = Embed(student.feature_dim, d)
        self.embed_t = Embed(teacher.feature_dim, d)
        stdv = 1.0 / math.sqrt(d / 3)  # the CRD code's bank init: uniform in [-stdv, stdv]
        self.register_buffer("memory_s", torch.rand(data.num_train, d).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("memory_t", torch.rand(data.num_train, d).mul_(2 * stdv).sub_(stdv))
        # Z of each side, set from the first batch (negative = not set yet), as the CRD code does.
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))

    def normalised(self, scores: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = torch.exp(scores / self.knobs.nce_t)
        if z.item() < 0:
            z.fill_(out.detach().mean().item() * self.n_data)
        return out / z

    def distill(self, step: Step) -> dict[str, Term]:
        k = self.knobs
        s = self.embed_s(step.s.feature)
        t = self.embed_t(step.t.feature.detach())  # embed_t learns; the teacher does not
        pos = step.idx.to(self.memory_s.device)
        idx = contrast_indices(pos, self.n_data, self.k)
        # The student's embedding is scored against the teacher's bank, and the other way round.
        out_s = self.normalised(bank_scores(s, self.memory_t, idx), self.z_s)
        out_t = self.normalised(bank_scores(t, self.memory_s, idx), self.z_t)
        with torch.no_grad():  # out of place: the old banks may be saved for the backward pass
            self.memory_s = momentum_update(self.memory_s, pos, s, k.nce_m)
            self.memory_t = momentum_update(self.memory_t, pos, t, k.nce_m)
        return {"crd_s": weighted(k.weight, nce_loss(out_s, self.n_data)),
                "crd_t": weighted(k.weight, nce_loss(out_t, self.n_data))}
