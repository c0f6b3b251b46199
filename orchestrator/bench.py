"""`kd-sweep bench`: kd-sweep's speed against the hand-written loop, on this machine, in one run.

Every figure is a ratio of two numbers measured here and now: images/s of kd-sweep's trainable
against the hand-written loop of orchestrator/plain_loop.py (a subprocess) on the same generated CIFAR-100,
the fraction of the device's measured matmul peak the trainable reaches, the orchestration overhead
of a one-trial sweep (Ray, Tune, MLflow) against the trial's own time, and the faiss k-NN time.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from .flops import matmul_peak, training_flops
from .plain_loop import WARMUP

PAIRS = [("resnet32x4", "resnet8x4"), ("resnet56", "resnet20")]
BATCH = 64


def _sweep(root: str, teacher: str, student: str, images: int, epochs: int, device: str, cpus: int,
           gpu: float = 1.0) -> dict:
    return {"name": "bench", "dataset": {"name": "cifar100", "root": root, "verify_checksum": False,
                                         "max_train": images, "max_test": 128},
            "pairs": [{"teacher": teacher, "student": student}], "setting": "unsupervised", "method": "coss",
            "seeds": [0], "train": {"epochs": epochs, "batch_size": BATCH, "lr": 0.05, "milestones": []},
            "eval": {"knn": {"k": 10}}, "resources": {"cpu": cpus, "gpu": gpu if device == "cuda" else 0}}


def trainable_rate(root: str, teacher: str, student: str, steps: int, device: str, cpus: int,
                   gpu: float = 1.0) -> float:
    """Images/s of kd-sweep's training loop (CoSS, the same loss as plain_loop.py), over the second of
    two epochs of `steps` batches: the first is the warm-up."""
    from trainables.models import build_model
    from trainables.trial import fit

    from .runner import preflight
    from .spec import Sweep

    sweep = Sweep.model_validate(_sweep(root, teacher, student, steps * BATCH, 2, device, cpus, gpu))
    plan = preflight(sweep, "bench", root)
    cfg = plan.students[0]
    t_state = build_model(teacher, 100, 3, 32).state_dict()
    rates = []
    fit(cfg, lambda m, s, f: rates.append(m["train/images_per_s"]), t_state)
    return rates[-1]


MNIST_BATCH = 128


def _mnist_sweep(root: str, images: int, cpus: int) -> dict:
    """RRKD Table 1's student trial (sweeps/rrkd_tables12_mnist_ssl.yaml) on IMAGES training images."""
    return {"name": "bench", "dataset": {"name": "mnist", "root": root, "verify_checksum": False, "max_train": images,
                                         "max_test": 128, "normalize": {"mean": [0.5], "std": [0.5]}},
            "pairs": [{"teacher": {"model": "ae_encoder", "hidden": [128], "embedding_dim": 64},
                       "student": {"model": "ae_encoder", "hidden": [64], "embedding_dim": 32}}],
            "setting": "unsupervised", "method": "rrkd", "knobs": {"lambda_ce": 0, "anchors": "in_batch"},
            "seeds": [0], "train": {"epochs": 2, "batch_size": MNIST_BATCH, "lr": 0.1, "momentum": 0.9,
                                    "weight_decay": 0.0, "milestones": []},
            "eval": {"knn": {"k": 10}}, "resources": {"cpu": cpus, "gpu": 0}}


def mnist_trainable_rate(root: str, steps: int, cpus: int) -> float:
    """Images/s of kd-sweep's trainable on RRKD's MNIST student (evaluation excluded: the second of two
    epochs of `steps` batches, timed by the trial itself)."""
    from trainables.models import build_model
    from trainables.trial import fit

    from .runner import preflight
    from .spec import Sweep

    plan = preflight(Sweep.model_validate(_mnist_sweep(root, steps * MNIST_BATCH, cpus)), "bench", root)
    t_state = build_model("ae_encoder", 10, 1, 28, hidden=[128], embedding_dim=64).state_dict()
    rates = []
    fit(plan.students[0], lambda m, s, f: rates.append(m["train/images_per_s"]), t_state)
    return rates[-1]


