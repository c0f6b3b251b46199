"""Published numbers beside ours: each table cell looked up in `results.published`, and every published
number of the sweep's own tables accounted for (shown, or why not).

Scope: a sweep file's `paper:` block (the parent's `kd.paper` tag) names the tables it reproduces and
the pairs it runs; only those tables' rows of those pairs are matched and counted. A sweep without it
(or a run logged before `paper:` existed) is matched against every table of its dataset, uncounted.

Matching rules:
- a student column matches rows with the same pair label, method and cell: the column's knobs without
  `method` (which has its own CSV column), values compared as numbers (λ 1 = λ 1.0); the Teacher
  column matches method `teacher` with pair = the teacher's label (or the row's pair); the Scratch
  column method `scratch` with pair = the row's pair or the student's label.
- A published row is a best-over row when its note says so: "best over AXIS ..." or "best of ...
  AXIS ..." (case-insensitive, within one clause). With `--best-over AXIS`, a column swept over AXIS
  matches only best-over-AXIS rows (their cell against the column's cell without AXIS); a column that
  was not swept over AXIS (CoSS at its own setting beside baselines swept over scale) and every
  column without `--best-over` match single-setting rows only.
- Only rows of the sweep's dataset (the parent's kd.dataset) and metric; no dataset known, no match.
- Several matching rows (two papers, say): the first in file order (papers sorted by name).
"""
from __future__ import annotations

import re

import pandas as pd

from .table import SCRATCH, TEACHER, Cell, fmt_value, norm, signed


def _norm_cell(cell: dict, *drop: str | None) -> dict:
    return {k: norm(v) for k, v in cell.items() if k not in drop and k != "method"}


def is_best_over(note: str, axis: str | None = None) -> bool:
    """Does this published row report the best over a sweep (of `axis`, when named)?"""
    note = note or ""
    if axis is None:
        return re.search(r"\bbest (over|of)\b", note, re.I) is not None
    return re.search(rf"\bbest (over|of)\b[^.;]*\b{re.escape(axis)}\b", note, re.I) is not None


def ref(row) -> str:
    return f"{row['paper']} {row['table']}".strip()


def in_scope(published: pd.DataFrame, scope: dict | None, dataset: str | None) -> pd.DataFrame:
    """The published rows a sweep answers for: its tables, its dataset, its pairs (a table split over two
    sweep files counts in each only the pairs that file runs)."""
    pub = published[published["dataset"] == dataset]
    if scope is None:
        return pub
    pub = pub[(pub["paper"] + " " + pub["table"]).isin(scope.get("tables", []))]
    pairs = scope.get("pairs", [])
    teachers = {p["pair"] for p in pairs} | {p["teacher"] for p in pairs}
    # A student alone (from scratch, or another paper's objective such as MoCo-v2) is keyed by its label.
    students = {p["pair"] for p in pairs} | {p["student"] for p in pairs}
    own = pub.apply(lambda r: r["pair"] in (teachers if r["method"] == "teacher" else students), axis=1)
    return pub[own] if len(pub) else pub


def attach_published(table: pd.DataFrame, published: pd.DataFrame, dataset: str | None, metric: str,
                     scope: dict | None = None) -> list[str]:
    """Set `paper` and `paper_ref` on every cell that has a published number; returns the sources used
    (also kept in `table.attrs["paper_sources"]`, which turns on the paper rows and columns). With a
    `scope` (the sweep's `kd.paper`), `table.attrs["paper_notes"]` gets the lines under the table: how
    many of its published numbers are shown, why the others are not, the teacher gaps, the deviations."""
    metric = metric.removeprefix("eval/")
    # The same pair label names different numbers on different datasets (RRKD: CIFAR-10, CIFAR-100,
    # SVHN): without the sweep's dataset nothing matches.
    mine = in_scope(published, scope, dataset)
    pub = mine[mine["metric"] == metric]
    columns, pairs = table.attrs.get("columns", {}), table.attrs.get("pairs", {})
    used, shown = [], set()  # shown: the published rows' index labels
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
                hit = pub[(pub["pair"] == pair) & (pub["method"] == meta["method"])]
                hit = hit[[_matches(r, meta["cell"], swept_axis(table, name)) for _, r in hit.iterrows()]]
            if len(hit):
                first = hit.iloc[0]
                c.paper, c.paper_ref, c.paper_runs = float(first["value"]), ref(first), first["runs"]
                shown.add(first.name)
                if c.paper_ref not in used:
                    used.append(c.paper_ref)
    table.attrs["paper_sources"] = used
    if scope is not None:
        table.attrs["paper_notes"] = coverage(table, mine, shown, metric, scope) + teacher_gaps(table, mine) \
            + deviations(scope)
    elif used:
        table.attrs["paper_notes"] = ["This sweep's file names no published table (`paper:`): its cells were"
                                      " matched against every table of its dataset."]
    return used


def swept_axis(table: pd.DataFrame, column: str) -> str | None:
    """The --best-over axis when this column was swept over it (its published row is then a best-over
    row), else None."""
    bo = table.attrs.get("best_over")
    return bo["axis"] if bo and column in bo.get("columns", []) else None


def _matches(row, cell: dict, axis: str | None) -> bool:
    """A published row against a column's cell; `axis`: the column was swept over it (--best-over)."""
    if axis is not None:
        return is_best_over(row["note"], axis) and _norm_cell(row["cell"], axis) == _norm_cell(cell, axis)
    return not is_best_over(row["note"]) and _norm_cell(row["cell"]) == _norm_cell(cell)


