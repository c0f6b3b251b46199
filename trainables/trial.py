"""One trial: train its students (or a teacher) from resolved configs, report once per epoch.

`fit_pack` trains every trial, one student or several on one teacher forward a batch; `fit` is one
student's view of it, for callers that train one (tests, `kd-sweep bench`). Neither knows Ray: they
take a report callback and optional states to resume from. `trainables.tune_trial` adapts `fit_pack`
to Ray Tune (a checkpoint per epoch).
The config is a `trainables.config.TrialConfig`, the plain dict `orchestrator.trials` builds; every
number that matters is in it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .config import knobs_of, loader_kwargs
from .datasets import ImageData, load_dataset, train_batches
from .evaluate import classifier_top1, evaluate, knn_curve_point
from .methods import method_class
from .methods.base import Context, DataInfo, Method, ModelInfo, NonFiniteLoss, Step
from .models import Backbone, Output, build_model

Report = Callable[[dict[str, float], dict[str, Any], dict[str, torch.Tensor] | None], None]


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
        # With its index: torch.cuda.set_per_process_memory_fraction refuses a bare torch.device("cuda").
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def limit_gpu_memory(cfg: dict, device: torch.device) -> float | None:
    """A trial with a fraction of a GPU (`gpu: 0.25`) may allocate that fraction of its memory and no
    more, so the trials sharing the GPU cannot starve one another: an overrun is an OOM in the trial
    that overran. Returns the fraction set (None on CPU or a whole GPU; a reused actor resets it)."""
    if device.type != "cuda":
        return None
    share = min(1.0, float(cfg["resources"]["gpu"]))
    torch.cuda.set_per_process_memory_fraction(share, device)
    return share if share < 1 else None


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


def load_teacher(cfg: dict, data: ImageData, state: dict[str, torch.Tensor], device: torch.device) -> Backbone:
    teacher = make_model(cfg["teacher"], data, with_head=True)
    teacher.load_state_dict(state)
    teacher.to(device).eval()  # frozen: BatchNorm statistics and dropout stay in eval mode
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@dataclass
class MemberReport:
    """One student's epoch as `fit_pack` reports it: its metrics, the state to checkpoint and, after the
    last epoch, its final weights; or, once it failed for good, why (it trains no further)."""
    metrics: dict[str, float]
    state: dict[str, Any] | None
    final_model: dict[str, torch.Tensor] | None = None
    failed: str | None = None
    failed_epoch: int | None = None


PackReport = Callable[[int, dict[str, MemberReport]], None]


class RngState:
    """One student's view of the global RNGs (torch's, numpy's, Python's). A pack swaps each student's
    in around its work, so its init, dropout, CRD's negatives and the probe draw exactly what they
    would in a trial of their own: a packed trial gives the unpacked trials' numbers."""

    def __init__(self, device: torch.device):
        self.device = device
        self.capture()

    def capture(self) -> None:
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        self.np = np.random.get_state()
        self.py = random.getstate()

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        np.random.set_state(self.np)
        random.setstate(self.py)

    @contextlib.contextmanager
    def active(self):
        self.restore()
        try:
            yield
        finally:
            self.capture()


