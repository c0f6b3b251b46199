"""Which versions made a table's numbers: a note under the table when its runs disagree.

A table mixes runs from several `kd-sweep run`s (linked trials, teachers of earlier sweeps, a sweep
continued after an upgrade); a torch, CUDA or kd-sweep change between them can move a number by more
than the seeds' spread, so the reader is told."""
from __future__ import annotations

from collections import Counter

import pandas as pd

from .mlflow_schema import Status

# Read in this order; `commit` only between runs of one kd-sweep version would still be news, so it is kept.
ORDER = ("kd-sweep", "commit", "python", "torch", "torchvision", "ray", "mlflow", "cuda", "cudnn", "gpu")


def cell_run_ids(table: pd.DataFrame) -> set[str]:
    return {rid for _, row in table.iterrows() for c in row if hasattr(c, "run_ids") for rid in c.run_ids}


def versions_note(runs: pd.DataFrame, run_ids: set[str]) -> str | None:
    """One line naming each version that differs between the finished runs among RUN_IDS (those whose
    numbers the table shows), with how many runs had each value; None when they agree."""
    if "versions" not in runs or not run_ids:
        return None
    done = runs[runs["run_id"].isin(run_ids) & (runs["status"] == Status.FINISHED)]
    mine = [v for v in done["versions"] if v]
    names = sorted({k for v in mine for k in v}, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
    parts = []
    for name in names:
        seen = Counter(v.get(name, "unrecorded") for v in mine)
        if len(seen) > 1:
            parts.append(f"{name} " + ", ".join(f"{value} ({n} run{'s' * (n != 1)})" for value, n in seen.most_common()))
    if not parts:
        return None
    return ("Versions differ between this table's runs: " + "; ".join(parts)
            + ". Numbers made with different versions may not be comparable (each run's kd.versions.* tags).")