def describe(row) -> str:
    cell = " ".join(f"{k}={fmt_value(norm(v))}" for k, v in row["cell"].items())
    what = " ".join(x for x in (row["method"], cell) if x)
    return f"{row['pair']} {what} ({row['metric']} {row['value']:.2f})"


def why_not(row, table: pd.DataFrame) -> str:
    """Why a published number of the sweep's own tables, of the table's metric, is not in the table."""
    bo = table.attrs.get("best_over")
    axis = bo["axis"] if bo else None
    columns = table.attrs.get("columns", {})
    if row["method"] == "teacher":
        return "no finished teacher run of it in this sweep"
    if row["method"] == "scratch":
        return "no from-scratch column (`scratch: true` in the sweep file)"
    from trainables.methods import METHODS

    if row["method"] not in METHODS:
        return f"{row['method']} is not implemented in kd-sweep"
    if row["pair"] not in table.index:
        return "no finished run of this pair"
    cols = [n for n, m in columns.items() if m["method"] == row["method"]]
    if not cols:
        return f"method {row['method']} was not run"
    if is_best_over(row["note"]) and not (axis and is_best_over(row["note"], axis)):
        axes = [a for a in _axes(table) if is_best_over(row["note"], a)]
        return f"a best over {axes[0]}: `--best-over {axes[0]}` shows it" if axes else \
            "a best over a sweep this table does not hold"
    if not is_best_over(row["note"]) and axis and any(
            _norm_cell(row["cell"], axis) == _norm_cell(columns[n]["cell"]) for n in cols if swept_axis(table, n)):
        return f"a single {axis} setting: shown without --best-over"
    for n in cols:
        c = table.loc[row["pair"], n] if n in table.columns else None
        if isinstance(c, Cell) and _matches(row, columns[n]["cell"], swept_axis(table, n)):
            return f"another published number was shown for that cell ({c.paper_ref} {c.paper:.2f})"
    return "that cell was not run (no column with these knobs)"


def _axes(table: pd.DataFrame) -> list[str]:
    cols = table.attrs.get("columns", {}).values()
    out = list(dict.fromkeys(k for m in cols for k in m["cell"] if k != "method"))
    bo = table.attrs.get("best_over")
    return out + ([bo["axis"]] if bo and bo["axis"] not in out else [])


def coverage(table: pd.DataFrame, mine: pd.DataFrame, shown: set, metric: str, scope: dict) -> list[str]:
    """How many of the sweep's published numbers the table shows; each other one with its reason (those
    of another metric summed up: one `--metric` shows them)."""
    tables = "; ".join(scope.get("tables", []))
    out = [f"Published numbers shown: {len(shown)} of {len(mine)} ({tables}, this sweep's pairs)."]
    rest = mine[~mine.index.isin(shown)]
    other = rest[rest["metric"] != metric]
    if len(other):
        counts = other["metric"].value_counts(sort=False)
        out.append(f"Not shown: {len(other)} published as another metric ("
                   + ", ".join(f"{m} ×{n}" for m, n in counts.items()) + "): "
                   + " or ".join(f"`--metric {m}`" for m in counts.index) + (" shows it." if len(other) == 1 else " shows them."))
    for _, row in rest[rest["metric"] == metric].iterrows():
        out.append(f"Not shown: {describe(row)}: {why_not(row, table)}.")
    return out


def teacher_gaps(table: pd.DataFrame, mine: pd.DataFrame | None = None) -> list[str]:
    """Our teachers are our own: every student Δ also holds the teacher's. Where the paper publishes its
    teacher under another metric (CRD's teachers by their classifier, under a linear-probe table), the
    note names the `--metric` that compares them."""
    gaps, unknown, elsewhere = [], [], {}
    if TEACHER not in table.columns:
        return []
    for pair, c in table[TEACHER].items():
        if not isinstance(c, Cell) or pd.isna(c.mean):
            continue
        label = table.attrs.get("pairs", {}).get(pair, {}).get("teacher", pair)
        other = mine[(mine["method"] == "teacher") & mine["pair"].isin([label, pair])] if mine is not None else []
        if c.paper is not None:
            gaps.append(f"{label} {c.mean:.2f} vs {c.paper:.2f} (Δ {signed(c.delta)})")
        elif len(other):
            elsewhere.setdefault(other["metric"].iloc[0], []).append(str(label))
        else:
            unknown.append(str(label))
    out = []
    if gaps:
        out.append("Teachers, ours vs the paper's: " + "; ".join(dict.fromkeys(gaps))
                   + ". A student's Δ includes its teacher's.")
    for m, labels in elsewhere.items():
        out.append(f"The paper's teacher(s) {', '.join(dict.fromkeys(labels))} are published as {m}: `--metric {m}`"
                   " sets ours beside them (a student's Δ includes its teacher's).")
    if unknown:
        out.append(f"No published accuracy for our teacher(s) {', '.join(dict.fromkeys(unknown))}: each student Δ"
                   " also holds an unknown teacher gap.")
    return out


def deviations(scope: dict) -> list[str]:
    devs = scope.get("deviations", [])
    if not devs:
        return []
    return ["Known differences from the authors' runs (the sweep file's `paper.deviations`):",
            *(f"- {d}" for d in devs)]