@dataclass
class Member:
    """One student of a trial. A trial trains one; a pack trains several on one teacher forward a batch."""
    cfg: dict
    student: Backbone
    method: Method
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    rng: RngState | None = None  # None when alone: the global RNGs are its own
    start: int = 1
    best: float = 0.0
    spent: float = 0.0  # seconds charged to this student, over every resume: what its cell costs
    pre: dict[str, float] = field(default_factory=dict)
    resume: dict[str, Any] | None = None
    failed: str | None = None
    failed_epoch: int | None = None
    forward: Callable[..., Output] | None = None  # what the training step calls; None: the student itself

    @property
    def key(self) -> str:
        return member_key(self.cfg)

    @property
    def per_epoch(self) -> bool:
        """The student's own classifier is scored every epoch: RepDistiller reports the last epoch,
        mdistiller the best, so both are kept. Probes and k-NN score the final features only."""
        return "classifier" in self.cfg["eval"] and self.student.fc is not None

    def own_rng(self):
        return self.rng.active() if self.rng is not None else contextlib.nullcontext()

    def state(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        """`metrics`: what the epoch reported, so a driver that died before logging the last epoch
        gets it from the checkpoint instead of a second evaluation."""
        return {"student": self.student.state_dict(), "method": self.method.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "epoch": epoch,
                "best_classifier_top1": self.best, "wall_s": self.spent, "metrics": metrics}

    def fail(self, why: str, epoch: int) -> None:
        self.failed, self.failed_epoch = why, epoch

    def report_failed(self) -> MemberReport:
        return MemberReport({"epoch": self.failed_epoch or 0}, None, failed=self.failed,
                            failed_epoch=self.failed_epoch)


def member_key(cfg: dict) -> str:
    return cfg.get("config_hash", "")


def _charge(members: list[Member], seconds: float) -> None:
    """Time the students shared (data, the teacher, the pack's epoch) goes to each in equal parts."""
    for m in members:
        m.spent += seconds / max(1, len(members))


def fit(cfg: dict, report: Report, teacher_state: dict[str, torch.Tensor] | None = None,
        resume: dict[str, Any] | None = None, init_state: dict[str, torch.Tensor] | None = None) -> None:
    """One student (or teacher): `fit_pack` of one. `teacher_state`: the frozen teacher's weights;
    `init_state`: weights to start the model from (a teacher given as a checkpoint is evaluated from
    them). A non-finite loss raises NonFiniteLoss."""
    key = member_key(cfg)

    def one(epoch: int, out: dict[str, MemberReport]) -> None:
        r = out[key]
        if r.failed:
            raise NonFiniteLoss(r.failed, r.failed_epoch)
        report(r.metrics, r.state, r.final_model)

    fit_pack([cfg], one, teacher_state, {key: resume} if resume is not None else None, init_state)


def fit_pack(cfgs: list[dict], report: PackReport, teacher_state: dict[str, torch.Tensor] | None = None,
             resumes: dict[str, dict[str, Any]] | None = None,
             init_state: dict[str, torch.Tensor] | None = None) -> None:
    """Train the students CFGS on one teacher forward per batch, reporting every student's epoch at
    once. They share what `orchestrator.packing` groups them by: teacher, data, seed, batch size,
    epochs, precision and batch composition; each keeps its own model, method, optimiser, RNG state,
    checkpoint and failure. `resumes`: config hash -> the state to continue that student from."""
    t0 = time.perf_counter()
    lead = cfgs[0]
    # A trial uses the CPU share it asked for (Ray sets OMP_NUM_THREADS=1 in its workers otherwise).
    torch.set_num_threads(max(1, int(lead["resources"]["cpu"])))
    device = pick_device(lead)
    limit_gpu_memory(lead, device)
    seed = lead["seed"]
    seed_everything(seed)
    deterministic = bool(lead.get("deterministic"))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
    torch.use_deterministic_algorithms(deterministic)  # set either way: a process may run several trials
    torch.backends.cudnn.benchmark = not deterministic
    ds = lead["dataset"]
    data = training_data(load_dataset(ds["name"], ds["root"], **loader_kwargs(ds)), method_class(lead["method"]))
    data = data.to(device)
    teacher = teacher_forward = None
    if method_class(lead["method"]).needs_teacher:
        if teacher_state is None:
            raise RuntimeError(f"method {lead['method']!r} needs a teacher and the trial was given none")
        teacher = load_teacher(lead, data, teacher_state, device)
        # NHWC convolutions: tensor cores on CUDA, and measured faster on CPU too (oneDNN: +5% for
        # resnet32x4->resnet8x4, +16% for resnet56->resnet20 on a 2-core machine).
        teacher.to(memory_format=torch.channels_last)
        teacher_forward = train_forward(teacher, lead, device, own_outputs=True)
    # Data that streams from disk (ImageNet) decodes in worker processes: one core stays with the trial.
    workers = max(0, int(lead["resources"]["cpu"]) - 1)
    data.workers = workers
    after_teacher = RngState(device) if len(cfgs) > 1 else None
    resumes = resumes or {}
    members = [_member(cfg, data, teacher, device, after_teacher, resumes.get(member_key(cfg)), init_state, workers)
               for cfg in cfgs]
    live = [m for m in members if not m.failed]
    if len({m.start for m in live}) > 1:
        raise ValueError("the students of a pack resume from different epochs: "
                         + ", ".join(f"{m.cfg.get('name', m.key)} at {m.start}" for m in live))
    start = live[0].start if live else 1
    _charge(live, time.perf_counter() - t0)
    sched_cfg = lead["train"]
    epochs, batch = sched_cfg["epochs"], sched_cfg["batch_size"]
    amp = amp_dtype(lead, device)
    gen = torch.Generator(device=device)
    for epoch in range(start, epochs + 1):
        active = [m for m in members if not m.failed]
        if not active:
            break
        maybe_fault(lead, epoch)
        # The data order of epoch e is a function of (seed, e) alone, so a resumed trial replays it.
        gen.manual_seed(seed * 1_000_003 + epoch)
        lrs = [m.opt.param_groups[0]["lr"] for m in active]
        t_epoch = time.perf_counter()
        try:
            trained = train_epoch(active, teacher, data, gen, batch, epoch, workers, amp, teacher_forward)
        except torch.cuda.OutOfMemoryError as e:
            packed = f", {len(active)} students packed on one teacher" if len(active) > 1 else ""
            raise RuntimeError(
                f"GPU out of memory in trial {lead.get('name', '?')} at batch size {batch}"
                f" ({device_name(lead)}, resources.gpu {lead['resources']['gpu']:g}{packed}): lower"
                f" train.batch_size{', or pack fewer (pack: N)' if packed else ''}, or give each trial a"
                " larger GPU share") from e
        _charge([m for m in active if not m.failed], time.perf_counter() - t_epoch)
        out: dict[str, MemberReport] = {}
        for m, lr, metrics in zip(active, lrs, trained):
            if m.failed:
                continue
            t_m = time.perf_counter()
            with m.own_rng():
                m.sched.step()
                metrics["train/lr"] = lr
                if epoch == epochs and m.cfg["train"].get("bn_recalibrate"):
                    recalibrate_bn(m.student, data, batch, seed)
                if epoch == start:
                    metrics.update(m.pre)
                if m.per_epoch:
                    metrics["eval/classifier_top1"] = classifier_top1(m.student, data)
                    m.best = max(m.best, metrics["eval/classifier_top1"])
                if (every := m.cfg.get("eval_every")) and (epoch % every == 0 or epoch == epochs):
                    curve = m.cfg["eval_every_knn"]
                    metrics["curve/knn_top1"] = knn_curve_point(m.student, data, curve["k"], curve["temperature"])
                if epoch == epochs:
                    metrics.update(_final_scores(m, data, seed, metrics))
            m.spent += time.perf_counter() - t_m
            metrics["cost/wall_s"] = m.spent  # every epoch: a trial that dies still shows what it cost
            out[m.key] = MemberReport({"epoch": epoch, **metrics}, m.state(epoch, metrics),
                                      m.student.state_dict() if epoch == epochs else None)
        out.update({m.key: m.report_failed() for m in members if m.failed})
        report(epoch, out)
    if start > epochs:
        out = {m.key: m.report_failed() for m in members if m.failed}
        for m in live:
            r = m.resume
            if r is not None and r.get("metrics") and r["epoch"] == epochs > 0:
                # Resumed after its last epoch (the driver died before logging it): that epoch's report again.
                out[m.key] = MemberReport({"epoch": epochs, **r["metrics"]}, r, m.student.state_dict())
                continue
            t_m = time.perf_counter()  # nothing to train (a given teacher): scored as it is
            with m.own_rng():
                final = _final_scores(m, data, seed, {})
            m.spent += time.perf_counter() - t_m
            final["cost/wall_s"] = m.spent
            out[m.key] = MemberReport({"epoch": epochs, **final}, m.state(epochs, final), m.student.state_dict())
        report(epochs, out)


def _final_scores(m: Member, data: ImageData, seed: int, scored: dict[str, float]) -> dict[str, float]:
    """A student's final evaluation, after its last epoch or with no epoch to train (a given teacher):
    every protocol of its `eval` block not scored already (SCORED: this epoch's numbers, where the
    per-epoch classifier is), and the classifier's best epoch beside its last (mdistiller's number)."""
    todo = {k: v for k, v in m.cfg["eval"].items() if k != "classifier" or "eval/classifier_top1" not in scored}
    final = evaluate(m.student, data, todo, seed)
    top1 = final.get("eval/classifier_top1", scored.get("eval/classifier_top1"))
    if top1 is not None:
        final["eval/classifier_top1_best"] = max(m.best, top1)
    return final


def _member(cfg: dict, data: ImageData, teacher: Backbone | None, device: torch.device,
            after_teacher: RngState | None, resume: dict[str, Any] | None,
            init_state: dict[str, torch.Tensor] | None, workers: int) -> Member:
    """A student, its method, optimiser and schedule, built as a trial of its own would build them: in
    a pack, from the global RNG state the teacher's construction left."""
    if after_teacher is not None:
        after_teacher.restore()
    cls = method_class(cfg["method"])
    knobs = knobs_of(cfg)
    student = make_model(cfg["student"], data, with_head=cls.student_needs_head(knobs)).to(device)
    student.to(memory_format=torch.channels_last)
    if init_state is not None:
        student.load_state_dict(init_state)
    forward = train_forward(student, cfg, device)
    method = cls(knobs, model_info(student, data, cls.preact),
                 model_info(teacher, data, cls.preact) if teacher is not None else None,
                 DataInfo(cfg["dataset"]["name"], data.num_classes, data.num_train)).to(device)
    ctx = Context(cfg, data, student, teacher, device, cfg["seed"], cfg["train"]["batch_size"], workers)
    method.setup(ctx)
    sched_cfg = cfg["train"]
    params = [p for p in list(student.parameters()) + list(method.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=sched_cfg["lr"], momentum=sched_cfg["momentum"],
                          weight_decay=sched_cfg["weight_decay"])
    m = Member(cfg, student, method, opt, make_scheduler(opt, sched_cfg), resume=resume, forward=forward)
    if resume is not None and resume.get("failed"):
        m.fail(resume["failed"], resume.get("epoch", 0))  # deterministic: it would fail again
    elif resume is not None:
        student.load_state_dict(resume["student"])
        method.load_state_dict(resume["method"])
        opt.load_state_dict(resume["optimizer"])
        m.sched.load_state_dict(resume["scheduler"])
        m.start, m.best, m.spent = resume["epoch"] + 1, resume.get("best_classifier_top1", 0.0), resume.get("wall_s", 0.0)
    else:
        m.pre = {f"pretrain/{k}": v for k, v in method.pretrain(ctx).items()}
    if after_teacher is not None:
        m.rng = RngState(device)
    return m


def training_data(data, method: type) -> Any:
    """DATA as METHOD trains on it: its rotated views where it asks for them (packing keeps a pack's
    methods alike in this, through their batch keys)."""
    if not method.rotated_views:
        return data
    if not hasattr(data, "with_rotations"):
        raise ValueError("rotated views (sskd) are built for in-memory datasets (digits, mnist, CIFAR, SVHN);"
                         " this dataset streams from disk")
    return data.with_rotations()


def train_forward(model: Backbone, cfg: dict, device: torch.device, own_outputs: bool = False
                  ) -> Callable[..., Output]:
    """What the training step calls MODEL through. `compile: true`: the model compiled in place (every
    call fused, evaluation too; its state_dict keeps its keys). `compile: reduce-overhead`: a compiled
    twin for the training step alone, whose forward and backward replay as CUDA graphs; evaluation stays
    eager, because a replay reuses the memory of the previous one's outputs and the evaluation code keeps
    batch outputs across calls. OWN_OUTPUTS: copy the outputs out of the graphs' memory (the teacher's:
    the students' forwards, each a new replay, read them)."""
    mode = cfg.get("compile")
    if not mode:
        return model
    if mode is True:
        model.compile()
        return model
    if device.type != "cuda":
        warnings.warn(f"compile: {mode}: CUDA graphs need a CUDA device; on {device.type} the training step is"
                      " compiled without them")  # once a process: the teacher's and each student's say the same
    compiled = torch.compile(model, mode=mode)
    if not own_outputs:
        return compiled
    return lambda *a, **k: _owned(compiled(*a, **k))


def _owned(out: Output) -> Output:
    logits = None if out.logits is None else out.logits.clone()
    return Output(out.feature.clone(), logits, [m.clone() for m in out.maps])


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


def train_epoch(members: list[Member], teacher: Backbone | None, data: ImageData, gen: torch.Generator,
                batch_size: int, epoch: int, workers: int = 0, amp: torch.dtype | None = None,
                teacher_forward: Callable[..., Output] | None = None) -> list[dict[str, float]]:
    """One pass over the training set for every student of MEMBERS (their metrics, in order), with one
    teacher forward per batch. `amp`: the autocast dtype of the forward passes and the loss (bf16),
    or None for fp32; the backward pass and the optimiser step stay in the weights' fp32.
    `teacher_forward`: how the teacher is called (`train_forward`; default the teacher itself). A student
    whose loss is not finite is failed there and trains no further; the others go on."""
    for m in members:
        m.student.train()
        m.method.train()
    # The students share the teacher's output: maps when any of them reads maps (grouping keeps the
    # pre-activation choice equal), and one batch composition (the first student's `batch_indices`).
    maps = any(m.method.needs_maps for m in members)
    preact = next((m.method.preact for m in members if m.method.needs_maps), False)

    call_teacher = teacher if teacher_forward is None else teacher_forward

    def run_teacher(x: torch.Tensor) -> Output:
        with torch.no_grad():
            return call_teacher(x, with_maps=maps, preact=preact)

    sums: list[dict[str, torch.Tensor]] = [{} for _ in members]
    steps = [0] * len(members)
    seen = 0
    t0 = time.perf_counter()
    device = next(members[0].student.parameters()).device
    lead = members[0].method
    order = [lead.batch_indices(sampled, gen) for sampled in train_batches(data.num_train, batch_size, gen)]
    autocast = functools.partial(torch.autocast, device.type, dtype=amp or torch.bfloat16, enabled=amp is not None)
    for idx, x, y in data.epoch(order, gen, workers):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            t_out = run_teacher(x) if teacher is not None else None
        live = 0
        for i, m in enumerate(members):
            if m.failed:
                continue
            with m.own_rng():
                terms, finite = _step(m, x, y, idx, t_out, run_teacher if teacher is not None else None, epoch,
                                      autocast)
            if not finite:
                bad = ", ".join(f"{k}={v.item():.4g}" for k, v in terms.items()
                                if k != "loss" and not k.startswith("raw/"))
                m.fail(f"loss is not finite at epoch {epoch}, step {steps[i] + 1} ({bad})", epoch)
                continue
            for k, v in terms.items():
                sums[i][k] = sums[i].get(k, 0.0) + v
            steps[i] += 1
            live += 1
        if not live:
            break
        seen += len(idx)
    elapsed = time.perf_counter() - t0
    out = []
    for i in range(len(members)):
        metrics = {f"train/{k}": float(v) / max(steps[i], 1) for k, v in sums[i].items()}
        metrics["train/images_per_s"] = seen / elapsed if elapsed > 0 else 0.0
        metrics["train/epoch_s"] = elapsed
        out.append(metrics)
    return out


def _step(m: Member, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, t_out: Output | None,
          run_teacher: Callable[[torch.Tensor], Output] | None, epoch: int, autocast
          ) -> tuple[dict[str, torch.Tensor], bool]:
    """One optimiser step of one student: its detached terms and total, and whether the loss was finite
    (when not, no step is taken)."""
    needs_maps, preact = m.method.needs_maps, m.method.preact
    call_student = m.student if m.forward is None else m.forward

    def run_student(x: torch.Tensor) -> Output:
        return call_student(x, with_maps=needs_maps, preact=preact)

    with autocast():
        step = Step(x, y, idx, run_student(x), t_out, run_student, run_teacher, epoch)
        weighted = m.method(step)
        terms = {k: v.float() for k, v in weighted.items()}
    loss = sum(terms.values())
    out = {**{k: v.detach() for k, v in terms.items()},
           **{f"raw/{k}": v.detach().float() for k, v in weighted.raw.items()}, "loss": loss.detach()}
    if not torch.isfinite(loss):
        return out, False
    m.opt.zero_grad(set_to_none=True)
    loss.backward()
    m.opt.step()
    return out, True


def device_name(cfg: dict) -> str:
    if pick_device(cfg).type == "cuda":
        return torch.cuda.get_device_name()
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' * (n != 1)})"
