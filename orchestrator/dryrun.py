"""`kd-sweep run FILE --dry-run`: the trials a sweep would run, which earlier runs already cover them,
and what the rest should cost: from earlier runs of the same cells, else from the models' FLOPs and
this machine's measured arithmetic rate. Nothing starts."""
from __future__ import annotations

import json
import os
import statistics
import textwrap

from mlflow import MlflowClient

from results.mlflow_schema import WALL_METRIC, Status, Tag, all_runs, cell_tag, experiments, holds_result, status_is
from trainables.config import cell_label

from .flops import matmul_peak, training_flops
from .progress import WIDTH
from .runner import Plan, preflight
from .spec import Sweep
from .tracking import store_exists


def say(text: str, indent: str = "") -> None:
    """One line of the dry run, wrapped to the terminal width kd-sweep keeps to."""
    print(textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                        break_on_hyphens=False))


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"


# The FLOP estimate assumes a trial sustains this share of the device's fp32 matmul peak: on this project's
# 2-core CPUs the bench measured 59% (resnet56->resnet20) to 127% (resnet32x4->resnet8x4) of it.
SUSTAINED = 0.5
# With no GPU here to measure, a guess for one GPU on CIFAR-sized models (`kd-sweep bench` on the GPU
# measures the real rate): small convnets keep a modern GPU far below its peak.
GUESSED_GPU_FLOPS = 10e12


