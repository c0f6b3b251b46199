"""The paper table: rows are teacher/student pairs, columns the swept values (or methods), cells
mean ± std (n) over seeds, the best student cell of each row in bold; Teacher and Scratch columns
when those runs exist.

Rules the table keeps (and states under itself):
- Only FINISHED runs with the metric are averaged. A cell with fewer finished seeds than the sweep
  asked (the parent's kd.seeds) shows `(n/asked)` and `†`; a cell with failed trials shows `‡`.
- `best_over=AXIS`: for each (pair, other knob values, seed) the best run (highest metric) over
  AXIS's values, then mean ± std over seeds; a seed counts only when every AXIS value of the sweep
  finished for it (a best over part of the sweep is another quantity), so a missing value shows as
  a missing seed (`†`). AXIS leaves the columns.
- Whether a difference is real: with two or more seeds in both, each student cell is compared with
  its row's best by Welch's t-test; a cell not significantly below the best (p ≥ 0.05) is marked `≈`.
  With `--paper`, each published number is set against the spread our seeds allow it, counting the
  paper's own seed noise: a published single run against our 95% prediction interval, a published
  mean of m runs against the interval for a difference of two means (both from our std over n seeds,
  Student's t): inside ✓ (reproduced), outside ✗ (not reproduced), one seed ? (too few to say).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from .mlflow_schema import Status
from .provenance import cell_run_ids, versions_note

TEACHER, SCRATCH = "Teacher", "Scratch"
FEWER, FAILED = "†", "‡"  # fewer finished seeds than asked; failed trials in the cell
FEWER_NOTE = f"{FEWER} fewer finished seeds than the sweep asked for, shown as (finished/asked)."
FAILED_NOTE = f"{FAILED} the cell has failed trials; they are never averaged in."
NOT_WORSE = "≈"  # not significantly below the row's best
ALPHA = 0.05
NOT_WORSE_NOTE = (f"{NOT_WORSE} not significantly below the row's best (Welch's t-test over seeds, p ≥ {ALPHA:g});"
                  " an unmarked cell with two or more seeds is below it at p < 0.05.")
REPRODUCED, NOT_REPRODUCED, UNDECIDED = "✓", "✗", "?"
VERDICT_NOTE = (f"{REPRODUCED} the published number lies where our seeds' spread allows it, the paper's own seed"
                " noise counted (95%, Student's t on our std s over n seeds: for a published single run our"
                " prediction interval, mean ± t·s·√(1 + 1/n); for a published mean of m runs the interval for a"
                f" difference of means, mean ± t·s·√(1/n + 1/m)): reproduced; {NOT_REPRODUCED} outside it: not"
                f" reproduced, by Δ; {UNDECIDED} one seed: too few to say.")
UNSTATED_RUNS_NOTE = "Where the paper does not say how many runs a number averages, it is judged as one run."


class ReportError(Exception):
    """A report option that does not fit the sweep (an unknown axis, a non-numeric one...)."""


@dataclass
class Cell:
    mean: float  # nan when no seed finished
    std: float  # sample std over seeds; nan for one seed
    n: int  # finished seeds averaged
    asked: int | None = None  # seeds the sweep asked for (None: unknown, as many as n)
    failed: int = 0  # failed trials of the cell, never averaged
    run_ids: tuple[str, ...] = ()  # every run of the cell, whatever its status (what it cost)
    chosen: tuple = ()  # with best_over: the winning axis value, per averaged seed
    paper: float | None = None  # the published number for this cell, when attached
    paper_ref: str = ""  # where it comes from: "coss supp. Table 3"
    paper_runs: int | None = None  # how many runs the published number averages (None: the paper does not say)
    values: tuple[float, ...] = ()  # the averaged values, one per seed
    p_best: float | None = None  # Welch's t-test against the row's best cell (None: not tested)

    @property
    def ci(self) -> tuple[float, float] | None:
        """The 95% interval for the mean over seeds (Student's t); None below two seeds."""
        if self.n < 2 or math.isnan(self.std):
            return None
        from scipy.stats import t

        half = float(t.ppf(0.975, self.n - 1)) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def paper_interval(self) -> tuple[float, float] | None:
        """Where the published number may lie and still be ours (95%): our mean ± t·s·√(1/n + 1/m) for a
        number that averages m runs, with our std s over n seeds standing for both sides' seed noise
        (m = 1, a single run: the prediction interval; the paper's own spread is rarely published).
        None below two seeds or without a published number."""
        if self.paper is None or self.n < 2 or math.isnan(self.std):
            return None
        from scipy.stats import t

        m = self.paper_runs or 1
        half = float(t.ppf(0.975, self.n - 1)) * self.std * math.sqrt(1 / self.n + 1 / m)
        return self.mean - half, self.mean + half

    @property
    def verdict(self) -> str | None:
        """Against the published number: reproduced, not reproduced, or too few seeds to say."""
        if self.paper is None or math.isnan(self.mean):
            return None
        band = self.paper_interval
        if band is None:
            return UNDECIDED
        # As printed: a published 73.90 against an interval that ends at 73.899 is inside it.
        return REPRODUCED if round(band[0], 2) <= self.paper <= round(band[1], 2) else NOT_REPRODUCED

    @property
    def not_worse(self) -> bool:
        return self.p_best is not None and self.p_best >= ALPHA

    @property
    def short(self) -> bool:
        return self.asked is not None and self.n < self.asked

    @property
    def delta(self) -> float | None:
        """Ours − published, on the means."""
        return None if self.paper is None or math.isnan(self.mean) else self.mean - self.paper


def column_label(cell: dict, method: str, methods_vary: bool) -> str:
    parts = [f"{k}={v}" for k, v in cell.items() if k != "method"]
    if methods_vary or not parts:
        parts.insert(0, cell.get("method", method))
    return " ".join(parts)


def _order_key(cell: dict) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in cell.values())


