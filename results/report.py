"""`kd-sweep report`, without MLflow: a parent run's tags and its runs frame -> the text to print
(the paper table, its notes and caption, and with `cost` the cost table)."""
from __future__ import annotations

import json

import pandas as pd

from .compare import attach_published
from .cost import cost_columns, render_cost
from .mlflow_schema import Tag
from .table import build, csv_frame, render


def seeds_asked(tags: dict) -> list | None:
    try:
        seeds = json.loads(tags.get(Tag.SEEDS) or "null")
    except json.JSONDecodeError:
        return None
    return seeds if isinstance(seeds, list) and seeds else None


def paper_scope(tags: dict) -> dict | None:
    """The sweep file's `paper:` block as the parent run recorded it (kd.paper), or None."""
    try:
        scope = json.loads(tags.get(Tag.PAPER) or "null")
    except json.JSONDecodeError:
        return None
    return scope if isinstance(scope, dict) else None


def dataset_of(tags: dict, runs: pd.DataFrame) -> str | None:
    if tags.get(Tag.DATASET):
        return tags[Tag.DATASET]
    names = runs["dataset"].dropna().unique() if "dataset" in runs else []
    return str(names[0]) if len(names) == 1 else None


def caption(tags: dict, run_id: str, runs: pd.DataFrame, col: str) -> str:
    split = "held-out validation split" if (runs.get("eval_split", pd.Series(dtype=object)) == "val").any() \
        else "test split"
    smoke = "SMOKE RUN (a pipeline check, not for a paper). " if tags.get(Tag.SMOKE) == "true" else ""
    return (f"{smoke}{tags.get(Tag.SWEEP, '')}: {col.removeprefix('eval/')} (%) on the {split}, mean ± std"
            f" (seeds) over finished runs; best student per row in bold. Run {run_id[:8]}.")


def compose(tags: dict, run_id: str, runs: pd.DataFrame, metric: str = "linear_top1", fmt: str = "md",
            best_over: str | None = None, paper: bool = False, cost: bool = False,
            published: pd.DataFrame | None = None, link=None,
            axis: str | None = None) -> tuple[str, pd.DataFrame, str]:
    """The report's text, the table of `Cell`s and the metric column. `tags`: the parent run's
    (kd.seeds: the seeds asked; kd.dataset: where published numbers are looked up; kd.sweep,
    kd.smoke: the caption). `published`: defaults to `results.published.load_published()`. For
    html, `link(run_ids)` is where a cell's runs are browsed and `axis` what the plot draws against."""
    table, col = build(runs, metric, seeds_asked(tags), best_over)
    if paper:
        if published is None:
            from .published import load_published

            published = load_published()
        attach_published(table, published, dataset_of(tags, runs), col, paper_scope(tags))
    if fmt == "csv":
        frame = csv_frame(table)
        if cost:
            frame = cost_columns(frame, table, runs)
        return frame.to_csv(index=False), table, col
    if fmt == "html":
        return html_page(tags, run_id, runs, table, col, link, axis), table, col
    text = render(table, fmt, caption(tags, run_id, runs, col))
    if cost:
        text += "\n" + render_cost(table, runs, fmt)
    return text, table, col


def html_page(tags: dict, run_id: str, runs: pd.DataFrame, table: pd.DataFrame, col: str, link,
              axis: str | None) -> str:
    """The page carries the cost whatever `--cost` says: a page is read whole, not piped on."""
    from .html import render_html
    from .plot import plot
    from .table import ReportError

    smoke = tags.get(Tag.SMOKE) == "true"
    try:
        figure = plot(table, col, axis=axis, smoke=smoke)
    except ReportError:
        figure = None  # nothing numeric swept: the table is the whole report
    metric = col.removeprefix("eval/")
    return render_html(table, f"{tags.get(Tag.SWEEP, '')}: {metric}", caption(tags, run_id, runs, col),
                       link or (lambda ids: None), figure, f"{metric} against the swept knob, per pair.",
                       render_cost(table, runs, "md"), smoke)