def _flops(n: float) -> str:
    for scale, unit in ((1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} FLOP"


def flop_estimate(cfgs: list[dict], plan: Plan, sweep: Sweep, repeat: int = 1) -> tuple[float, str, str]:
    """What CFGS (trials no earlier run has timed) should cost, from their backbones' FLOPs per image x
    training images x epochs, at SUSTAINED of the measured peak of the device they would run on:
    (device-hours, the unit, how the figure was made)."""
    import torch

    data = plan.data
    per_image: dict[str, float] = {}
    total = 0.0
    for cfg in cfgs:
        s = (cfg["student"]["model"], cfg["student"].get("options") or {})
        t = (cfg["teacher"]["model"], cfg["teacher"].get("options") or {}) if cfg.get("teacher") else None
        key = json.dumps([s, t], sort_keys=True)
        if key not in per_image:
            per_image[key] = training_flops(s, t, data.num_classes, data.in_channels, data.image_size)
        total += per_image[key] * data.num_train * cfg["train"]["epochs"] * repeat
    if sweep.resources.gpu > 0 and torch.cuda.is_available():
        rate, unit = SUSTAINED * matmul_peak("cuda", 4096, 5, 3), "GPU"
        at = f"{_flops(rate)}/s, half this GPU's measured fp32 matmul peak"
    elif sweep.resources.gpu > 0:
        rate, unit = GUESSED_GPU_FLOPS, "GPU"
        at = f"a guessed {_flops(rate)}/s per GPU (no GPU here to measure; `kd-sweep bench` on one does)"
    else:
        rate, unit = SUSTAINED * matmul_peak("cpu", 1024, 5, 3) / torch.get_num_threads(), "CPU"
        at = f"{_flops(rate)}/s per core, half this machine's measured fp32 matmul peak"
    sizes = sorted(set(per_image.values()))
    each = _flops(sizes[0]) if len(sizes) == 1 else f"{_flops(sizes[0])} to {_flops(sizes[-1])}"
    how = (f"{each} per image (teacher forward, student forward and backward; a method's own modules and"
           f" extra views not counted) x {data.num_train} images x epochs = {_flops(total)}, at {at}")
    if total / rate < 60 * len(cfgs):  # under a minute a trial: startup and per-step costs dominate
        how += "; a floor for models this small"
    return total / rate / 3600, unit, how


def _cell_key(cfg: dict) -> tuple:
    """The cell a trial belongs to, as earlier runs' tags name it (kd.dataset, kd.pair, kd.method, kd.cell)."""
    return (cfg["dataset"]["name"], cfg["labels"]["pair"], cfg["method"], cell_tag(cfg["labels"]["cell"]))


def dry_run(sweep: Sweep, file: str, tracking_uri: str) -> None:
    # The checks `run` makes, data included: a dry run that passes where the run would stop misleads.
    plan = preflight(sweep, file, os.path.dirname(os.path.abspath(file)))
    history = []
    if store_exists(tracking_uri):  # a dry run writes nothing, not even an empty store
        client = MlflowClient(tracking_uri)
        exps = experiments(client)
        history = all_runs(client, exps, status_is(Status.FINISHED)) if exps else []
    done = {r.data.tags.get(Tag.CONFIG_HASH) for r in history if holds_result(r)}
    by_cell: dict[tuple, list[float]] = {}
    for r in history:
        t, wall = r.data.tags, r.data.metrics.get(WALL_METRIC)
        if wall is not None:
            key = (t.get(Tag.DATASET), t.get(Tag.PAIR), t.get(Tag.METHOD), t.get(Tag.CELL))
            by_cell.setdefault(key, []).append(wall)

    gpu = sweep.resources.gpu
    unit, share = ("GPU", gpu) if gpu > 0 else ("CPU", sweep.resources.cpu)
    if sweep.search:
        s = sweep.search
        runs = [w for (ds, pair, method, _), ws in by_cell.items() for w in ws
                if ds == sweep.dataset.name and method == sweep.method and pair == plan.students[0]["labels"]["pair"]]
        if runs:
            est = (f"~{_duration(statistics.median(runs))} each (median of {len(runs)} earlier run(s) of this pair"
                   f" and method), {statistics.median(runs) * s.n_trials * share / 3600:.2f} {unit}-hours in all")
        else:
            hours, unit, how = flop_estimate(plan.students[:1], plan, sweep, repeat=s.n_trials)
            est = (f"no earlier run of this pair and method: ~{_duration(hours * 3600)} of {unit} time in all"
                   f" from FLOPs ({how})")
        say(f"{sweep.name}: an {s.algorithm} search of {s.n_trials} trials ({s.max_concurrent} at a time) over"
              f" {', '.join(s.space)} of {sweep.method} on {plan.students[0]['labels']['pair']}"
              f"{', ASHA stopping some early' if sweep.scheduler else ''}; {share:g} {unit} per trial; {est}")
        return
    say(f"{sweep.name}: {len(plan.students)} trials ({len(sweep.pairs)} pair(s) x {len(sweep.all_cells())}"
          f" cell(s) x {len(sweep.seeds)} seed(s){', + from-scratch students' if sweep.scratch else ''}),"
          f" {len(plan.teachers)} teacher(s); {share:g} {unit} per trial")
    total, known, reused = 0.0, 0, 0
    cells: dict[tuple, dict] = {}  # one line per pair x cell that earlier runs say something about
    for cfg in plan.students:
        key = _cell_key(cfg)
        line = cells.setdefault(key, {"label": f"{cell_label(cfg['labels']['cell']) or cfg['role']}"
                                               f" · {cfg['labels']['pair']}", "reused": 0, "est": 0})
        if cfg["config_hash"] in done:
            reused += 1
            line["reused"] += 1
        elif key in by_cell:
            total += statistics.median(by_cell[key])
            known += 1
            line["est"] += 1
            line["each"], line["n"] = statistics.median(by_cell[key]), len(by_cell[key])
    for line in cells.values():
        notes = ([f"{line['reused']} finished earlier with the same config"] if line["reused"] else []) + \
            ([f"{line['est']} at ~{_duration(line['each'])} each (median of {line['n']} earlier run(s))"]
             if line["est"] else [])
        if notes:
            say(f"{line['label']}: {'; '.join(notes)}", "  ")
    todo = [c for c in plan.students if c["config_hash"] not in done]
    untimed = [c for c in todo if _cell_key(c) not in by_cell]
    untimed += [c for c in plan.teachers if c["config_hash"] not in done and not c.get("init")]
    teachers = sum(c["role"] == "teacher" for c in untimed)
    head = (f"{reused} finished earlier, {known} estimated from earlier runs at {total * share / 3600:.2f}"
            f" {unit}-hours")
    if untimed:
        hours, unit, how = flop_estimate(untimed, plan, sweep)
        head += (f"; {len(untimed)} not run before{f' ({teachers} teacher(s) to train)' if teachers else ''}:"
                 f" ~{_duration(hours * 3600)} of {unit} time from their FLOPs")
        say(head)
        say(how[0].upper() + how[1:] + ".", "  ")
    else:
        say(head)
    if todo and not sweep.scheduler and sweep.pack != "off":
        say(packing_preview(sweep, todo))


def packing_preview(sweep: Sweep, todo: list[dict]) -> str:
    """How `pack` would group the trials to run on this machine (its CPUs, or its GPUs for a GPU sweep)."""
    import torch

    from . import packing

    have = {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
    slots = packing.slots(have, sweep.resources.cpu, sweep.resources.gpu)
    trials = packing.trials(todo, sweep.pack, slots)
    sizes = [len(t["pack"]) for t in trials if len(t["pack"]) > 1]
    if not sizes:
        return f"pack: {sweep.pack}: no two of these students share a trial here ({slots} trial slot(s))"
    return (f"pack: {sweep.pack}: here ({slots} trial slot(s)) the {len(todo)} students would run as {len(trials)}"
            f" trial(s), {len(sizes)} of them packs of {'/'.join(map(str, sizes))} sharing a teacher forward"
            f"{' (before the memory check)' if sweep.pack == 'auto' else ''}")

