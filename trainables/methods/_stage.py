"""The stage before distillation some methods run (`Method.pretrain`): AB's and FSP's initialisation,
FT's paraphraser. A small training loop of its own, on the trial's batches."""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch

from .base import Context, NonFiniteLoss


def run_stage(ctx: Context, params: Iterable[torch.Tensor], epochs: int,
              batch_loss: Callable[[torch.Tensor], torch.Tensor], lr: float | None = None,
              milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """A stage before distillation: SGD (the trial's momentum and weight decay; its lr unless `lr` is
    given, times `gamma` after each of the stage's epochs in `milestones`) over `params` for `epochs`
    passes of `ctx.batches`, minimising `batch_loss(x)`. Stage epoch e draws ctx.batches(-e), so its
    order and augmentation differ from those of main epoch e. Returns the last epoch's mean loss."""
    tr = ctx.cfg["train"]
    opt = torch.optim.SGD(list(params), lr=lr if lr is not None else tr["lr"], momentum=tr["momentum"],
                          weight_decay=tr["weight_decay"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), gamma)
    mean = float("nan")
    for e in range(1, epochs + 1):
        total, steps = torch.zeros((), device=ctx.device), 0
        for x, _, _ in ctx.batches(-e):
            loss = batch_loss(x)
            if not torch.isfinite(loss):
                raise NonFiniteLoss(f"pre-training loss is not finite at stage epoch {e}, step {steps + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            steps += 1
        mean = float(total) / max(steps, 1)
        sched.step()
    return mean


def match_maps_stage(method, ctx: Context, epochs: int) -> float:
    """AB's and FSP's initialisation: train the student and the method's connectors so that
    `method.loss(student maps, teacher maps)` falls, before distillation proper."""
    ctx.student.train()
    ctx.teacher.eval()
    method.train()

    def batch_loss(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = ctx.teacher(x, with_maps=True, preact=method.preact)
        return method.loss(ctx.student(x, with_maps=True, preact=method.preact).maps, t.maps)

    params = [p for p in list(ctx.student.parameters()) + list(method.connectors.parameters()) if p.requires_grad]
    return run_stage(ctx, params, epochs, batch_loss)
