"""What every distillation method shares: typed knobs, the common CE/KD terms, named loss terms.

A method is one file: a `Method` subclass with a `Knobs` model, registered in METHODS. The trainer
calls, in order: `__init__` (build learnable modules: projectors, regressors...), `setup(ctx)` once
per trial (neighbour pools, anchor sets, memory banks), `pretrain(ctx)` once before training (FT's
paraphraser, AB/FSP's initialisation), then per step `batch_indices` and `forward(step)`.
`distill` returns named terms, each `weighted(weight, raw)`; the base applies `scale`, adds `ce` and
`kd`, and the trainer logs each term weighted (`train/<name>`, what the loss adds up) and raw
(`train/raw/<name>`, comparable across a sweep over its weight). Modules a method adds are its attributes: they train with the student and are dropped after.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..datasets import ImageData, train_batches
from ..models import Backbone, Output


class Knobs(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)  # a nan weight trains nothing

    lambda_ce: float = Field(0.0, ge=0, description="cross-entropy with labels (0 = unsupervised)")
    lambda_kd: float = Field(0.0, ge=0, description="Hinton KD on logits, temperature kd_T")
    kd_T: float = Field(4.0, gt=0, description="temperature of the lambda_kd term")
    scale: float = Field(1.0, gt=0, description="multiplier on the method's own terms")


@dataclass
class ModelInfo:
    """What a method may size its modules by: read off a forward pass of the real model."""
    feature_dim: int
    map_shapes: list[tuple[int, ...]]  # each stage map without the batch dim: (C, H, W), or (H,) for an MLP
    num_classes: int                   # 0 when the model has no head


@dataclass
class DataInfo:
    name: str
    num_classes: int
    num_train: int


class NonFiniteLoss(RuntimeError):
    """Deterministic given the config: the trial is failed for good, never retried."""

    def __init__(self, msg: str, epoch: int | None = None):
        super().__init__(msg)
        self.epoch = epoch


@dataclass
class Context:
    """What a method's `setup` and `pretrain` hooks may use."""
    cfg: dict
    data: ImageData
    student: Backbone
    teacher: Backbone | None
    device: torch.device
    seed: int
    batch_size: int

    workers: int = 0

    def batches(self, epoch: int):
        """(x, y, idx) of one shuffled, augmented epoch; a function of (seed, epoch) alone."""
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + epoch)
        order = list(train_batches(self.data.num_train, self.batch_size, gen))
        for idx, x, y in self.data.epoch(order, gen, self.workers):
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), idx


@dataclass
class Step:
    x: torch.Tensor           # the augmented batch, as the networks saw it
    y: torch.Tensor
    idx: torch.Tensor         # dataset indices of the batch's samples (memory banks key on them)
    s: Output
    t: Output | None
    student: Callable[[torch.Tensor], Output]           # extra forwards, with gradient (anchors...)
    teacher: Callable[[torch.Tensor], Output] | None    # extra forwards, no gradient
    epoch: int


class Term(NamedTuple):
    weight: float
    raw: torch.Tensor


def weighted(weight: float, raw: torch.Tensor) -> Term:
    """A loss term as its weight and its unweighted value: the loss adds weight * raw, and both are
    logged, so a curve read across a sweep over the weight compares like with like."""
    return Term(float(weight), raw)


class Terms(dict):
    """The weighted terms (name -> tensor, what the loss sums), with the unweighted ones in `raw`."""

    def __init__(self):
        super().__init__()
        self.raw: dict[str, torch.Tensor] = {}

    def add(self, name: str, weight: float, raw: torch.Tensor) -> None:
        self[name] = weight * raw
        self.raw[name] = raw


class Method(nn.Module):
    Knobs: ClassVar[type[Knobs]] = Knobs
    needs_teacher: ClassVar[bool] = True
    needs_maps: ClassVar[bool] = False   # ask the models for their stage maps
    preact: ClassVar[bool] = False       # ...taken before the last ReLU of each stage
    teacher_logits: ClassVar[bool] = False  # the method itself reads the teacher's logits
    # Trains on 4 rotated views of each image (`ImageData.with_rotations`): a step's x, and the models'
    # outputs, hold 4b rows for its b labels.
    rotated_views: ClassVar[bool] = False
    # Largest values `kd-sweep run --smoke` gives these knobs (a pre-stage's epochs): a smoke run is a
    # pipeline check of a minute or so, and a 30-epoch pre-stage would be most of it.
    smoke_limits: ClassVar[dict[str, int]] = {}

    def __init__(self, knobs: Knobs, student: ModelInfo, teacher: ModelInfo | None, data: DataInfo):
        super().__init__()
        self.knobs = knobs
        self.data = data

    # --- what the method needs: used by validation and by the trainer --------------------------

    @classmethod
    def uses_labels(cls, knobs: Knobs) -> bool:
        return knobs.lambda_ce > 0

    @classmethod
    def uses_teacher_logits(cls, knobs: Knobs) -> bool:
        return cls.teacher_logits or knobs.lambda_kd > 0

    @classmethod
    def has_main_loss(cls, knobs: Knobs) -> bool:
        """False when every term of the main stage is weighted 0 (AB/FSP act in their pre-stage only)."""
        return getattr(knobs, "weight", 1.0) > 0 or knobs.lambda_ce > 0 or knobs.lambda_kd > 0

    @classmethod
    def student_needs_head(cls, knobs: Knobs) -> bool:
        return cls.uses_labels(knobs) or cls.uses_teacher_logits(knobs)

    # --- hooks --------------------------------------------------------------------------------

    def setup(self, ctx: Context) -> None:
        """Once per trial, before training (also after a resume): derived data, no learning."""

    def pretrain(self, ctx: Context) -> dict[str, float]:
        """A stage before distillation; runs once (not again after a resume). Returns its metrics."""
        return {}

    @classmethod
    def smoke_knobs(cls, knobs: dict[str, Any], n_train: int) -> dict[str, Any]:
        """The knob values `--smoke` sets for this method, training on `n_train` images, given values the
        sweep gives it (`knobs`, by the names the sweep uses: its fixed knobs, or one grid value, or one
        cell; any knob may be absent). By default each of `smoke_limits`, its value or default held to it."""
        given = {**{f.alias or n: f.default for n, f in cls.Knobs.model_fields.items()}, **knobs}
        return {k: min(given[k], top) for k, top in cls.smoke_limits.items()}

    @classmethod
    def batch_key(cls, knobs: Knobs) -> object:
        """What, besides the sampled indices, decides `batch_indices` (None: nothing). Students whose
        methods give equal keys see the same batches and may share a teacher forward (packing)."""
        return None

    def batch_indices(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The dataset indices that make up a step's batch, given the step's sampled indices."""
        return idx

    def distill(self, step: Step) -> dict[str, Term]:
        raise NotImplementedError

    def forward(self, step: Step) -> Terms:
        k = self.knobs
        terms = Terms()
        for name, term in self.distill(step).items():
            terms.add(name, k.scale * term.weight, term.raw)
        if k.lambda_ce > 0:
            terms.add("ce", k.lambda_ce, F.cross_entropy(step.s.logits, step.y))
        if k.lambda_kd > 0:
            terms.add("kd", k.lambda_kd, kd_loss(step.s.logits, step.t.logits, k.kd_T))
        return terms


def kd_loss(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Hinton et al.: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    return T * T * F.kl_div(F.log_softmax(s_logits / T, 1), F.log_softmax(t_logits / T, 1),
                            reduction="batchmean", log_target=True)
