"""RRKD (Ramos, Alampay & Abu): match relative representations, i.e. cosine similarities to anchors.

V_m = row(z_m) · row(A_m)ᵀ (b × m), one row per sample, one column per anchor, for m in {s, t}.
L_D = -mean_i log( (cos(V_t,i, V_s,i) + 1) / 2 + 1e-8 ); the paper's Eq. 3 misplaces the +1, the
authors' code rescales the cosine to [0, 1] as here. L = weight · L_D + lambda_ce · CE (Eq. 4).
No projector: V has one column per anchor whatever d_s and d_t are.

`distance` is the authors' `d_type` (github.com/Ramos-Ramos/rrkd, rrkd.ipynb at aa4298b, class
LitDistiller): how V_s is compared with V_t. cos (their default, the paper's Eq. 3) is L_D above;
mse = F.mse_loss(V_s, V_t), the mean over all b × m entries; sce = F.cross_entropy(V_s / 2,
softmax(V_t / 2)), i.e. -mean_i Σ_j softmax(V_t,i / 2)_j log softmax(V_s,i / 2)_j.

Anchors (paper §5.4): `in_batch` uses the batch itself (A = z, diagonal kept; the paper's main
method); the fixed sets are chosen once per trial in `setup` from the training set and their images
(normalised, no augmentation) are re-encoded by both networks at every step.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_serializer

from ..evaluate import extract
from ..registry import METHODS
from .base import Context, DataInfo, Knobs, Method, ModelInfo, Step, Term, weighted


EPS = 1e-8           # row(): L2 normalisation (SPEC §1 notation)
LOG_EPS = 1e-8       # inside the log of L_D (paper §4: epsilon = 1e-8)
PROBE_STEPS = 100    # L-BFGS iterations of the linear probe that scores anchors
PROBE_L2 = 1e-4      # its L2 penalty on the weights


class RRKDKnobs(Knobs):
    lambda_ce: float = Field(1.0, ge=0, description=(
        "cross-entropy with labels: RRKD Eq. 4 sets lambda_CE 1 when distilling with labels (the supervised"
        " MNIST and CIFAR/SVHN experiments, Tables 2-3) and 0 without (self-supervised, Tables 1 and 5)"))
    weight: float = Field(1.0, gt=0, description="lambda_D of RRKD Eq. 4 (paper: 1)")
    distance: Literal["cos", "mse", "sce"] = Field("cos", description=(
        "how the relative representations are compared, the authors' d_type (rrkd.ipynb, LitDistiller): cos ="
        " -log((cos + 1)/2 + 1e-8), the paper's Eq. 3 and their default; mse = mean squared error; sce ="
        " cross-entropy of softmax(V_s / 2) against softmax(V_t / 2)"))
    anchors: Literal["in_batch", "random", "per_class", "best_per_class"] = Field("in_batch", description=(
        "anchor set (paper §5.4): in_batch is the main method; random, per_class and best_per_class are the"
        " fixed sets of the Table 5 ablation"))
    n_anchors: int = Field(128, ge=1, description=(
        "anchors of the `random` strategy (paper §5.4: 128, the batch size); capped at the training set"))
    per_class: int = Field(13, ge=1, description=(
        "anchors per class of `per_class` / `best_per_class` (paper §5.4: 13, the fewest per class giving"
        " >= 128 anchors on 10 classes)"))
    anchor_scorer: Literal["classifier", "probe"] = Field("classifier", description=(
        "what scores the teacher's confidence for best_per_class: its own classifier head, or a linear probe"
        " fitted on its features (the paper's self-supervised teacher has no head; a headless teacher always"
        " uses the probe)"))
    train_head: bool = Field(True, description=(
        "false: the student's classifier head keeps its initial weights, as in the authors' code, whose"
        " LitDistiller builds the head itself and optimises only `student.parameters()` (rrkd.ipynb cell 13):"
        " the cross-entropy then shapes the embedding through a fixed random head"))

    @model_serializer(mode="wrap")
    def _train_head_only_when_off(self, handler: Any) -> dict[str, Any]:
        """Dumped only when false: the trial configs and content hashes of earlier runs stay as they were."""
        out = handler(self)
        if self.train_head:
            out.pop("train_head", None)
        return out


def relative(z: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Relative representation: cosine similarity of each row of z to each anchor (b × m)."""
    return F.normalize(z, dim=1, eps=EPS) @ F.normalize(anchors, dim=1, eps=EPS).T


