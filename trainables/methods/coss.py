"""CoSS (Singh & Wang): cosine similarity per sample plus *space* similarity per feature dimension.

With `k > 0` each batch of b anchors is extended by k of each anchor's `k_pool` nearest neighbours
in the teacher's embedding (pre-computed once, see trainables/neighbours.py): b*(1+k) images.

loss = beta * ( term(z_t, a_s) + lambda * term(z_t^T, a_s^T) ),
term(T, S) = -mean_rows <row(T)/tau_t, row(S)/tau_s>. On the transposes, each feature dimension
is L2-normalised over the batch (no centring): that is the space-similarity term.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from ..neighbours import neighbour_pools, sample_neighbours
from ..registry import METHODS
from .base import DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted

EPS = 1e-8


class CoSSKnobs(Knobs):
    lam: float = Field(1.0, ge=0, alias="lambda", description="weight of the space-similarity term")
    lambda_co: float = Field(1.0, ge=0, description="weight of the per-sample cosine term (CoSS supp. Table 2"
                                                     " sets it to 0 for 'L_ss only')")
    beta: float | None = Field(None, gt=0, description="loss scale; default 1 on ImageNet, 50 elsewhere")
    tau_t: float = Field(0.07, gt=0, description="teacher temperature (temperature: post)")
    tau_s: float = Field(0.1, gt=0, description="student temperature (temperature: post)")
    k: int = Field(0, ge=0, description="neighbours appended per anchor (CoSS ImageNet 15; CIFAR tables 0)")
    k_pool: int = Field(31, ge=1, description="pool of nearest teacher neighbours the k are drawn from (CoSS 31)")
    temperature: Literal["post", "pre"] | None = Field(
        None, description="post: normalise then divide (ImageNet code); pre: divide then normalise,"
                          " i.e. plain cosine (CIFAR code); default by dataset")

    @model_validator(mode="after")
    def _some_term(self) -> "CoSSKnobs":
        if self.lam == 0 and self.lambda_co == 0:
            raise ValueError("lambda and lambda_co are both 0: the loss would be empty")
        return self

    @model_validator(mode="after")
    def _pool_holds_k(self) -> "CoSSKnobs":
        if self.k > self.k_pool:
            raise ValueError(f"k ({self.k}) cannot exceed k_pool ({self.k_pool}): neighbours are drawn"
                             " without replacement from the pool")
        return self


def similarity_term(t: torch.Tensor, s: torch.Tensor, tau_t: float = 1.0, tau_s: float = 1.0) -> torch.Tensor:
    """-mean over rows of <row(t)/tau_t, row(s)/tau_s>."""
    return -((F.normalize(t, dim=1, eps=EPS) / tau_t) * (F.normalize(s, dim=1, eps=EPS) / tau_s)).sum(1).mean()


def projector(d_in: int, d_out: int) -> nn.Module:
    """The CoSS CIFAR projector: Linear -> ReLU -> Linear, no BatchNorm."""
    return nn.Sequential(nn.Linear(d_in, 2048), nn.ReLU(inplace=True), nn.Linear(2048, d_out))


@METHODS.register("coss")
class CoSS(Method):
    Knobs = CoSSKnobs

    def __init__(self, knobs: CoSSKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        imagenet = data.name == "imagenet"
        self.beta = knobs.beta if knobs.beta is not None else (1.0 if imagenet else 50.0)
        mode = knobs.temperature or ("post" if imagenet else "pre")
        # "pre" divides before normalising, so the temperatures cancel: plain cosine.
        self.tau_t, self.tau_s = (knobs.tau_t, knobs.tau_s) if mode == "post" else (1.0, 1.0)
        d_s, d_t = student.feature_dim, teacher.feature_dim
        self.proj = projector(d_s, d_t) if d_s != d_t else nn.Identity()
        self.pools: torch.Tensor | None = None  # set by setup when k > 0

    def setup(self, ctx) -> None:
        if self.knobs.k > 0:
            fingerprint = ctx.cfg["dataset"].get("fingerprint") or ctx.data.fingerprint()
            key = f"{ctx.cfg['teacher']['hash']}_{fingerprint}"
            self.pools = neighbour_pools(ctx.teacher, ctx.data, self.knobs.k_pool, key).to(ctx.device)

    @classmethod
    def smoke_knobs(cls, knobs: dict, n_train: int) -> dict:
        """A smoke set is too small for pools of 31 neighbours: k_pool at most a quarter of its images (set
        even where the sweep leaves the default), and k, where the sweep gives it, within that."""
        pool = max(1, n_train // 4)
        out = {"k_pool": min(knobs.get("k_pool", CoSSKnobs.model_fields["k_pool"].default), pool)}
        if "k" in knobs:
            out["k"] = min(knobs["k"], pool)
        return out

    @classmethod
    def batch_key(cls, knobs: CoSSKnobs) -> object:
        return {"k": knobs.k, "k_pool": knobs.k_pool} if knobs.k > 0 else None

    def batch_indices(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if self.pools is None:
            return idx
        return sample_neighbours(self.pools, idx, self.knobs.k, gen)

    def distill(self, step: Step) -> dict[str, Term]:
        # The teacher is a fixed target: detached, so the loss never reaches it however the caller ran it.
        a_s, z_t = self.proj(step.s.feature), step.t.feature.detach()
        co = similarity_term(z_t, a_s, self.tau_t, self.tau_s)
        ss = similarity_term(z_t.T, a_s.T, self.tau_t, self.tau_s)
        return {"co": weighted(self.beta * self.knobs.lambda_co, co), "ss": weighted(self.beta * self.knobs.lam, ss)}