def mnist_plain_rate(root: str, steps: int, threads: int) -> float:
    out = subprocess.run([sys.executable, "-m", "orchestrator.plain_loop", root, "--task", "mnist-rrkd", "--steps",
                          str(steps + WARMUP), "--batch", str(MNIST_BATCH), "--workers", "0", "--threads", str(threads)],
                         capture_output=True, text=True, timeout=3600)
    m = re.search(r"plain loop: ([\d.]+) images/s", out.stdout)
    if not m:
        raise RuntimeError(f"the plain loop printed no rate: {out.stdout[-500:]} {out.stderr[-1500:]}")
    return float(m.group(1))


def concurrent_rates(code: str, n: int) -> float:
    """Summed images/s of N processes running CODE at once (each prints `rate R`)."""
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    total = 0.0
    for p in procs:
        out, err = p.communicate(timeout=3600)
        m = re.search(r"^rate ([\d.]+)", out, re.M)
        if p.returncode != 0 or not m:
            raise RuntimeError(f"a concurrent trial failed: {out[-300:]} {err[-800:]}")
        total += float(m.group(1))
    return total


def mnist_small(echo, steps: int, cpus: int) -> None:
    """RRKD's MNIST MLPs on the CPU: kd-sweep's epoch against the plain loop's, and what the sweep files'
    `resources.cpu` should be (one trial of all the cores, or one trial per core)."""
    from trainables.datasets.synthetic import write_mnist

    with tempfile.TemporaryDirectory() as root:
        write_mnist(Path(root), (steps + WARMUP) * MNIST_BATCH, 256)
        echo(f"\n[mnist] RRKD's MNIST student (AE-64 encoder -> AE-32, in-batch anchors, batch {MNIST_BATCH}),"
             f" {steps} steps an epoch, evaluation excluded; generated MNIST in the release's format")
        for threads in sorted({1, cpus}):
            plain = mnist_plain_rate(root, steps, threads)
            ours = mnist_trainable_rate(root, steps, threads)
            echo(f"  resources.cpu {threads}: kd-sweep {ours:.0f} images/s, plain loop {plain:.0f} images/s:"
                 f" kd-sweep's epoch takes {plain / ours:.2f}x the plain loop's")
        if cpus > 1:
            code = (f"from orchestrator.bench import mnist_trainable_rate; print('rate', mnist_trainable_rate({root!r},"
                    f" {steps}, {{}}))")
            one_big = concurrent_rates(code.format(cpus), 1)
            per_core = concurrent_rates(code.format(1), cpus)
            echo(f"  throughput on {cpus} cores: one trial of resources.cpu {cpus} {one_big:.0f} images/s; {cpus}"
                 f" trials of cpu 1 at once {per_core:.0f} images/s in all ({per_core / one_big:.2f}x)")


def plain_loop_rate(root: str, teacher: str, student: str, steps: int, device: str, workers: int) -> float:
    out = subprocess.run([sys.executable, "-m", "orchestrator.plain_loop", root, "--steps", str(steps + WARMUP),
                          "--batch", str(BATCH),
                          "--device", device, "--workers", str(workers), "--teacher", teacher, "--student", student],
                         capture_output=True, text=True, timeout=3600)
    m = re.search(r"plain loop: ([\d.]+) images/s", out.stdout)
    if not m:
        raise RuntimeError(f"the plain loop printed no rate: {out.stdout[-500:]} {out.stderr[-1500:]}")
    return float(m.group(1))


def flops_per_image(teacher: str, student: str, device: str) -> float:
    """Teacher forward + student forward and backward, per CIFAR-100 image."""
    return training_flops((student, {}), (teacher, {}), 100, 3, 32, device)


BARE = """\
import json, sys, torch
from trainables.trial import fit
teacher, student = json.load(open("configs.json"))
state = torch.load("t.pth", weights_only=True)
fit(teacher, lambda *a: None, init_state=state)
fit(student, lambda *a: None, teacher_state=state)
"""