def norm(v):
    """A knob value to compare by: 1 and 1.0 are the same λ."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def axes(runs: pd.DataFrame) -> list[str]:
    """The knobs the sweep's student cells name (its grid axes)."""
    students = runs[runs["role"] == "student"]
    return list(dict.fromkeys(k for c in students["cell"] for k in c))


def _stats(values: list[float]) -> tuple[float, float]:
    v = pd.Series(values, dtype=float)
    if v.empty:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def _cell(grp: pd.DataFrame, col: str, asked: int | None, axis: str | None = None,
          expected: frozenset = frozenset()) -> Cell:
    """One cell from its runs (any status): finished ones averaged over seeds, the rest counted."""
    failed = int((grp["status"] == Status.FAILED).sum())
    if asked is None:
        asked = int(grp["seed"].nunique()) or None
    ok = grp[(grp["status"] == Status.FINISHED) & grp[col].notna()]
    chosen = []
    if axis is None:
        values = ok[col].astype(float).tolist()
    else:
        values = []
        for _, seed_runs in ok.groupby("seed", sort=True):
            by = {norm(c.get(axis)): float(v) for c, v in zip(seed_runs["cell"], seed_runs[col])}
            if expected - by.keys():  # a best over part of the sweep: not this quantity
                continue
            best = max(sorted(by, key=_sort_value), key=by.get)  # ties: the smallest axis value
            values.append(by[best])
            chosen.append(best)
    mean, std = _stats(values)
    return Cell(mean, std, len(values), asked, failed, tuple(grp["run_id"]), tuple(chosen), values=tuple(values))


