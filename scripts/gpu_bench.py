"""The CUDA figures of issue #17, measured on the GPU alone with `kd-sweep bench`'s own functions
(orchestrator.bench), each against its target, then the training step's speed under `compile: false`,
`true` and `reduce-overhead` (CUDA graphs).

`kd-sweep bench` measures the CPU first (minutes) and needs Ray for its orchestration section; this runs
only its CUDA measurements, most important first, and stops starting new ones at --budget seconds, so a
device check gets the GPU numbers inside its time. Each figure prints as it is measured; one that fails
says why and the rest go on. Without a GPU it prints one line and exits 0.

usage: python scripts/gpu_bench.py [--steps N] [--budget S] [--only rates,packing,knn,compile,shared]
                                   [--plain-loop FILE] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TABLE3_IMAGES = 24 * 240 * 50_000  # CoSS supp. Table 3 at CRD's schedule: 24 trials x 240 epochs x 50k images
TRIAL_IMAGES = 240 * 50_000  # one CRD-schedule CIFAR trial
# The measurements, most wanted first, with the seconds each needs on an H100 (a guess until measured):
# none starts with less of the budget left.
SECTIONS = {"rates": 60, "packing": 45, "knn": 10, "compile": 90, "shared": 20}


class Figures:
    """What was measured, each with its target's verdict, printed as it comes and kept for the JSON."""

    def __init__(self, budget: float):
        self.t0 = time.perf_counter()
        self.budget = budget
        self.values: dict[str, float] = {}
        self.verdicts: dict[str, str] = {}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def say(self, line: str) -> None:
        print(f"[{time.perf_counter() - self.t0:5.0f}s] {line}", flush=True)

    def section(self, name: str, needs_s: float, fn) -> None:
        """Runs FN unless fewer than NEEDS_S seconds of the budget are left; a failure is reported, not raised."""
        if self.left() < needs_s:
            self.say(f"{name}: not measured ({self.left():.0f} s of the budget left, it needs ~{needs_s:.0f} s)")
            self.verdicts.setdefault(name, "not measured: out of time")
            return
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - one figure failing must not cost the others
            self.say(f"{name}: FAILED to measure: {type(e).__name__}: {e}")
            traceback.print_exc(limit=4)
            self.verdicts[name] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        self.say(f"{name}: {time.perf_counter() - t:.0f} s")

    def target(self, name: str, value: float, ok: bool, text: str) -> None:
        self.values[name] = value
        self.verdicts[name] = ("met: " if ok else "NOT MET: ") + text
        self.say(f"  -> {name}: {'met' if ok else 'NOT MET'} ({text})")


def plain_loop_path(given: str | None) -> Path | None:
    from orchestrator.bench import default_plain_loop

    carried = REPO / "build" / "gpu-wheels" / "plain_loop.py"  # where scripts/gpu_wheels.sh puts it
    for p in (given, os.environ.get("PLAIN_LOOP"), carried, default_plain_loop()):
        if p and Path(p).is_file():
            return Path(p)
    return None


def rates_against_plain_loop(f: Figures, root: str, steps: int, cpus: int, script: Path | None) -> None:
    from orchestrator.bench import PAIRS, flops_per_image, plain_loop_rate, trainable_rate
    from orchestrator.flops import matmul_peak

    peak = matmul_peak("cuda")
    f.values["matmul_peak_flops"] = peak
    f.say(f"matmul peak (fp32, 2048^2): {peak / 1e12:.1f} TFLOP/s")
    workers = min(8, cpus)  # shared/bench/README.md runs the plain loop on CUDA with 8 workers
    for teacher, student in PAIRS:
        ours = trainable_rate(root, teacher, student, steps, "cuda", cpus)
        f.values[f"rate/{teacher}->{student}"] = ours
        fl = flops_per_image(teacher, student, "cuda")
        line = f"{teacher}->{student}: kd-sweep {ours:.0f} images/s, {ours * fl / peak:.0%} of the fp32 matmul peak"
        if script is None:
            f.say(line + "; plain_loop.py not found (give --plain-loop or PLAIN_LOOP): no ratio")
            f.verdicts[f"ratio/{teacher}->{student}"] = "not measured: plain_loop.py missing"
            continue
        plain = plain_loop_rate(script, root, teacher, student, steps, "cuda", workers)
        f.say(line + f"; plain_loop ({workers} workers) {plain:.0f} images/s")
        ratio = ours / plain
        f.target(f"ratio/{teacher}->{student}", ratio, ratio >= 4, f"{ratio:.2f}x the plain loop, target >= 4x")


def packing(f: Figures, root: str, steps: int, cpus: int) -> None:
    from orchestrator.bench import packing_cost

    apart, packed, apart_wall, packed_wall = packing_cost(root, "cuda", cpus, steps)
    f.say(f"packed 4-student λ grid (resnet32x4->resnet8x4): an epoch {packed:.2f} s against {apart:.2f} s apart;"
          f" whole trials {packed_wall:.0f} s against {apart_wall:.0f} s")
    f.target("packed_epoch_ratio", packed / apart, packed / apart <= 0.5, f"{packed / apart:.2f}x, target <= 0.5x")
    f.values["packed_wall_ratio"] = packed_wall / apart_wall
    rate = f.values.get("rate/resnet32x4->resnet8x4")
    if rate:
        hours = TABLE3_IMAGES / rate / 3600
        f.values["table3_hours_apart"], f.values["table3_hours_packed"] = hours, hours * packed / apart
        f.say(f"CoSS Table 3 (24 trials x 240 epochs x 50k images) projected on this GPU: {hours:.1f} h as separate"
              f" trials, {hours * packed / apart:.1f} h packed by 4")