def orchestration(root: str, device: str, cpus: int) -> tuple[float, float]:
    """Wall seconds of a one-student sweep through `kd-sweep run`, as a user runs it (a Ray of its own
    started and stopped), and of a bare process that imports kd-sweep's training loop and fits the same
    two trials, the teacher's scoring and the student, with no Ray, Tune or MLflow. The difference is
    orchestration."""
    from trainables.models import build_model

    from .runner import preflight
    from .spec import Sweep

    with tempfile.TemporaryDirectory() as d:
        torch.save(build_model("resnet56", 100, 3, 32).state_dict(), os.path.join(d, "t.pth"))
        raw = _sweep(root, "resnet56", "resnet20", 64 * 40, 3, device, cpus)
        raw["pairs"][0]["teacher"] = {"model": "resnet56", "checkpoint": os.path.join(d, "t.pth")}
        Path(d, "s.yaml").write_text(yaml.safe_dump(raw))
        plan = preflight(Sweep.model_validate(raw), "bench", d)
        Path(d, "configs.json").write_text(json.dumps([plan.teachers[0], plan.students[0]]))
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

        def wall(*cmd: str, store: str, **more: str) -> float:
            run_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{d}/{store}.db", **more}
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, *cmd], cwd=d, env=run_env, capture_output=True, text=True,
                                 timeout=3600)
            if res.returncode != 0:
                raise RuntimeError(f"the one-trial sweep failed: {res.stdout[-800:]} {res.stderr[-800:]}")
            return time.perf_counter() - t0

        swept = wall("-m", "orchestrator.cli", "run", "s.yaml", store="sweep")
        bare = wall("-c", BARE, store="bare")
    return swept, bare


