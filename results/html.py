"""`kd-sweep report --format html`: one self-contained page (no file beside it, nothing fetched): the
table with its marks, the published numbers and verdicts with `--paper`, the notes, the plot as an
embedded PNG, the cost, and each cell linked to its runs in the MLflow UI."""
from __future__ import annotations

import base64
import html
import io
from typing import Callable

import pandas as pd

from .table import Cell, notes, table_rows

STYLE = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1d2330;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.45em; margin-bottom: .2em; } .sub { color: #5b6473; margin-top: 0; }
.smoke { background: #fff3cd; border: 1px solid #e0b400; padding: .6em 1em; border-radius: 6px; font-weight: 600; }
table { border-collapse: collapse; margin: 1.2em 0; font-variant-numeric: tabular-nums; }
th, td { padding: .35em .8em; text-align: right; white-space: nowrap; }
th { border-bottom: 2px solid #1d2330; font-weight: 600; } th:first-child, td:first-child { text-align: left; }
tr.pair td { border-top: 1px solid #c9ced6; } tr.sub td { color: #5b6473; font-size: .9em; }
td a { color: inherit; text-decoration: none; border-bottom: 1px dotted #8a93a3; } td a:hover { color: #0b62d6; }
td.best { font-weight: 700; } .notes { color: #3b4350; font-size: .92em; } .notes p { margin: .3em 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; } figcaption { color: #5b6473; font-size: .92em; }
pre { background: #f5f6f8; padding: 1em; border-radius: 6px; overflow-x: auto; font-size: .85em; }
"""


def _png(figure) -> str:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=150)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(table: pd.DataFrame, title: str, caption: str, link: Callable[[tuple[str, ...]], str | None],
                figure=None, plot_caption: str = "", cost: str | None = None, smoke: bool = False) -> str:
    """LINK: the MLflow UI address of a cell's runs (None: no link). FIGURE: the plot (matplotlib)."""
    esc = html.escape
    header, rows = table_rows(table)
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(title)}</title>", f"<style>{STYLE}</style></head><body>", f"<h1>{esc(title)}</h1>"]
    if smoke:
        out.append('<p class="smoke">SMOKE RUN: a pipeline check at toy size. These numbers are not results.</p>')
    out.append(f'<p class="sub">{esc(caption)}</p>')
    out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for row in rows:
        cls = "pair" if row.kind == "cells" else "sub"
        tds = [f"<td>{esc(row.label)}</td>"]
        for text, cell, best in row.cells:
            inner = esc(text)
            target = link(cell.run_ids) if row.kind == "cells" and isinstance(cell, Cell) and cell.run_ids else None
            if target:
                inner = f'<a href="{esc(target)}" title="its runs in MLflow">{inner}</a>'
            tds.append(f'<td class="best">{inner}</td>' if best else f"<td>{inner}</td>")
        out.append(f'<tr class="{cls}">' + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    below = notes(table)
    if below:
        out.append('<div class="notes">' + "".join(f"<p>{esc(n)}</p>" for n in below) + "</div>")
    if figure is not None:
        out.append(f'<figure><img alt="{esc(plot_caption)}" src="data:image/png;base64,{_png(figure)}">'
                   f"<figcaption>{esc(plot_caption)}</figcaption></figure>")
    if cost:
        out.append(f"<h2>Cost</h2><pre>{esc(cost)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
