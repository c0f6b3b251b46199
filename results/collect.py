"""Runs of a sweep, from MLflow into one tidy pandas frame (a row per trial)."""
from __future__ import annotations

import json

import pandas as pd
from mlflow import MlflowClient

from .mlflow_schema import NoRuns  # noqa: F401 - the error its readers raise, as `collect.NoRuns`
from .mlflow_schema import Param, Role, Tag, children, latest_parent, run_versions, teacher_runs

# The frame's columns, from the trials' tags.
TAGS = {"role": Tag.ROLE, "pair": Tag.PAIR, "teacher": Tag.TEACHER, "student": Tag.STUDENT,
        "method": Tag.METHOD, "cell": Tag.CELL, "seed": Tag.SEED, "config_hash": Tag.CONFIG_HASH,
        "teacher_hash": Tag.TEACHER_HASH, "weights_hash": Tag.WEIGHTS_HASH, "error": Tag.ERROR,
        "eval_split": Tag.EVAL_SPLIT, "dataset": Tag.DATASET, "device": Tag.DEVICE,
        "reused_from": Tag.REUSED_FROM, "state": Tag.STATE, "pair_index": Tag.PAIR_INDEX}
# What a trial reserved (the cost of a cell): tags since the params hold only what decides a result;
# runs logged before that have them as params.
RESOURCES = {"gpu": (Tag.GPU, Param.GPU), "cpu": (Tag.CPU, Param.CPU)}


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "status", *TAGS, *RESOURCES, "versions"])
    out = pd.DataFrame({"run_id": runs["run_id"], "status": runs["status"]})
    for col, tag in TAGS.items():
        out[col] = runs.get(f"tags.{tag}", pd.Series([None] * len(runs), index=runs.index))
    out["cell"] = out["cell"].map(lambda s: json.loads(s) if isinstance(s, str) and s else {})
    out["seed"] = pd.to_numeric(out["seed"], errors="coerce")
    out["pair_index"] = pd.to_numeric(out["pair_index"], errors="coerce")
    none = pd.Series([None] * len(runs), index=runs.index)
    for col, (tag, param) in RESOURCES.items():
        out[col] = pd.to_numeric(runs.get(f"tags.{tag}", none).fillna(runs.get(f"params.{param}", none)),
                                 errors="coerce")
    tag_columns = [c for c in runs.columns if c.startswith("tags.")]
    out["versions"] = [run_versions({c.removeprefix("tags."): v for c, v in zip(tag_columns, row) if isinstance(v, str)})
                       for row in runs[tag_columns].itertuples(index=False)]
    for c in runs.columns:
        if c.startswith("metrics."):
            out[c.removeprefix("metrics.")] = runs[c]
    return out.reset_index(drop=True)


def _runs_frame(runs) -> pd.DataFrame:
    """Run objects in the shape `mlflow.search_runs` gives as pandas."""
    rows = []
    for r in runs:
        row = {"run_id": r.info.run_id, "status": r.info.status}
        row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
        row.update({f"params.{k}": v for k, v in r.data.params.items() if k in {p for _, p in RESOURCES.values()}})
        row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_runs(tracking_uri: str, sweep: str | None = None, smoke: bool = False) -> tuple[object, pd.DataFrame]:
    """The latest `kd-sweep run` of SWEEP (or of any sweep; the latest smoke run with `smoke`): its
    parent run and its trials, plus the runs of the teachers its students used (which may live in an
    earlier sweep: `in_sweep` is False for those, so the cost of this sweep leaves them out)."""
    client = MlflowClient(tracking_uri)
    parent = latest_parent(client, sweep, smoke)
    df = _frame(_runs_frame(children(client, parent)))
    # A trial finished by an earlier sweep is linked in (kd.reused_from): it counts in the table, and
    # its cost is that sweep's.
    df["in_sweep"] = df["reused_from"].isna()
    # Teachers this sweep used, wherever they were trained (the parent records their runs).
    used = teacher_runs(parent)
    here = set(df.loc[df["role"] == Role.TEACHER, "run_id"])
    extra = [client.get_run(r) for r in used.values() if r not in here]
    if extra:
        earlier = _frame(_runs_frame(extra))
        earlier["in_sweep"] = False
        df = pd.concat([df, earlier], ignore_index=True)
    return parent, df