def rrkd_loss(v_s: torch.Tensor, v_t: torch.Tensor, distance: str = "cos") -> torch.Tensor:
    """cos: -mean_i log((cos(V_t,i, V_s,i) + 1)/2 + 1e-8); mse: mean (V_s - V_t)^2; sce: the cross-entropy
    of softmax(V_s / 2) against softmax(V_t / 2), averaged over rows (the notebook's d_type, line for line)."""
    if distance == "mse":
        return F.mse_loss(v_s, v_t)
    if distance == "sce":
        return F.cross_entropy(v_s / 2, (v_t / 2).softmax(dim=-1))
    cos = (F.normalize(v_t, dim=1, eps=EPS) * F.normalize(v_s, dim=1, eps=EPS)).sum(1)
    return -torch.log((cos + 1) / 2 + LOG_EPS).mean()


# --- anchor selection: pure functions of labels (and teacher probabilities) and a generator ------

def random_anchors(n_train: int, n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randperm(n_train, generator=gen)[:min(n, n_train)].sort().values


def per_class_anchors(y: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k random samples of each class (all of a class that has fewer)."""
    picks = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=gen)[:k]])
    return torch.cat(picks).sort().values


def best_per_class_anchors(probs: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per class, the k correctly classified samples with the highest true-class probability."""
    correct = probs.argmax(1) == y
    confidence = probs.gather(1, y[:, None]).squeeze(1)
    picks = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero((y == c) & correct).squeeze(1)
        order = confidence[members].argsort(descending=True, stable=True)
        picks.append(members[order[:k]])
    return torch.cat(picks).sort().values


def fit_probe(features: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logistic regression on frozen features (full batch, L-BFGS, zero init: deterministic); its logits."""
    head = torch.nn.Linear(features.shape[1], num_classes).to(features.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=PROBE_STEPS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(features), y) + PROBE_L2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return head(features)


def teacher_probs(ctx: Context, scorer: str) -> torch.Tensor:
    """The teacher's class probabilities on the training set under the evaluation transform."""
    features, logits = extract(ctx.teacher, ctx.data, "train")
    if scorer == "probe" or logits is None:
        logits = fit_probe(features, ctx.data.train_y.to(features.device), ctx.data.num_classes)
    return logits.float().softmax(1)


@METHODS.register("rrkd")
class RRKD(Method):
    Knobs = RRKDKnobs

    @classmethod
    def uses_teacher_logits(cls, knobs: RRKDKnobs) -> bool:
        # best_per_class scored by the teacher's own head reads its logits (once, in setup).
        scored_by_head = knobs.anchors == "best_per_class" and knobs.anchor_scorer == "classifier"
        return scored_by_head or knobs.lambda_kd > 0

    @classmethod
    def student_needs_head(cls, knobs: RRKDKnobs) -> bool:
        return cls.uses_labels(knobs) or knobs.lambda_kd > 0

    def __init__(self, knobs: RRKDKnobs, student: ModelInfo, teacher: ModelInfo, data: DataInfo):
        super().__init__(knobs, student, teacher, data)
        # Derived in setup from (seed, data, teacher) alone, so not checkpointed: a resume re-derives them.
        self.register_buffer("anchor_idx", None, persistent=False)
        self.register_buffer("anchor_x", None, persistent=False)

    def setup(self, ctx: Context) -> None:
        k = self.knobs
        if not k.train_head and getattr(ctx.student, "fc", None) is not None:
            ctx.student.fc.requires_grad_(False)  # left out of the optimiser, which takes trainable parameters
        if k.anchors == "in_batch":
            return
        y = ctx.data.train_y.cpu()
        gen = torch.Generator().manual_seed(ctx.seed)
        if k.anchors == "random":
            idx = random_anchors(len(y), k.n_anchors, gen)
        elif k.anchors == "per_class":
            idx = per_class_anchors(y, k.per_class, gen)
        else:
            idx = best_per_class_anchors(teacher_probs(ctx, k.anchor_scorer).cpu(), y, k.per_class)
            if len(idx) == 0:
                raise RuntimeError("rrkd best_per_class: the teacher classifies no training image correctly")
        self.anchor_idx = idx.to(ctx.device)
        self.anchor_x = ctx.data.eval_view("train", idx.to(ctx.data.train_y.device)).to(ctx.device)

    def anchor_features(self, step: Step) -> tuple[torch.Tensor, torch.Tensor]:
        if self.knobs.anchors == "in_batch":
            return step.s.feature, step.t.feature.detach()
        if self.anchor_x is None:
            raise RuntimeError(f"rrkd anchors={self.knobs.anchors!r}: setup(ctx) has not chosen the anchors")
        return step.student(self.anchor_x).feature, step.teacher(self.anchor_x).feature.detach()

    def distill(self, step: Step) -> dict[str, Term]:
        a_s, a_t = self.anchor_features(step)
        v_s = relative(step.s.feature, a_s)
        v_t = relative(step.t.feature.detach(), a_t)  # the teacher is a target only
        return {"rrkd": weighted(self.knobs.weight, rrkd_loss(v_s, v_t, self.knobs.distance))}
