"""One trial: train a student (or a teacher) from a resolved config, report once per epoch.

`fit` knows nothing of Ray: it takes a `report(metrics, state, final_model)` callback and an
optional state to resume from. `tune_trainable` adapts it to Ray Tune (checkpoint per epoch).
The config is the plain dict `orchestrator.trials` builds; every number that matters is in it.
"""
from __future__ import annotations

import json
import logging
import os
import random
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch

from dataclasses import dataclass

from .datasets import ImageData, load_dataset, train_batches
from .evaluate import classifier_top1, evaluate
from .methods import method_class
from .methods.base import DataInfo, Method, ModelInfo, Step
from .models import Backbone, Output, build_model

Report = Callable[[dict[str, float], dict[str, Any], dict[str, torch.Tensor] | None], None]


LOADER_ARGS = ("download", "verify_checksum", "augment", "val_split", "val_seed", "train_fraction", "max_train",
               "max_test", "image_size")


class NonFiniteLoss(RuntimeError):
    """Deterministic given the config: the trial is failed for good, never retried."""

    def __init__(self, msg: str, epoch: int | None = None):
        super().__init__(msg)
        self.epoch = epoch


class InjectedFault(RuntimeError):
    """Raised by KD_SWEEP_FAULT (tests of retry and resume only)."""