def shared_device_rates(root: str, device: str, cpus: int, steps: int, trials: int) -> float:
    """Summed images/s of TRIALS resnet56->resnet20 trials run at once on one device, each a process
    with resources gpu 1/TRIALS (so each is held to its share of GPU memory) and cpus/TRIALS threads,
    as Ray runs `gpu: 0.25` trials."""
    threads = max(1, cpus // trials)
    code = ("import sys; from orchestrator.bench import trainable_rate;"
            f" print('rate', trainable_rate({root!r}, 'resnet56', 'resnet20', {steps}, {device!r}, {threads},"
            f" {1 / trials}))")
    return concurrent_rates(code, trials)


def packing_cost(root: str, device: str, cpus: int, steps: int, lambdas=(0.25, 0.5, 1.0, 2.0)
                 ) -> tuple[float, float, float, float]:
    """(epoch seconds of the λ grid as separate trials, summed; of the same grid packed; whole-trial
    seconds apart; packed): resnet32x4->resnet8x4, CoSS, the second of two epochs of `steps` batches."""
    from trainables.models import build_model
    from trainables.trial import fit_pack

    from .runner import preflight
    from .spec import Sweep

    raw = {**_sweep(root, "resnet32x4", "resnet8x4", steps * BATCH, 2, device, cpus), "grid": {"lambda": list(lambdas)}}
    cfgs = preflight(Sweep.model_validate(raw), "bench", root).students
    t_state = build_model("resnet32x4", 100, 3, 32).state_dict()

    def trial(members: list[dict]) -> tuple[float, float]:
        """(its last epoch's seconds, the whole trial's)."""
        epochs: list[float] = []
        t0 = time.perf_counter()
        fit_pack(members, lambda e, out: epochs.append(next(iter(out.values())).metrics["train/epoch_s"]), t_state)
        return epochs[-1], time.perf_counter() - t0

    apart = [trial([cfg]) for cfg in cfgs]
    packed = trial(cfgs)
    return sum(e for e, _ in apart), packed[0], sum(w for _, w in apart), packed[1]


def faiss_time(n: int, dim: int = 2048, k: int = 31) -> float:
    from trainables.neighbours import knn_indices

    feats = torch.nn.functional.normalize(torch.randn(n, dim), dim=1)
    t0 = time.perf_counter()
    knn_indices(feats.cuda() if torch.cuda.is_available() else feats, k)
    return time.perf_counter() - t0


def run_bench(echo, steps: int = 10, faiss_n: int | None = None) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cpus = max(1, os.cpu_count() or 1)
    echo(f"kd-sweep bench: torch {torch.__version__}, {cpus} CPU cores"
         f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ', no GPU'}; batch {BATCH},"
         f" {steps} timed steps after warm-up; generated CIFAR-100 (random pixels, the real on-disk format)")
    from trainables.datasets.synthetic import write_cifar100

    with tempfile.TemporaryDirectory() as root:
        write_cifar100(Path(root), max(2 * steps * BATCH, (steps + WARMUP) * BATCH), 128)
        for device in devices:
            torch.set_num_threads(cpus)
            peak = matmul_peak(device)
            echo(f"\n[{device}] matmul peak (fp32, 2048^2): {peak / 1e9:.1f} GFLOP/s")
            for teacher, student in PAIRS:
                plain = plain_loop_rate(root, teacher, student, steps, device, min(2, cpus))
                ours = trainable_rate(root, teacher, student, steps, device, cpus)
                fl = flops_per_image(teacher, student, device)
                echo(f"  {teacher}->{student}: kd-sweep {ours:.1f} images/s, plain_loop {plain:.1f} images/s,"
                     f" ratio {ours / plain:.2f}x; {fl / 1e9:.2f} GFLOP/image, {ours * fl / peak:.0%} of the"
                     " matmul peak")
                if teacher == "resnet32x4":
                    rate32 = ours
            apart, packed, apart_wall, packed_wall = packing_cost(root, device, cpus, steps)
            echo(f"  packed 4-student λ grid (resnet32x4->resnet8x4, one teacher forward a batch): an epoch costs"
                 f" {packed / apart:.2f}x the 4 separate trials' ({packed:.1f} s against {apart:.1f} s); whole"
                 f" trials with set-up and evaluation {packed_wall / apart_wall:.2f}x ({packed_wall:.0f} s against"
                 f" {apart_wall:.0f} s)")
            shares = (1, 2, 4, 8) if device == "cuda" else (1, 2)
            rates = {k: shared_device_rates(root, device, cpus, steps, k) for k in shares}
            per_trial = 240 * 50_000  # a CRD-schedule CIFAR trial
            echo(f"  trials sharing one {device} (resnet56->resnet20, gpu 1/n each): " + ", ".join(
                 f"{k}: {r:.0f} images/s = {r * 3600 / per_trial:.2f} trials/{device}-hour" for k, r in rates.items()))
            images = 24 * 240 * 50_000  # CoSS supp. Table 3 at CRD's schedule: 24 trials x 240 epochs x 50k
            echo(f"  CoSS Table 3 (24 trials x 240 epochs x 50k images) projected on this {device}:"
                 f" {images / rate32 / 3600:.1f} h as separate trials, {images / rate32 * packed / apart / 3600:.1f} h"
                 " packed by 4")
        echo("\n[orchestration] a one-student sweep through `kd-sweep run` (Ray, Tune, MLflow) against the bare"
             " trainable (a process fitting the same two trials):")
        swept, bare = orchestration(root, devices[-1], cpus)
        echo(f"  bare {bare:.1f} s; sweep {swept:.1f} s (its own Ray started and stopped): overhead"
             f" {swept - bare:.1f} s = {(swept - bare) / 60:.0%} of a 60-second trial (paid once per sweep: Ray's"
             " start and stop, a trial actor's start per phase, MLflow)")
    mnist_small(echo, steps * 20, cpus)
    n = faiss_n or (50_000 if torch.cuda.is_available() else 10_000)
    t = faiss_time(n)
    scale = "" if n == 50_000 else f"; 50k x 2048 by the n^2 law: ~{t * (50_000 / n) ** 2:.0f} s"
    echo(f"\n[faiss] exact k-NN, k 31, {n} x 2048 on {'GPU' if torch.cuda.is_available() else 'CPU'}:"
         f" {t:.1f} s{scale}")