def _sort_value(v) -> tuple:
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def build(runs: pd.DataFrame, metric: str, seeds: list | None = None,
          best_over: str | None = None) -> tuple[pd.DataFrame, str]:
    """A frame of `Cell`s (index: pair, columns: labels) and the metric column used.

    `seeds`: the seeds the sweep asked for (the parent's kd.seeds); without it a cell's asked count is
    the seeds its own runs name. `best_over`: a grid axis to take the best over, per seed.
    `table.attrs` keeps what the other parts of the report need: `columns` (label -> method and
    cell), `pairs` (pair -> teacher and student labels), `best_over` (axis and its values).
    """
    col = metric if metric.startswith("eval/") else f"eval/{metric}"
    if col not in runs.columns:
        have = sorted(c.removeprefix("eval/") for c in runs.columns if c.startswith("eval/"))
        raise KeyError(f"no metric {metric!r} in these runs (metrics: {', '.join(have) or 'none'})")
    done = runs[runs["status"] == Status.FINISHED]
    students = runs[runs["role"] == "student"]
    if best_over is not None and best_over not in axes(runs):
        raise ReportError(f"no axis {best_over!r} to take the best over in this sweep"
                          f" (its axes: {', '.join(axes(runs)) or 'none'})")
    if students.empty:  # a teachers sweep: one row per teacher
        teachers = done[done["role"] == "teacher"]
        table = pd.DataFrame(index=pd.Index(list(dict.fromkeys(teachers["student"])), name="pair"),
                             columns=[TEACHER], dtype=object)
        for label, grp in teachers.groupby("student"):
            table.loc[label, TEACHER] = Cell(float(grp[col].iloc[0]), math.nan, 1, 1, 0,
                                             (grp["run_id"].iloc[0],))
        table.attrs.update(columns={TEACHER: {"method": "teacher", "cell": {}}},
                           pairs={p: {"teacher": p, "student": p} for p in table.index}, best_over=None,
                           versions_note=versions_note(runs, cell_run_ids(table)))
        return table, col
    asked = len(seeds) if seeds else None
    methods_vary = students["method"].nunique() > 1

    def key(r) -> tuple[str, dict]:
        cell = {k: v for k, v in r["cell"].items() if k != best_over}
        return column_label({**cell, "method": r["method"]}, r["method"], methods_vary), cell

    keys = students.apply(key, axis=1, result_type="reduce")
    labels = keys.map(lambda k: k[0])
    meta, order, expected = {}, {}, {}
    for (label, cell), (_, r) in zip(keys, students.iterrows()):
        meta.setdefault(label, {"method": r["method"], "cell": cell})
        order.setdefault(label, _order_key(cell))
        if best_over is not None and best_over in r["cell"]:
            expected.setdefault(label, set()).add(norm(r["cell"][best_over]))
    columns = sorted(meta, key=lambda c: order[c])
    # As the sweep file lists them (runs finish in any order); runs logged without the index keep theirs.
    first = students.groupby("pair", sort=False)["pair_index"].min() if "pair_index" in students else None
    pairs = list(dict.fromkeys(students["pair"]))
    if first is not None:
        pairs.sort(key=lambda p: (first[p] if pd.notna(first[p]) else math.inf))
    table = pd.DataFrame(index=pd.Index(pairs, name="pair"), columns=[TEACHER, SCRATCH, *columns], dtype=object)
    for (pair, label), grp in students.groupby([students["pair"], labels], sort=False):
        if (grp["status"] == Status.FINISHED).any() and grp[col].isna().all():
            continue  # finished runs that do not score this metric (no classifier): no column for it
        axis = best_over if label in expected else None
        table.loc[pair, label] = _cell(grp, col, asked, axis, frozenset(expected.get(label, ())))
    teachers = done[done["role"] == "teacher"].drop_duplicates("weights_hash").set_index("weights_hash")
    scratch = runs[runs["role"] == "scratch"]
    pair_labels = {}
    for pair in pairs:
        rows = students[students["pair"] == pair]
        named = [t for t in rows["teacher"].dropna() if t]
        student = rows["student"].iloc[0]
        pair_labels[pair] = {"teacher": named[0] if named else pair.split("/")[0], "student": student}
        # One teacher, or one per seed (teacher_per_seed): mean ± std over the teachers the row's students used.
        th = [h for h in rows["teacher_hash"].dropna().unique() if h]
        if th and all(h in teachers.index and pd.notna(teachers.loc[h, col]) for h in th):
            vals = [float(teachers.loc[h, col]) for h in th]
            sd = float(pd.Series(vals).std()) if len(vals) > 1 else math.nan
            table.loc[pair, TEACHER] = Cell(sum(vals) / len(vals), sd, len(vals), len(vals), 0,
                                            tuple(teachers.loc[h, "run_id"] for h in th), values=tuple(vals))
        mine = scratch[scratch["student"] == student]
        if not mine.empty:
            table.loc[pair, SCRATCH] = _cell(mine, col, asked)
    table = table.dropna(axis=1, how="all")
    values = sorted(set().union(*expected.values()), key=_sort_value) if expected else []
    meta.update({TEACHER: {"method": "teacher", "cell": {}}, SCRATCH: {"method": "scratch", "cell": {}}})
    table.attrs.update(columns={c: meta[c] for c in table.columns}, pairs=pair_labels,
                       best_over={"axis": best_over, "values": values, "columns": sorted(expected)}
                       if best_over else None)
    compare_to_best(table)
    table.attrs["versions_note"] = versions_note(runs, cell_run_ids(table))
    return table, col


def welch_p(a: tuple[float, ...], b: tuple[float, ...]) -> float | None:
    """Two-sided p of Welch's t-test; None below two values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy.stats import ttest_ind

    if len(set(a)) == 1 and len(set(b)) == 1:  # no spread on either side: equal means are the same, others not
        return 1.0 if a[0] == b[0] else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def compare_to_best(table: pd.DataFrame) -> None:
    """Each student cell's `p_best`: Welch's t-test against its row's best cell (the best: 1)."""
    best = best_columns(table)
    for pair, row in table.iterrows():
        tops = [row[name] for name in sorted(best[pair])]
        if not tops:
            continue
        top = max(tops, key=lambda c: c.n)
        for name, c in row.items():
            if isinstance(c, Cell) and name != TEACHER and not math.isnan(c.mean):
                c.p_best = 1.0 if name in best[pair] else welch_p(top.values, c.values)