def maybe_fault(cfg: dict, epoch: int) -> None:
    """Faults for the tests of retry and resume, from KD_SWEEP_FAULT (comma-separated):
    "crash:E:DIR" makes each trial raise once, at the start of epoch E (a marker file per trial in DIR
    makes it once, so the retry from the epoch E-1 checkpoint goes through); "slow:S" sleeps S seconds
    an epoch, so a test can kill a driver mid-trial."""
    for fault in filter(None, os.environ.get("KD_SWEEP_FAULT", "").split(",")):
        kind, _, arg = fault.partition(":")
        if kind == "slow":
            time.sleep(float(arg))
        elif kind == "crash":
            at, _, where = arg.partition(":")
            marker = os.path.join(where, f"{cfg['config_hash']}.crashed")
            if epoch == int(at) and not os.path.exists(marker):
                os.makedirs(where, exist_ok=True)
                open(marker, "w").close()
                raise InjectedFault(f"KD_SWEEP_FAULT: crashed at the start of epoch {epoch}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(cfg: dict, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training step: bf16 on CUDA unless `precision: fp32`; none on CPU
    unless `precision: bf16` (CPU bf16 is slower than fp32 on most chips)."""
    p = cfg.get("precision", "auto")
    if p == "bf16" or (p == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def pick_device(cfg: dict) -> torch.device:
    if cfg["resources"]["gpu"] > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def make_model(spec: dict, data: ImageData, with_head: bool) -> Backbone:
    with_head = with_head and spec.get("head", True)  # `head: False`: a teacher given without classifier
    return build_model(spec["model"], num_classes=data.num_classes if with_head else 0,
                       in_channels=data.in_channels, image_size=data.image_size, **spec.get("options", {}))


@torch.no_grad()
def model_info(model: Backbone, data: ImageData, preact: bool) -> ModelInfo:
    was = model.training
    model.eval()
    x = data.eval_view("train", slice(0, 2)).to(next(model.parameters()).device)
    out = model(x, with_maps=True, preact=preact)
    model.train(was)
    return ModelInfo(out.feature.shape[1], [tuple(m.shape[1:]) for m in out.maps], model.num_classes)


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


def load_teacher(cfg: dict, data: ImageData, state: dict[str, torch.Tensor], device: torch.device) -> Backbone:
    teacher = make_model(cfg["teacher"], data, with_head=True)
    teacher.load_state_dict(state)
    teacher.to(device).eval()  # frozen: BatchNorm statistics and dropout stay in eval mode
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def fit(cfg: dict, report: Report, teacher_state: dict[str, torch.Tensor] | None = None,
        resume: dict[str, Any] | None = None, init_state: dict[str, torch.Tensor] | None = None) -> None:
    """`teacher_state`: the frozen teacher's weights; `init_state`: weights to start the model from
    (a teacher given as a checkpoint is evaluated from them)."""
    t_start = time.perf_counter()
    # A trial uses the CPU share it asked for (Ray sets OMP_NUM_THREADS=1 in its workers otherwise).
    torch.set_num_threads(max(1, int(cfg["resources"]["cpu"])))
    device = pick_device(cfg)
    seed = cfg["seed"]
    seed_everything(seed)
    deterministic = bool(cfg.get("deterministic"))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(deterministic)  # set either way: a process may run several trials
    torch.backends.cudnn.benchmark = not deterministic
    ds = cfg["dataset"]
    data = load_dataset(ds["name"], ds["root"], **{k: ds[k] for k in LOADER_ARGS if k in ds}).to(device)

    cls = method_class(cfg["method"])
    knobs = cls.Knobs.model_validate(cfg["knobs"])
    teacher = None
    if cls.needs_teacher:
        if teacher_state is None:
            raise RuntimeError(f"method {cfg['method']!r} needs a teacher and the trial was given none")
        teacher = load_teacher(cfg, data, teacher_state, device)
    student = make_model(cfg["student"], data, with_head=cls.student_needs_head(knobs)).to(device)
    amp = amp_dtype(cfg, device)
    # NHWC convolutions: tensor cores on CUDA, and measured faster on CPU too (oneDNN: +5% for
    # resnet32x4->resnet8x4, +16% for resnet56->resnet20 on this 2-core machine).
    student.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher.to(memory_format=torch.channels_last)
    if init_state is not None:
        student.load_state_dict(init_state)
    method = cls(knobs, model_info(student, data, cls.preact),
                 model_info(teacher, data, cls.preact) if teacher is not None else None,
                 DataInfo(ds["name"], data.num_classes, data.num_train)).to(device)
    # Data that streams from disk (ImageNet) decodes in worker processes: one core stays with the trial.
    workers = max(0, int(cfg["resources"]["cpu"]) - 1)
    data.workers = workers
    ctx = Context(cfg, data, student, teacher, device, seed, cfg["train"]["batch_size"], workers)
    method.setup(ctx)

    sched_cfg = cfg["train"]
    params = [p for p in list(student.parameters()) + list(method.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=sched_cfg["lr"], momentum=sched_cfg["momentum"],
                          weight_decay=sched_cfg["weight_decay"])
    sched = make_scheduler(opt, sched_cfg)

    start, pre, best, spent = 1, {}, 0.0, 0.0
    if resume is not None:
        student.load_state_dict(resume["student"])
        method.load_state_dict(resume["method"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        start, best = resume["epoch"] + 1, resume.get("best_classifier_top1", 0.0)
        spent = resume.get("wall_s", 0.0)
    else:
        pre = {f"pretrain/{k}": v for k, v in method.pretrain(ctx).items()}
    # The student's own classifier is scored every epoch: RepDistiller reports the last epoch,
    # mdistiller the best, so both are kept. Probes and k-NN score the final features only.
    per_epoch = "classifier" in cfg["eval"] and student.fc is not None
    final_protocols = {k: v for k, v in cfg["eval"].items() if k != "classifier" or not per_epoch}

    def state(epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """`metrics`: what the epoch reported, so a driver that died before logging the last epoch
        gets it from the checkpoint instead of a second evaluation."""
        return {"student": student.state_dict(), "method": method.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch, "best_classifier_top1": best,
                "wall_s": wall(), "metrics": metrics}

    def wall() -> float:
        """Seconds this trial has run, over every resume: what a cell costs."""
        return spent + time.perf_counter() - t_start

    epochs = sched_cfg["epochs"]
    gen = torch.Generator(device=device)
    for epoch in range(start, epochs + 1):
        maybe_fault(cfg, epoch)
        # The data order of epoch e is a function of (seed, e) alone, so a resumed trial replays it.
        gen.manual_seed(seed * 1_000_003 + epoch)
        lr = opt.param_groups[0]["lr"]
        try:
            metrics = train_epoch(student, teacher, method, data, opt, gen, sched_cfg["batch_size"], epoch, workers,
                                  amp)
        except torch.cuda.OutOfMemoryError as e:
            raise RuntimeError(
                f"GPU out of memory in trial {cfg.get('name', '?')} at batch size {sched_cfg['batch_size']}"
                f" ({device_name(cfg)}, resources.gpu {cfg['resources']['gpu']:g}): lower train.batch_size,"
                " or give each trial a larger GPU share") from e
        sched.step()
        metrics["train/lr"] = lr
        if epoch == epochs and sched_cfg.get("bn_recalibrate"):
            recalibrate_bn(student, data, sched_cfg["batch_size"], seed)
        if epoch == start:
            metrics.update(pre)
        if per_epoch:
            metrics["eval/classifier_top1"] = classifier_top1(student, data)
            best = max(best, metrics["eval/classifier_top1"])
        if epoch == epochs:
            metrics.update(evaluate(student, data, final_protocols, seed))
            if per_epoch:
                metrics["eval/classifier_top1_best"] = best
        metrics["cost/wall_s"] = wall()  # every epoch: a trial that dies still shows what it cost
        report({"epoch": epoch, **metrics}, state(epoch, metrics), student.state_dict() if epoch == epochs else None)
    if start > epochs and resume is not None and resume.get("metrics") and resume["epoch"] == epochs > 0:
        # Resumed after its last epoch (the driver died before logging it): that epoch's report again.
        report({"epoch": epochs, **resume["metrics"]}, resume, student.state_dict())
    elif start > epochs:  # nothing to train (a given teacher)
        final = evaluate(student, data, cfg["eval"], seed)
        if "eval/classifier_top1" in final:
            final["eval/classifier_top1_best"] = max(best, final["eval/classifier_top1"])
        final["cost/wall_s"] = wall()
        report({"epoch": epochs, **final}, state(epochs, final), student.state_dict())


def make_scheduler(opt: torch.optim.Optimizer, sched_cfg: dict) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    if sched_cfg.get("lr_schedule", "step") == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, sched_cfg["epochs"]))
    return torch.optim.lr_scheduler.MultiStepLR(opt, sched_cfg["milestones"], sched_cfg["gamma"])


@torch.no_grad()
def recalibrate_bn(model: Backbone, data: ImageData, batch_size: int, seed: int = 0) -> int:
    """BatchNorm running statistics recomputed as the equal-weight average of the batch statistics
    over one pass of the training images under the training augmentation (what the model sees when it
    teaches), weights untouched. Returns the number of BatchNorm layers reset."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    was = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    model.train()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    order = [torch.arange(i, min(i + batch_size, data.num_train)) for i in range(0, data.num_train, batch_size)]
    for _, x, _ in data.epoch(order, gen):
        if len(x) > 1:  # a last batch of one image has no batch statistics
            model(x.to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was)
    return len(bns)


def train_epoch(student: Backbone, teacher: Backbone | None, method: Method, data: ImageData,
                opt: torch.optim.Optimizer, gen: torch.Generator, batch_size: int, epoch: int,
                workers: int = 0, amp: torch.dtype | None = None) -> dict[str, float]:
    """One pass over the training set. `amp`: the autocast dtype of the forward passes and the loss
    (bf16), or None for fp32; the backward pass and the optimiser step stay in the weights' fp32."""
    student.train()
    method.train()
    sums: dict[str, torch.Tensor] = {}
    seen, steps = 0, 0
    t0 = time.perf_counter()
    maps, preact = method.needs_maps, method.preact

    def run_student(x: torch.Tensor) -> Output:
        return student(x, with_maps=maps, preact=preact)

    def run_teacher(x: torch.Tensor) -> Output:
        with torch.no_grad():
            return teacher(x, with_maps=maps, preact=preact)

    device = next(student.parameters()).device
    order = [method.batch_indices(sampled, gen) for sampled in train_batches(data.num_train, batch_size, gen)]
    for idx, x, y in data.epoch(order, gen, workers):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            step = Step(x, y, idx, run_student(x), run_teacher(x) if teacher is not None else None,
                        run_student, run_teacher if teacher is not None else None, epoch)
            terms = {k: v.float() for k, v in method(step).items()}
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            bad = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items())
            raise NonFiniteLoss(f"loss is not finite at epoch {epoch}, step {steps + 1} ({bad})", epoch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.detach()
        sums["loss"] = sums.get("loss", 0.0) + loss.detach()
        seen += len(idx)
        steps += 1
    elapsed = time.perf_counter() - t0
    out = {f"train/{k}": float(v) / max(steps, 1) for k, v in sums.items()}
    out["train/images_per_s"] = seen / elapsed if elapsed > 0 else 0.0
    out["train/epoch_s"] = elapsed
    return out


def device_name(cfg: dict) -> str:
    if pick_device(cfg).type == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({torch.get_num_threads()} threads)"


# --- Ray Tune adapter ---------------------------------------------------------------------------

FAILED = "kd_failed"  # a result key: the trial failed for good (the value says why)
REUSED = "kd_reused"  # a result key: an earlier run (the value) finished this very config


def tune_trainable(config: dict, teachers: dict[str, dict[str, torch.Tensor]] | None = None,
                   finished: dict[str, tuple[str, dict[str, float]]] | None = None) -> None:
    """`finished`: config hash -> (run id, final metrics) of trials that earlier sweeps finished. A
    search samples its configs here, so only here can it see that one of them was run before."""
    import ray
    from ray import tune

    from orchestrator.trials import materialize

    cfg = materialize(config)
    logging.getLogger("ray").setLevel(logging.WARNING)  # one INFO line per checkpoint otherwise
    resume = None
    # Tune's own checkpoint (a retry in this sweep) is the newest; else the one an earlier, killed
    # driver left (`kd-sweep run` found it on the storage and named it in the config).
    ckpt = tune.get_checkpoint()
    if ckpt is None and cfg.get("resume_from"):
        ckpt = tune.Checkpoint(cfg["resume_from"])
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = torch.load(os.path.join(d, "state.pt"), weights_only=True, map_location="cpu")

    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, float], state: dict[str, Any], final_model: dict | None) -> None:
        metrics = {**metrics, "device": device_name(cfg), "node": node}
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, os.path.join(d, "state.pt"))
            with open(os.path.join(d, "epoch.json"), "w") as f:  # read by a resuming driver
                json.dump({"epoch": state["epoch"], "config_hash": cfg["config_hash"]}, f)
            if final_model is not None:
                torch.save(final_model, os.path.join(d, "model.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    if finished and cfg["config_hash"] in finished:
        run_id, metrics = finished[cfg["config_hash"]]
        tune.report({**metrics, "epoch": cfg["train"]["epochs"], REUSED: run_id})
        return
    teachers = teachers or {}

    def weights(key: str) -> dict[str, torch.Tensor]:
        w = teachers[key]  # an object ref per teacher: a trial fetches only the one it uses
        return ray.get(w) if isinstance(w, ray.ObjectRef) else w

    teacher_state = weights(cfg["teacher"]["hash"]) if cfg.get("teacher") else None
    init_state = weights(cfg["init"]) if cfg.get("init") else None
    try:
        fit(cfg, report, teacher_state, resume, init_state)
    except NonFiniteLoss as e:
        # Not raised: Tune would retry it max_failures times, and it would diverge again each time.
        tune.report({FAILED: str(e), "epoch": e.epoch or 0, "device": device_name(cfg), "node": node})
