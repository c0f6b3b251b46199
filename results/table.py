"""The paper table: rows are teacher/student pairs, columns the swept values (or methods), cells
mean ± std (n) over seeds, the best student cell of each row in bold; Teacher and Scratch columns
when those runs exist."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

TEACHER, SCRATCH = "Teacher", "Scratch"


@dataclass
class Cell:
    mean: float
    std: float  # sample std over seeds; nan for one seed
    n: int


def column_label(cell: dict, method: str, methods_vary: bool) -> str:
    parts = [f"{k}={v}" for k, v in cell.items() if k != "method"]
    if methods_vary or not parts:
        parts.insert(0, cell.get("method", method))
    return " ".join(parts)


def _order_key(cell: dict) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in cell.values())


def build(runs: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """A frame of `Cell`s (index: pair, columns: labels) and the metric column used."""
    col = metric if metric.startswith("eval/") else f"eval/{metric}"
    if col not in runs.columns:
        have = sorted(c.removeprefix("eval/") for c in runs.columns if c.startswith("eval/"))
        raise KeyError(f"no metric {metric!r} in these runs (metrics: {', '.join(have) or 'none'})")
    done = runs[runs["status"] == "FINISHED"]
    students = done[done["role"] == "student"]
    if students.empty:  # a teachers sweep: one row per teacher
        teachers = done[done["role"] == "teacher"]
        table = pd.DataFrame(index=pd.Index(list(dict.fromkeys(teachers["student"])), name="pair"),
                             columns=[TEACHER], dtype=object)
        for label, grp in teachers.groupby("student"):
            table.loc[label, TEACHER] = Cell(float(grp[col].iloc[0]), math.nan, 1)
        return table, col
    methods_vary = students["method"].nunique() > 1
    cells = {}
    for _, r in students.iterrows():
        cell = dict(r["cell"])
        cell.setdefault("method", r["method"])
        cells.setdefault(column_label(cell, r["method"], methods_vary), _order_key(r["cell"]))
    columns = sorted(cells, key=lambda c: cells[c])
    pairs = list(dict.fromkeys(students["pair"]))
    table = pd.DataFrame(index=pd.Index(pairs, name="pair"), columns=[TEACHER, SCRATCH, *columns], dtype=object)

    def agg(values: pd.Series) -> Cell | None:
        v = values.dropna().astype(float)
        if v.empty:
            return None
        return Cell(v.mean(), v.std(ddof=1) if len(v) > 1 else math.nan, len(v))

    labels = students.apply(lambda r: column_label({**r["cell"], "method": r["method"]}, r["method"],
                                                   methods_vary), axis=1)
    for (pair, label), grp in students.groupby([students["pair"], labels]):
        table.loc[pair, label] = agg(grp[col])
    teachers = done[done["role"] == "teacher"].drop_duplicates("weights_hash").set_index("weights_hash")
    scratch = done[done["role"] == "scratch"]
    for pair in pairs:
        rows = students[students["pair"] == pair]
        th = rows["teacher_hash"].dropna().unique()
        if len(th) == 1 and th[0] in teachers.index:
            table.loc[pair, TEACHER] = agg(pd.Series([teachers.loc[th[0], col]]))
        student = rows["student"].iloc[0]
        table.loc[pair, SCRATCH] = agg(scratch.loc[scratch["student"] == student, col])
    table = table.dropna(axis=1, how="all")
    return table, col


def best_columns(table: pd.DataFrame) -> dict[str, set[str]]:
    """Per row, the student columns with the highest mean as printed (ties all bold; the teacher never
    competes)."""
    out = {}
    for pair, row in table.iterrows():
        scored = {name: round(c.mean, 2) for name, c in row.items() if isinstance(c, Cell) and name != TEACHER}
        top = max(scored.values(), default=None)
        out[pair] = {name for name, m in scored.items() if m == top}
    return out


def _text(c: Cell | None, latex: bool) -> str:
    if not isinstance(c, Cell):
        return "–"
    pm = r"$\pm$" if latex else "±"
    std = "–" if math.isnan(c.std) else f"{c.std:.2f}"
    return f"{c.mean:.2f} {pm} {std} ({c.n})"


def render(table: pd.DataFrame, fmt: str, caption: str = "") -> str:
    best = best_columns(table)
    if fmt == "csv":
        rows = []
        for pair, row in table.iterrows():
            for name, c in row.items():
                if isinstance(c, Cell):
                    rows.append({"pair": pair, "column": name, "mean": round(c.mean, 4),
                                 "std": None if math.isnan(c.std) else round(c.std, 4), "n": c.n,
                                 "best": name in best[pair]})
        return pd.DataFrame(rows).to_csv(index=False)
    latex = fmt == "latex"
    bold = (lambda s: rf"\textbf{{{s}}}") if latex else (lambda s: f"**{s}**")
    body = [[str(pair)] + [bold(_text(c, latex)) if name in best[pair] else _text(c, latex)
                           for name, c in row.items()] for pair, row in table.iterrows()]
    header = ["teacher/student", *table.columns]
    if latex:
        esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
        lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{l{'c' * len(table.columns)}}}",
                 r"\toprule", " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(x) if i == 0 else x for i, x in enumerate(r)) + r" \\" for r in body]
        lines += [r"\bottomrule", r"\end{tabular}"]
        if caption:
            lines.append(rf"\caption{{{esc(caption)}}}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    fmt_row = lambda r: "| " + " | ".join(x.ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    lines = [fmt_row(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(fmt_row, body)]
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"