def best_columns(table: pd.DataFrame) -> dict[str, set[str]]:
    """Per row, the student columns with the highest mean as printed (ties all bold; the teacher never
    competes)."""
    out = {}
    for pair, row in table.iterrows():
        scored = {name: round(c.mean, 2) for name, c in row.items()
                  if isinstance(c, Cell) and name != TEACHER and not math.isnan(c.mean)}
        top = max(scored.values(), default=None)
        out[pair] = {name for name, m in scored.items() if m == top}
    return out


def _marks(c: Cell, best: bool = False) -> str:
    """A best cell carries no ≈: its bold says more."""
    return (FEWER if c.short else "") + (FAILED if c.failed else "") + (NOT_WORSE if c.not_worse and not best else "")


def _text(c: Cell | None, latex: bool, best: bool = False) -> str:
    if not isinstance(c, Cell):
        return "–"
    n = f"({c.n}/{c.asked})" if c.short else f"({c.n})"
    if math.isnan(c.mean):
        s = f"– {n}"
    else:
        pm = r"$\pm$" if latex else "±"
        std = "–" if math.isnan(c.std) else f"{c.std:.2f}"
        s = f"{c.mean:.2f} {pm} {std} {n}"
    marks = _marks(c, best)
    if marks and latex:
        marks = "$^{" + marks.replace(FEWER, r"\dagger").replace(FAILED, r"\ddagger").replace(NOT_WORSE, r"\approx") + "}$"
    return s + marks


def _delta(c: Cell, name: str, latex: bool) -> str:
    """Δ and, for a student cell, the verdict (the teacher is one run: its Δ is the teacher gap)."""
    if c.delta is None:
        return ""
    mark = c.verdict if name != TEACHER else None
    if mark and latex:
        mark = {REPRODUCED: r"\checkmark", NOT_REPRODUCED: r"$\times$", UNDECIDED: "?"}[mark]
    return signed(c.delta, latex) + (f" {mark}" if mark else "")


def signed(x: float, latex: bool = False) -> str:
    """+0.05, −0.01 (a real minus sign), 0.00."""
    s = f"{x:+.2f}"
    if s in ("+0.00", "-0.00"):
        s = "0.00"
    return f"${s}$" if latex else s.replace("-", "−")


LATEX = {"±": r"$\pm$", "∈": r"$\in$", "Δ": r"$\Delta$", "−": "$-$", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
         "λ": r"$\lambda$", "α": r"$\alpha$", "≥": r"$\geq$", "≈": r"$\approx$", "✓": r"\checkmark{}", "✗": r"$\times$", "×": r"$\times$", "…": r"\dots{}"}


def latex_escape(s: str) -> str:
    s = re.sub(r"([_%&#{}])", r"\\\1", s)
    for k, v in LATEX.items():
        s = s.replace(k, v)
    return s


def notes(table: pd.DataFrame) -> list[str]:
    """The lines under the table: the best-over rule, the marks that occur, where published numbers
    come from."""
    out = []
    if bo := table.attrs.get("best_over"):
        axis, values = bo["axis"], ", ".join(fmt_value(v) for v in bo["values"])
        out.append(f"Best over {axis} ∈ {{{values}}} per seed (the highest value among that seed's runs;"
                   f" a seed counts only when every {axis} finished), then mean ± std over seeds.")
    cells = [c for _, row in table.iterrows() for c in row if isinstance(c, Cell)]
    if any(c.short for c in cells):
        out.append(FEWER_NOTE)
    if any(c.failed for c in cells):
        out.append(FAILED_NOTE)
    best = best_columns(table)
    if any(isinstance(c, Cell) and c.not_worse and name not in best[pair]
           for pair, row in table.iterrows() for name, c in row.items()):
        out.append(NOT_WORSE_NOTE)
    if refs := table.attrs.get("paper_sources"):
        out.append(f"paper: the published number ({'; '.join(refs)}); Δ = ours − paper, on the means.")
        judged = [c for name, c in _student_cells(table) if c.verdict]
        if judged:
            out.append(VERDICT_NOTE)
        if any(c.paper_runs is None for c in judged):
            out.append(UNSTATED_RUNS_NOTE)
    out += table.attrs.get("paper_notes", [])  # results.compare: coverage, teacher gaps, deviations
    if note := table.attrs.get("versions_note"):
        out.append(note)
    return out


def _student_cells(table: pd.DataFrame):
    for _, row in table.iterrows():
        for name, c in row.items():
            if isinstance(c, Cell) and name != TEACHER:
                yield name, c


def csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The long form: one row per (pair, column) cell."""
    best = best_columns(table)
    bo = table.attrs.get("best_over")
    with_paper = "paper_sources" in table.attrs  # --paper asked: the columns, even when nothing matched
    rows = []
    for pair, row in table.iterrows():
        for name, c in row.items():
            if not isinstance(c, Cell):
                continue
            r = {"pair": pair, "column": name, "mean": None if math.isnan(c.mean) else round(c.mean, 4),
                 "std": None if math.isnan(c.std) else round(c.std, 4), "n": c.n,
                 "n_asked": c.asked if c.asked is not None else c.n, "n_failed": c.failed,
                 "best": name in best[pair]}
            if bo:
                r[f"best_{bo['axis']}"] = ";".join(fmt_value(v) for v in c.chosen)
            ci = c.ci
            r.update(ci_low=None if ci is None else round(ci[0], 4), ci_high=None if ci is None else round(ci[1], 4),
                     p_vs_best=None if c.p_best is None else round(c.p_best, 4), not_worse=c.not_worse)
            if with_paper:
                band = c.paper_interval
                r.update(paper=c.paper, paper_runs=c.paper_runs,
                         delta=None if c.delta is None else round(c.delta, 4) + 0.0, paper_source=c.paper_ref,
                         verdict_low=None if band is None else round(band[0], 4),
                         verdict_high=None if band is None else round(band[1], 4),
                         verdict={REPRODUCED: "reproduced", NOT_REPRODUCED: "not reproduced",
                                  UNDECIDED: "too few seeds", None: None}[c.verdict if name != TEACHER else None])
            rows.append(r)
    return pd.DataFrame(rows)


@dataclass
class Row:
    """A printed row: a pair's cells, or under them the published numbers ("paper") and Δ ("delta").
    Each cell: (its text, the Cell, whether it is the row's best)."""
    label: str
    kind: str
    cells: list[tuple[str, "Cell | None", bool]]


def table_rows(table: pd.DataFrame, latex: bool = False) -> tuple[list[str], list[Row]]:
    """The header and rows every format prints (md, LaTeX, HTML): the cells' text with their marks."""
    best = best_columns(table)
    with_paper = bool(table.attrs.get("paper_sources"))
    has = lambda c: isinstance(c, Cell) and c.paper is not None  # noqa: E731
    rows = []
    for pair, row in table.iterrows():
        rows.append(Row(str(pair), "cells", [(_text(c, latex, name in best[pair]), c, name in best[pair])
                                             for name, c in row.items()]))
        if with_paper and any(has(c) for c in row):
            rows.append(Row(r"\quad paper" if latex else "↳ paper", "paper",
                            [(f"{c.paper:.2f}" if has(c) else "", c, False) for c in row]))
            rows.append(Row(r"\quad $\Delta$" if latex else "↳ Δ", "delta",
                            [(_delta(c, name, latex) if has(c) else "", c, False) for name, c in row.items()]))
    return ["teacher/student", *map(str, table.columns)], rows


def render(table: pd.DataFrame, fmt: str, caption: str = "") -> str:
    """md or latex: the table, then its notes (best-over rule, marks, paper source), then the caption;
    csv: the long form (`csv_frame`)."""
    if fmt == "csv":
        return csv_frame(table).to_csv(index=False)
    latex = fmt == "latex"
    bold = (lambda s: rf"\textbf{{{s}}}") if latex else (lambda s: f"**{s}**")
    with_paper = bool(table.attrs.get("paper_sources"))
    _, rows = table_rows(table, latex)
    body = [[r.label, *(bold(t) if b else t for t, _, b in r.cells)] for r in rows]
    groups = [i for i, r in enumerate(rows) if r.kind == "cells"]  # where each pair's rows start
    header = ["teacher/student", *table.columns]
    below = notes(table)
    if latex:
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{l{'c' * len(table.columns)}}}",
                 r"\toprule", " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
        for i, r in enumerate(body):
            if with_paper and i in groups[1:]:
                lines.append(r"\addlinespace")
            first = r[0] if r[0].startswith(r"\quad") else latex_escape(r[0])
            lines.append(" & ".join([first, *r[1:]]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if below:
            lines += [r"\par\smallskip", "{\\footnotesize " + " \\\\\n".join(map(latex_escape, below)) + r"\par}"]
        if caption:
            lines.append(rf"\caption{{{latex_escape(caption)}}}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"
    lines = markdown(header, body)
    if below or caption:
        lines.append("")
    lines += below + ([caption] if caption else [])
    return "\n".join(lines) + "\n"


def markdown(header: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    fmt_row = lambda r: "| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return [fmt_row(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(fmt_row, body)]
