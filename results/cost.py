"""What a table cost: device-hours per cell and per table, from the runs' own records.

A run's hours: GPU-hours = cost/wall_s × resources.gpu / 3600 when it reserved a GPU (gpu > 0), else
CPU-hours = cost/wall_s × resources.cpu / 3600. A cell's cost is the sum over all its runs (with
--best-over: every value of the axis, since the best needs them all), failed runs included: the
trainable logs cost/wall_s every epoch, so a run that died still shows what it spent. Not counted:
runs that logged no wall time (killed before their first epoch), teacher runs of an earlier sweep
reused by this one, and trials an earlier sweep finished that this one linked in instead of running
(kd.reused_from): their cost is that sweep's. The table total counts each run once (pairs may share a teacher or a from-scratch student).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from .table import Cell, latex_escape, markdown

WALL = "cost/wall_s"


@dataclass
class Cost:
    gpu_h: float = 0.0
    cpu_h: float = 0.0
    runs: int = 0  # runs counted
    uncounted: int = 0  # runs with no wall time (or no resources) logged
    reused: int = 0  # teacher runs of an earlier sweep
    devices: Counter = field(default_factory=Counter)  # kd.device of the counted runs


def run_hours(r: pd.Series) -> tuple[float, float] | None:
    """(GPU-hours, CPU-hours) of one run, or None when it logged no wall time or resources."""
    wall, gpu, cpu = r.get(WALL), r.get("gpu"), r.get("cpu")
    if wall is None or pd.isna(wall) or gpu is None or pd.isna(gpu):
        return None
    if gpu > 0:
        return wall * gpu / 3600, 0.0
    if cpu is None or pd.isna(cpu):
        return None
    return 0.0, wall * cpu / 3600


def cost_of(run_ids, runs: pd.DataFrame) -> Cost:
    by_id = runs.drop_duplicates("run_id").set_index("run_id")
    out = Cost()
    for rid in dict.fromkeys(run_ids):
        r = by_id.loc[rid]
        flag = r.get("in_sweep", True)
        if not pd.isna(flag) and not flag:
            out.reused += 1
            continue
        hours = run_hours(r)
        if hours is None:
            out.uncounted += 1
            continue
        out.gpu_h += hours[0]
        out.cpu_h += hours[1]
        out.runs += 1
        dev = r.get("device")
        out.devices[dev if isinstance(dev, str) and dev else "device not logged"] += 1
    return out


def cell_costs(table: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, Cost]:
    """Per cell, per row (each run once) and for the whole table."""
    cells = pd.DataFrame(index=table.index, columns=table.columns, dtype=object)
    rows, every = {}, []
    for pair, row in table.iterrows():
        ids = []
        for name, c in row.items():
            if isinstance(c, Cell):
                cells.loc[pair, name] = cost_of(c.run_ids, runs)
                ids += c.run_ids
        rows[pair] = cost_of(ids, runs)
        every += ids
    return cells, pd.Series(rows, dtype=object), cost_of(every, runs)


def hours(h: float) -> str:
    return f"{h:.2f}" if h >= 0.01 or h == 0 else f"{h:.1g}"


def _unit(total: Cost) -> str:
    if total.gpu_h > 0 and total.cpu_h > 0:
        return "mixed"
    return "CPU" if total.cpu_h > 0 else "GPU"


def _text(c: Cost | None, unit: str) -> str:
    if not isinstance(c, Cost) or c.runs == 0:
        return "–"
    if unit == "mixed":
        return " + ".join(f"{hours(h)} {u}-h" for h, u in ((c.gpu_h, "GPU"), (c.cpu_h, "CPU")) if h > 0)
    return hours(c.gpu_h if unit == "GPU" else c.cpu_h)


def summary(total: Cost) -> list[str]:
    parts = [f"{hours(total.gpu_h)} GPU-hours"] if total.gpu_h > 0 or total.cpu_h == 0 else []
    if total.cpu_h > 0:
        parts.append(f"{hours(total.cpu_h)} CPU-hours")
    devices = ", ".join(f"{d} ({n} run{'s' * (n != 1)})" for d, n in total.devices.most_common())
    out = [f"Total: {' + '.join(parts)} over {total.runs} run{'s' * (total.runs != 1)}"
           + (f"; devices (kd.device): {devices}." if devices else ".")]
    skipped = []
    if total.uncounted:
        skipped.append(f"{total.uncounted} run(s) that logged no wall time (failed or unfinished)")
    if total.reused:
        skipped.append(f"{total.reused} teacher run(s) of an earlier sweep, reused here")
    if skipped:
        out.append("Not counted: " + "; ".join(skipped) + ".")
    return out


def render_cost(table: pd.DataFrame, runs: pd.DataFrame, fmt: str) -> str:
    """The cost table (md or latex): the main table's rows and columns, a row total, then the total."""
    cells, rows, total = cell_costs(table, runs)
    unit = _unit(total)
    what = {"GPU": "GPU-hours (wall time × resources.gpu)", "CPU": "CPU-hours (wall time × resources.cpu)",
            "mixed": "device-hours (GPU-h: wall time × resources.gpu; CPU-h: wall time × resources.cpu)"}[unit]
    title = f"Cost per cell, {what}, summed over the cell's runs."
    header = ["teacher/student", *table.columns, "row total"]
    body = [[str(pair)] + [_text(c, unit) for c in cells.loc[pair]] + [_text(rows[pair], unit)]
            for pair in table.index]
    below = summary(total)
    if fmt == "latex":
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{l{'r' * (len(header) - 1)}}}",
                 r"\toprule", " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(latex_escape(x) for x in r) + r" \\" for r in body]
        lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip",
                  "{\\footnotesize " + " \\\\\n".join(map(latex_escape, below)) + r"\par}",
                  rf"\caption{{{latex_escape(title)}}}", r"\end{table}"]
        return "\n".join(lines) + "\n"
    return "\n".join([title, "", *markdown(header, body), "", *below]) + "\n"


def cost_columns(frame: pd.DataFrame, table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The CSV long form with gpu_h, cpu_h and cost_runs per cell, and a last row (pair and column
    `(total)`) for the table, each run counted once."""
    cells, _, total = cell_costs(table, runs)

    def get(r, attr):
        c = cells.loc[r["pair"], r["column"]]
        return round(getattr(c, attr), 6) if isinstance(c, Cost) and c.runs else (0 if attr == "runs" else math.nan)

    frame = frame.copy()
    frame["gpu_h"] = [get(r, "gpu_h") for _, r in frame.iterrows()]
    frame["cpu_h"] = [get(r, "cpu_h") for _, r in frame.iterrows()]
    frame["cost_runs"] = [get(r, "runs") for _, r in frame.iterrows()]
    last = {"pair": "(total)", "column": "(total)", "gpu_h": round(total.gpu_h, 6),
            "cpu_h": round(total.cpu_h, 6), "cost_runs": total.runs}
    out = pd.concat([frame, pd.DataFrame([last])], ignore_index=True)
    for c in ("n", "n_asked", "n_failed", "cost_runs"):
        out[c] = out[c].astype("Int64")
    out["best"] = out["best"].astype("boolean")
    return out
