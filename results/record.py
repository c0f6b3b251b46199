"""A reproduction record: what sweeps were run, how, on what, and how their numbers stand against the
papers', written from the runs in the store (`kd-sweep record`), never typed.

Per sweep: the command that started its latest run (kd.command), the commit and versions its runs
recorded (kd.versions.*), the hardware, the wall time of its parent run, and its `--paper` tables, one
per metric its published numbers use (RRKD Table 2 scores the teacher and the baseline by their
classifier, the distilled student by a linear probe). On top, one summary row per published number
shown: ours, the paper's, Δ and the verdict.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

import pandas as pd

from .compare import in_scope
from .mlflow_schema import Tag, run_versions
from .report import compose, dataset_of, paper_scope
from .table import SCRATCH, TEACHER, Cell


@dataclass
class SweepRun:
    """A sweep's latest parent run as the record needs it."""
    name: str
    run_id: str
    tags: dict
    start_ms: int
    end_ms: int | None
    status: str
    runs: pd.DataFrame  # collect.sweep_runs' frame


def metrics_for(s: SweepRun, published: pd.DataFrame) -> list[str]:
    """The metrics the sweep's published numbers are given in, in the CSV's order; linear_top1 when none."""
    pub = in_scope(published, paper_scope(s.tags), dataset_of(s.tags, s.runs))
    return list(dict.fromkeys(pub["metric"])) or ["linear_top1"]


def _duration(ms: float) -> str:
    s = round(ms / 1000)
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s ({s} s)"


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _common(values: list[dict], key: str) -> str:
    seen = Counter(v.get(key) for v in values if v.get(key))
    if not seen:
        return "not recorded"
    return ", ".join(f"{v} ({n} runs)" if len(seen) > 1 else v for v, n in seen.most_common())


def _ours(c: Cell) -> str:
    if math.isnan(c.mean):
        return "–"
    return f"{c.mean:.2f} ± {'–' if math.isnan(c.std) else f'{c.std:.2f}'} ({c.n})"


def summary_rows(s: SweepRun, table: pd.DataFrame, metric: str) -> list[list[str]]:
    """One row per cell with a published number: table, cell, ours, paper (runs), Δ, verdict."""
    rows = []
    for pair, row in table.iterrows():
        for name, c in row.items():
            if not isinstance(c, Cell) or c.paper is None:
                continue
            teacher, _, student = str(pair).partition("/")
            who = {TEACHER: f"teacher {teacher}", SCRATCH: f"scratch {student or pair}"}.get(name, f"{name} ({pair})")
            runs = "?" if c.paper_runs is None else str(c.paper_runs)
            verdict = "teacher gap" if name == TEACHER else (c.verdict or "")
            rows.append([c.paper_ref, f"{who}, {metric}", _ours(c), f"{c.paper:.2f} ({runs})",
                         "" if c.delta is None else f"{c.delta:+.2f}".replace("-", "−"), verdict])
    return rows


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def render_record(sweeps: list[SweepRun], published: pd.DataFrame, command: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    summary: list[list[str]] = []
    sections: list[str] = []
    for s in sweeps:
        mine = s.runs  # every run whose numbers the tables show, linked ones from earlier sweeps included
        versions = [v for v in mine["versions"] if v] if "versions" in mine else []
        driver = run_versions(s.tags)
        devices = sorted({str(d) for d in mine.get("device", pd.Series(dtype=object)).dropna()})
        wall = "still running" if s.end_ms is None else _duration(s.end_ms - s.start_ms)
        attempts = int(s.tags.get(Tag.ATTEMPT, "1") or 1)
        lines = [f"## {s.name}", "",
                 f"- command: `{s.tags.get(Tag.COMMAND, 'not recorded (a run made before kd.command)')}`",
                 f"- parent run: {s.run_id} ({s.status}), started {_when(s.start_ms)}, wall time {wall}"
                 + (f" over {attempts} attempts (the time between them included)" if attempts > 1 else ""),
                 f"- commit: {_common(versions or [driver], 'commit')}",
                 "- versions: " + ", ".join(f"{k} {_common(versions or [driver], k)}"
                                             for k in ("kd-sweep", "python", "torch", "torchvision", "ray", "mlflow")),
                 f"- hardware: {_common(versions or [driver], 'cpu')}"
                 + (f"; GPU {_common(versions, 'gpu')}" if any(v.get("gpu") for v in versions) else "")
                 + (f"; trials ran on {', '.join(devices)}" if devices else ""),
                 ""]
        for metric in metrics_for(s, published):
            text, table, _ = compose(s.tags, s.run_id, s.runs, metric, "md", paper=True, published=published)
            summary += summary_rows(s, table, metric)
            lines += [f"### {metric}", "", f"`kd-sweep report {s.name} --paper --metric {metric}`:", "",
                      text.rstrip("\n"), ""]
        sections.append("\n".join(lines))
    names = ", ".join(s.name for s in sweeps)
    head = [f"# Reproduction record: {names}", "",
            f"Written by `{command}` on {now.strftime('%Y-%m-%d %H:%M UTC')} from the runs in the store; do not"
            " edit by hand. Each sweep's section gives the command that ran it, its commit, versions, hardware and"
            " wall time, and its `--paper` tables with their notes.", "",
            "Verdicts: ✓ reproduced, ✗ not reproduced (the published number lies outside what our seeds' spread"
            " allows it, the paper's own run count counted: see the notes under each table), ? too few seeds;"
            " a teacher is one run of ours, so its Δ is a gap, not a verdict. \"paper (m)\": the published number and"
            " how many runs it averages (? where the paper does not say).", ""]
    head += _md(["table", "cell", "ours: mean ± std (seeds)", "paper (runs)", "Δ", "verdict"], summary)
    verdicts = Counter(r[-1] for r in summary)
    head += ["", "Student cells: " + ", ".join(f"{n} {v}" for v, n in verdicts.items() if v != "teacher gap") + ".", ""]
    return "\n".join(head + sections) + "\n"
