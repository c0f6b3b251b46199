"""`kd-sweep run FILE --dry-run`: the trials a sweep would run, which earlier runs already cover them,
and what the rest should cost, judged from earlier runs of the same cells. Nothing starts."""
from __future__ import annotations

import json
import os
import statistics

from mlflow import MlflowClient

from .runner import preflight
from .spec import Sweep
from .tracking import store_exists
from .trials import cell_label


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"


def dry_run(sweep: Sweep, file: str, tracking_uri: str) -> None:
    # The checks `run` makes, data included: a dry run that passes where the run would stop misleads.
    plan = preflight(sweep, file, os.path.dirname(os.path.abspath(file)))
    history = []
    if store_exists(tracking_uri):  # a dry run writes nothing, not even an empty store
        client = MlflowClient(tracking_uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        history = client.search_runs(exps, "attributes.status = 'FINISHED'", max_results=5000) if exps else []
    done = {r.data.tags.get("kd.config_hash") for r in history if r.data.tags.get("kd.state") in ("done", "reused")}
    by_cell: dict[tuple, list[float]] = {}
    for r in history:
        t, wall = r.data.tags, r.data.metrics.get("cost/wall_s")
        if wall is not None:
            key = (t.get("kd.dataset"), t.get("kd.pair"), t.get("kd.method"), t.get("kd.cell"))
            by_cell.setdefault(key, []).append(wall)

    gpu = sweep.resources.gpu
    unit, share = ("GPU", gpu) if gpu > 0 else ("CPU", sweep.resources.cpu)
    if sweep.search:
        s = sweep.search
        runs = [w for (ds, pair, method, _), ws in by_cell.items() for w in ws
                if ds == sweep.dataset.name and method == sweep.method and pair == plan.students[0]["labels"]["pair"]]
        est = (f"~{_duration(statistics.median(runs))} each (median of {len(runs)} earlier run(s) of this pair and"
               f" method), {statistics.median(runs) * s.n_trials * share / 3600:.2f} {unit}-hours in all"
               if runs else "no earlier run of this pair and method to estimate from")
        print(f"{sweep.name}: an {s.algorithm} search of {s.n_trials} trials ({s.max_concurrent} at a time) over"
              f" {', '.join(s.space)} of {sweep.method} on {plan.students[0]['labels']['pair']}"
              f"{', ASHA stopping some early' if sweep.scheduler else ''}; {share:g} {unit} per trial; {est}")
        return
    print(f"{sweep.name}: {len(plan.students)} trials ({len(sweep.pairs)} pair(s) x {len(sweep.all_cells())}"
          f" cell(s) x {len(sweep.seeds)} seed(s){', + from-scratch students' if sweep.scratch else ''}),"
          f" {len(plan.teachers)} teacher(s); {share:g} {unit} per trial")
    total, known, reused = 0.0, 0, 0
    cells: dict[tuple, dict] = {}  # one line per pair x cell that earlier runs say something about
    for cfg in plan.students:
        key = (cfg["dataset"]["name"], cfg["labels"]["pair"], cfg["method"],
               json.dumps(cfg["labels"]["cell"], sort_keys=True))
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
            print(f"  {line['label']}: {'; '.join(notes)}")
    missing = len(plan.students) - reused - known
    print(f"{reused} finished earlier, {known} estimated at {total * share / 3600:.2f} {unit}-hours in all"
          + (f", {missing} without an estimate (no earlier run of their cells)" if missing else ""))
    todo = [c for c in plan.students if c["config_hash"] not in done]
    if todo and not sweep.scheduler and sweep.pack != "off":
        print(packing_preview(sweep, todo))


def packing_preview(sweep: Sweep, todo: list[dict]) -> str:
    """How `pack` would group the trials to run on this machine (its CPUs, or its GPUs for a GPU sweep)."""
    import torch

    from . import packing

    have = {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
    slots = packing.slots(have, sweep.resources.cpu, sweep.resources.gpu)
    units = packing.plan(todo, sweep.pack, slots)
    sizes = [len(u["pack"]) for u in units if "pack" in u]
    if not sizes:
        return f"pack: {sweep.pack}: no two of these students share a trial here ({slots} trial slot(s))"
    return (f"pack: {sweep.pack}: here ({slots} trial slot(s)) the {len(todo)} students would run as {len(units)}"
            f" trial(s), {len(sizes)} of them packs of {'/'.join(map(str, sizes))} sharing a teacher forward"
            f"{' (before the memory check)' if sweep.pack == 'auto' else ''}")

