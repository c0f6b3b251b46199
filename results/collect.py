"""Runs of a sweep, from MLflow into one tidy pandas frame (a row per trial)."""
from __future__ import annotations

import json

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID


class NoRuns(Exception):
    pass


TAGS = {"role": "kd.role", "pair": "kd.pair", "teacher": "kd.teacher", "student": "kd.student",
        "method": "kd.method", "cell": "kd.cell", "seed": "kd.seed", "config_hash": "kd.config_hash",
        "teacher_hash": "kd.teacher_hash", "error": "kd.error"}


def latest_parent(client: MlflowClient, sweep: str | None):
    if sweep is None:
        exps = [e.experiment_id for e in client.search_experiments()]
    else:
        exp = client.get_experiment_by_name(sweep)
        if exp is None:
            known = sorted({r.data.tags.get("kd.sweep") for r in _parents(client, None)} - {None})
            raise NoRuns(f"no sweep named {sweep!r} in {client.tracking_uri}"
                         f" (sweeps there: {', '.join(known) or 'none'})")
        exps = [exp.experiment_id]
    runs = _parents(client, exps)
    if not runs:
        raise NoRuns(f"no kd-sweep runs in {client.tracking_uri}"
                     + (f" for sweep {sweep!r}" if sweep else "") + "; run `kd-sweep run SWEEP.yaml` first")
    return runs[0]


def _parents(client: MlflowClient, exps: list[str] | None):
    exps = exps or [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, filter_string="tags.`kd.role` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "status", *TAGS])
    out = pd.DataFrame({"run_id": runs["run_id"], "status": runs["status"]})
    for col, tag in TAGS.items():
        out[col] = runs.get(f"tags.{tag}", pd.Series([None] * len(runs), index=runs.index))
    out["cell"] = out["cell"].map(lambda s: json.loads(s) if isinstance(s, str) and s else {})
    out["seed"] = pd.to_numeric(out["seed"], errors="coerce")
    for c in runs.columns:
        if c.startswith("metrics."):
            out[c.removeprefix("metrics.")] = runs[c]
    return out.reset_index(drop=True)


def sweep_runs(tracking_uri: str, sweep: str | None = None) -> tuple[object, pd.DataFrame]:
    """The latest `kd-sweep run` of SWEEP (or of any sweep): its parent run and its trials, plus the
    runs of the teachers its students used (which may live in an earlier sweep)."""
    client = MlflowClient(tracking_uri)
    parent = latest_parent(client, sweep)
    exp = parent.info.experiment_id
    mlflow.set_tracking_uri(tracking_uri)  # search_runs reads the global URI
    children = mlflow.search_runs([exp], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], output_format="pandas")
    df = _frame(children)
    have = set(df.loc[df["role"] == "teacher", "config_hash"])
    wanted = sorted(set(df["teacher_hash"].dropna()) - have)
    if wanted:
        all_exps = [e.experiment_id for e in client.search_experiments()]
        # Tag filters take no IN: one query per teacher (a sweep has a handful).
        teachers = pd.concat([mlflow.search_runs(all_exps, filter_string=f"tags.`kd.role` = 'teacher' and "
                                                                        f"tags.`kd.config_hash` = '{h}'",
                                                 output_format="pandas", order_by=["attributes.start_time DESC"])
                              for h in wanted], ignore_index=True)
        teachers = _frame(teachers).drop_duplicates("config_hash")
        df = pd.concat([df, teachers], ignore_index=True)
    return parent, df

