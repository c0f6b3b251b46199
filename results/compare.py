"""Published numbers beside ours: each table cell looked up in `results.published` by
(dataset, pair, column's method + cell, metric).

Matching rules:
- a student column matches rows with the same pair label, method and cell (knob values compared as
  numbers: λ 1 = λ 1.0); the Teacher column matches method `teacher` with pair = the teacher's label
  (or the row's pair); the Scratch column method `scratch` with pair = the row's pair or the
  student's label.
- A published row is a best-over row when its note says so: "best over AXIS ..." or "best of ...
  AXIS ..." (case-insensitive, within one clause). With `--best-over AXIS` only best-over-AXIS rows
  match (their cell without AXIS against the column's cell); without it, best-over rows never match
  (a best over a sweep is not the number of one setting).
- Only rows of the sweep's dataset (the parent's kd.dataset) and metric; no dataset known, no match.
- Several matching rows (two papers, say): the first in file order (papers sorted by name).
"""
from __future__ import annotations

import re

import pandas as pd

from .table import SCRATCH, TEACHER, Cell, norm


def _norm_cell(cell: dict, drop: str | None = None) -> dict:
    return {k: norm(v) for k, v in cell.items() if k != drop}


def is_best_over(note: str, axis: str | None = None) -> bool:
    """Does this published row report the best over a sweep (of `axis`, when named)?"""
    note = note or ""
    if axis is None:
        return re.search(r"\bbest (over|of)\b", note, re.I) is not None
    return re.search(rf"\bbest (over|of)\b[^.;]*\b{re.escape(axis)}\b", note, re.I) is not None


def ref(row) -> str:
    return f"{row['paper']} {row['table']}".strip()


def attach_published(table: pd.DataFrame, published: pd.DataFrame, dataset: str | None, metric: str) -> list[str]:
    """Set `paper` and `paper_ref` on every cell that has a published number; returns the sources used
    (also kept in `table.attrs["paper_sources"]`, which turns on the paper rows and columns)."""
    metric = metric.removeprefix("eval/")
    # The same pair label names different numbers on different datasets (RRKD: CIFAR-10, CIFAR-100,
    # SVHN): without the sweep's dataset nothing matches.
    pub = published[(published["metric"] == metric) & (published["dataset"] == dataset)]
    bo = table.attrs.get("best_over")
    axis = bo["axis"] if bo else None
    columns, pairs = table.attrs.get("columns", {}), table.attrs.get("pairs", {})
    used = []
    for pair, row in table.iterrows():
        labels = pairs.get(pair, {"teacher": str(pair).split("/")[0], "student": str(pair).split("/")[-1]})
        for name, c in row.items():
            if not isinstance(c, Cell):
                continue
            if name == TEACHER:
                hit = pub[(pub["method"] == "teacher") & pub["pair"].isin([labels["teacher"], pair])]
            elif name == SCRATCH:
                hit = pub[(pub["method"] == "scratch") & pub["pair"].isin([pair, labels["student"]])]
            else:
                meta = columns.get(name)
                if meta is None:
                    continue
                want = _norm_cell(meta["cell"])
                cand = pub[(pub["pair"] == pair) & (pub["method"] == meta["method"])]
                ok = [is_best_over(r["note"], axis) and _norm_cell(r["cell"], axis) == want if axis
                      else not is_best_over(r["note"]) and _norm_cell(r["cell"]) == want
                      for _, r in cand.iterrows()]
                hit = cand[ok] if len(cand) else cand
            if len(hit):
                first = hit.iloc[0]
                c.paper, c.paper_ref = float(first["value"]), ref(first)
                if c.paper_ref not in used:
                    used.append(c.paper_ref)
    table.attrs["paper_sources"] = used
    return used