def knn(f: Figures, n: int) -> None:
    import faiss

    from orchestrator.bench import faiss_time

    how = "faiss-gpu" if faiss.get_num_gpus() > 0 else "the matmul fallback (this faiss sees no GPU)"
    t = faiss_time(n)
    f.say(f"exact k-NN, k 31, {n} x 2048 on the GPU by {how}: {t:.2f} s")
    if n == 50_000:
        f.target("knn_50k_s", t, t <= 5, f"{t:.2f} s, target <= 5 s")
    else:
        f.values[f"knn_{n}_s"] = t  # the target is for 50k


def compile_modes(f: Figures, root: str, steps: int, cpus: int) -> None:
    """resnet56->resnet20 (small convolutions: where launch overhead weighs most), CoSS, the second of two
    epochs of STEPS batches; the first holds the compiling and the graphs' recording."""
    import torch._dynamo

    from orchestrator.bench import _sweep
    from orchestrator.runner import preflight
    from orchestrator.spec import Sweep
    from trainables.models import build_model
    from trainables.trial import fit

    raw = _sweep(root, "resnet56", "resnet20", steps * 64, 2, "cuda", cpus)
    cfg = preflight(Sweep.model_validate(raw), "bench", root).students[0]
    t_state = build_model("resnet56", 100, 3, 32).state_dict()
    eager = None
    for mode in (False, True, "reduce-overhead"):
        torch._dynamo.reset()
        epochs = []
        fit({**cfg, "compile": mode}, lambda m, s, _: epochs.append(m), t_state)
        first, second = epochs[0]["train/epoch_s"], epochs[-1]["train/images_per_s"]
        eager = eager or second
        f.values[f"compile/{mode}"] = second
        f.say(f"compile: {str(mode).lower():15s} {second:7.0f} images/s = {second / eager:.2f}x eager"
              f" (first epoch {first:.1f} s: compiling and recording)")
    f.values["reduce_overhead_vs_eager"] = f.values["compile/reduce-overhead"] / eager
    f.values["reduce_overhead_vs_compile"] = f.values["compile/reduce-overhead"] / f.values["compile/True"]


def shared_gpu(f: Figures, root: str, steps: int, cpus: int) -> None:
    from orchestrator.bench import shared_device_rates

    for n in (1, 2, 4, 8):
        if f.left() < 15 * n:
            f.say(f"{n} trials sharing the GPU: not measured (out of time)")
            break
        rate = shared_device_rates(root, "cuda", cpus, steps, n)
        f.values[f"shared/{n}_images_per_s"] = rate
        f.values[f"shared/{n}_trials_per_gpu_hour"] = rate * 3600 / TRIAL_IMAGES
        f.say(f"{n} resnet56->resnet20 trials sharing the GPU (gpu {1 / n:g} each): {rate:.0f} images/s ="
              f" {rate * 3600 / TRIAL_IMAGES:.2f} trials/GPU-hour")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after a warm-up epoch)")
    ap.add_argument("--budget", type=float, default=300, help="seconds: a measurement starts only while its estimated need (SECTIONS) is left")
    ap.add_argument("--plain-loop", default=None, help="shared/bench/plain_loop.py (default: PLAIN_LOOP,"
                    " build/gpu-wheels/plain_loop.py, ../shared/bench/plain_loop.py)")
    ap.add_argument("--faiss-n", type=int, default=50_000)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of {','.join(SECTIONS)}")
    ap.add_argument("--json", default=None, help="write the figures and verdicts here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_bench: skipped: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)")
        return 0
    from orchestrator.bench import BATCH, WARMUP
    from trainables.datasets.synthetic import write_cifar100

    cpus = os.cpu_count() or 1
    torch.set_num_threads(cpus)
    f = Figures(args.budget)
    script = plain_loop_path(args.plain_loop)
    f.say(f"gpu_bench: torch {torch.__version__}, {torch.cuda.get_device_name()}, {cpus} CPU cores; batch {BATCH},"
          f" {args.steps} timed steps; plain loop {script or 'not found'}")
    with tempfile.TemporaryDirectory() as root:
        write_cifar100(Path(root), max(2 * args.steps * BATCH, (args.steps + WARMUP) * BATCH), 128)
        runs = {"rates": lambda: rates_against_plain_loop(f, root, args.steps, cpus, script),
                "packing": lambda: packing(f, root, args.steps, cpus),
                "knn": lambda: knn(f, args.faiss_n),
                "compile": lambda: compile_modes(f, root, args.steps, cpus),
                "shared": lambda: shared_gpu(f, root, args.steps, cpus)}
        for name in (n for n in SECTIONS if n in args.only.split(",")):
            f.section(name, SECTIONS[name], runs[name])
    f.say("verdicts: " + "; ".join(f"{k}: {v}" for k, v in f.verdicts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                               "values": f.values, "verdicts": f.verdicts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
