"""The metric against a swept numeric knob (λ, k, α, scale): one line per pair (per pair and other
knob values when the grid has more), error bars = sample std over seeds, from the same cells as the
table (so `--best-over` applies to it too). matplotlib without pyplot: no display, no global state."""
from __future__ import annotations

import math
import os

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from .table import SCRATCH, TEACHER, Cell, ReportError, column_label, fmt_value

SYMBOL = {"lambda": "λ", "alpha": "α", "beta": "β", "gamma": "γ", "tau": "τ", "temperature": "τ"}
METRIC = {"linear_top1": "Linear-probe top-1 (%)", "knn_top1": "k-NN top-1 (%)",
          "classifier_top1": "Classifier top-1 (%)", "linear_top5": "Linear-probe top-5 (%)"}
# Okabe-Ito: tells lines apart in colour-blind vision and in greyscale print (with the markers).
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
STYLE = {"font.size": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7,
         "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6, "savefig.dpi": 300}


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cells(table: pd.DataFrame) -> dict[str, dict]:
    cols = table.attrs.get("columns", {})
    return {name: cols[name]["cell"] for name in table.columns if name not in (TEACHER, SCRATCH) and name in cols}


def plot_axis(table: pd.DataFrame, axis: str | None = None) -> str:
    """The knob to draw against: `axis`, or the one numeric knob the grid sweeps."""
    cells = _cells(table)
    values: dict[str, set] = {}
    for cell in cells.values():
        for k, v in cell.items():
            values.setdefault(k, set()).add(v)
    numeric = [k for k, vs in values.items() if all(_numeric(v) for v in vs) and len(vs) > 1]
    bo = table.attrs.get("best_over")
    if axis is None:
        if len(numeric) == 1:
            return numeric[0]
        if not numeric:
            raise ReportError(f"no numeric axis swept to plot against (axes: {', '.join(values) or 'none'})")
        raise ReportError(f"several numeric axes ({', '.join(numeric)}): name one with --axis")
    if bo and axis == bo["axis"]:
        raise ReportError(f"--plot cannot draw against {axis!r}: --best-over {axis} takes the best over it")
    if axis not in values:
        raise ReportError(f"no axis {axis!r} in this sweep (axes: {', '.join(values) or 'none'})")
    if axis not in numeric:
        shown = ", ".join(sorted(map(str, values[axis])))
        raise ReportError(f"axis {axis!r} is not numeric (values: {shown}); --plot draws a numeric axis"
                          f" ({', '.join(numeric) or 'none in this sweep'})")
    return axis


def _points(table: pd.DataFrame, axis: str):
    """(line label, x, Cell) for every cell along AXIS with a finished seed: a line per pair (per pair
    and the other knobs' values when the grid has more)."""
    cols = table.attrs.get("columns", {})
    cells = _cells(table)
    methods_vary = len({cols[c]["method"] for c in cells}) > 1
    rests = {name: {k: v for k, v in cell.items() if k != axis} for name, cell in cells.items() if axis in cell}
    several = len({tuple(r.items()) for r in rests.values()}) > 1 or methods_vary
    for pair, row in table.iterrows():
        for name, rest in rests.items():
            c = row[name]
            if not isinstance(c, Cell) or math.isnan(c.mean):
                continue
            label = f"{pair}, {column_label(rest, cols[name]['method'], methods_vary)}" if several else str(pair)
            yield label, float(cells[name][axis]), c


def series(table: pd.DataFrame, axis: str) -> dict[str, tuple[list, list, list]]:
    """Line label -> (x sorted, means, stds; std 0 for one seed); points with no finished seed left out."""
    out: dict[str, dict] = {}
    for label, x, c in _points(table, axis):
        out.setdefault(label, {})[x] = (c.mean, 0.0 if math.isnan(c.std) else c.std)
    return {label: (sorted(pts), [pts[x][0] for x in sorted(pts)], [pts[x][1] for x in sorted(pts)])
            for label, pts in out.items()}


def _reference(table: pd.DataFrame, column: str) -> dict[str, float]:
    """Pair -> the mean of its Teacher or Scratch cell, where one finished."""
    if column not in table.columns:
        return {}
    return {str(pair): c.mean for pair, c in table[column].items() if isinstance(c, Cell) and not math.isnan(c.mean)}


def plot(table: pd.DataFrame, metric: str, path: str | None = None, axis: str | None = None,
         smoke: bool = False) -> Figure:
    """Draw (and save to `path`, PNG at 300 dpi) the metric against `axis`; returns the figure. Each
    pair's Teacher (dashed) and Scratch (dotted) are horizontal lines in its colour, the published
    numbers (after `attach_published`, i.e. `--paper`) are crosses, and the caption under the axes says
    what the bars are. A smoke run's plot says so across it."""
    axis = plot_axis(table, axis)
    lines = series(table, axis)
    if not lines:
        raise ReportError(f"nothing to plot: no cell along {axis!r} has a finished seed")
    metric = metric.removeprefix("eval/")
    xs = sorted({v for x, _, _ in lines.values() for v in x})
    colour = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(lines)}
    published: dict[str, list[tuple[float, float]]] = {}
    for label, x, c in _points(table, axis):
        if c.paper is not None:
            published.setdefault(label, []).append((x, c.paper))
    teacher, scratch = _reference(table, TEACHER), _reference(table, SCRATCH)
    with rc_context(STYLE):
        fig = Figure(figsize=(3.4, 2.7), layout="constrained")
        ax = fig.add_subplot()
        for i, (label, (x, y, e)) in enumerate(lines.items()):
            ax.errorbar(x, y, yerr=e, label=label, color=colour[label], marker=MARKERS[i % len(MARKERS)],
                        markersize=3.5, linewidth=1.1, elinewidth=0.8, capsize=2.5, capthick=0.8)
        # A reference line in a pair's colour when the lines are the pairs, grey otherwise.
        for refs, style in ((teacher, "--"), (scratch, ":")):
            for pair, mean in refs.items():
                ax.axhline(mean, linestyle=style, linewidth=0.8, color=colour.get(pair, "#555555"), alpha=0.8)
        for label, pts in published.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="none", marker="x", markersize=4.5,
                    markeredgewidth=1.0, color=colour[label])
        if xs[0] > 0 and xs[-1] / xs[0] >= 8:  # scale {0.5 … 32}: evenly spaced on a log axis
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [fmt_value(x) for x in xs])
        ax.minorticks_off()
        sym = SYMBOL.get(axis)
        ax.set_xlabel(f"{sym} ({axis})" if sym else axis)
        ax.set_ylabel(METRIC.get(metric, f"{metric} (%)"))
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", linewidth=0.4, alpha=0.4)
        # Above the axes, never over the data.
        fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=min(len(lines), 2),
                   frameon=False, handlelength=1.8, columnspacing=1.2)
        what = ["mean ± sample std over seeds"]
        what += ["dashed: teacher"] if teacher else []
        what += ["dotted: scratch"] if scratch else []
        what += ["×: published"] if published else []
        fig.supxlabel("; ".join(what), fontsize=6, color="#444444")
        if smoke:
            fig.text(0.5, 0.5, "SMOKE RUN: not results", ha="center", va="center", rotation=20, fontsize=16,
                     color="#D55E00", alpha=0.25, transform=fig.transFigure)
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # `--plot figs/x.png` in a new clone
            fig.savefig(path)
    return fig
