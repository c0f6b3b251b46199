"""What the parent run of a finished sweep holds for a person browsing MLflow: the table `kd-sweep
report` prints (`table.md`), its plot (`plot.png`, when a numeric knob was swept) and each cell's mean,
std and seed count as metrics (`table/<pair>/<column>/mean`), all from the same code as the report.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import time

from mlflow.entities import Metric


def _key(text: str) -> str:
    """MLflow metric names take letters, digits and `_-. /:` only."""
    return re.sub(r"[^A-Za-z0-9_.\- :]", "_", text.replace("/", "_"))


def log_sweep_summary(store, parent_id: str, sweep_name: str, smoke: bool, metric: str) -> str | None:
    """Log the table to the parent run and return it as `kd-sweep report --table` prints it (None when
    another driver's run of the sweep is newer)."""
    from results.collect import sweep_runs
    from results.plot import plot
    from results.report import compose
    from results.table import Cell, ReportError

    parent, runs = sweep_runs(store.uri, sweep_name, smoke)
    if parent.info.run_id != parent_id:  # another driver's run is newer: leave both as they are
        return None
    text, table, col = compose(parent.data.tags, parent_id, runs, metric.removeprefix("eval/"), "md")
    points, ts = [], int(time.time() * 1000)
    for pair, row in table.iterrows():
        for column, cell in row.items():
            if not isinstance(cell, Cell) or math.isnan(cell.mean):
                continue
            name = f"table/{_key(str(pair))}/{_key(str(column))}"
            points += [Metric(f"{name}/mean", cell.mean, ts, 0), Metric(f"{name}/n", float(cell.n), ts, 0)]
            if not math.isnan(cell.std):
                points.append(Metric(f"{name}/std", cell.std, ts, 0))
    store.log_metrics(parent_id, points)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "table.md"), "w") as f:
            f.write(text)
        store.log_file(parent_id, os.path.join(d, "table.md"))
        try:
            plot(table, col, os.path.join(d, "plot.png"))
        except ReportError:
            return text  # nothing numeric swept (a method axis): the table is the summary
        store.log_file(parent_id, os.path.join(d, "plot.png"))
    return text
