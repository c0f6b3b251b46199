"""Runs of a sweep, from MLflow into one tidy pandas frame (a row per trial)."""
from __future__ import annotations

import json

import pandas as pd
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID


class NoRuns(Exception):
    pass


TAGS = {"role": "kd.role", "pair": "kd.pair", "teacher": "kd.teacher", "student": "kd.student",
        "method": "kd.method", "cell": "kd.cell", "seed": "kd.seed", "config_hash": "kd.config_hash",
        "teacher_hash": "kd.teacher_hash", "weights_hash": "kd.weights_hash", "error": "kd.error",
        "eval_split": "kd.eval_split", "dataset": "kd.dataset", "device": "kd.device",
        "reused_from": "kd.reused_from", "state": "kd.state", "pair_index": "kd.pair_index"}
# What a trial reserved (the cost of a cell): tags since the params hold only what decides a result;
# runs logged before that have them as params.
RESOURCES = {"gpu": ("kd.gpu", "resources.gpu"), "cpu": ("kd.cpu", "resources.cpu")}


def latest_parent(client: MlflowClient, sweep: str | None, smoke: bool = False):
    """The latest parent run of SWEEP (or of any sweep). Smoke runs (parent tag kd.smoke = "true")
    and real ones are never mixed: the latest real one by default, the latest smoke one with `smoke`."""
    if sweep is None:
        exps = [e.experiment_id for e in client.search_experiments()]
    else:
        # `kd-sweep run FILE --smoke` logs to the experiment `<name>-smoke`.
        names = [sweep, f"{sweep}-smoke"] if smoke and not sweep.endswith("-smoke") else [sweep]
        exps = [e.experiment_id for e in map(client.get_experiment_by_name, names) if e is not None]
        if not exps:
            known = sorted({r.data.tags.get("kd.sweep") for r in _parents(client, None)} - {None})
            raise NoRuns(f"no sweep named {sweep!r} in {client.tracking_uri}"
                         f" (sweeps there: {', '.join(known) or 'none'})")
    runs = _parents(client, exps)
    where = f" for sweep {sweep!r}" if sweep else ""
    if not runs:
        raise NoRuns(f"no kd-sweep runs in {client.tracking_uri}{where}; run `kd-sweep run SWEEP.yaml` first")
    kind = [r for r in runs if is_smoke(r) == smoke]
    if not kind:
        if smoke:
            raise NoRuns(f"no smoke run{where} in {client.tracking_uri} (only real runs: drop --smoke)")
        raise NoRuns(f"only smoke runs{where} in {client.tracking_uri}: `--smoke` reports the latest of them")
    return kind[0]


def is_smoke(parent) -> bool:
    return parent.data.tags.get("kd.smoke", "false").lower() == "true"


def _parents(client: MlflowClient, exps: list[str] | None) -> list:
    """Every parent run (one per `kd-sweep run`), the latest first."""
    exps = exps or [e.experiment_id for e in client.search_experiments()]
    runs, token = [], None
    while True:
        page = client.search_runs(exps, filter_string="tags.`kd.role` = 'sweep'",
                                  order_by=["attributes.start_time DESC"], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _frame(runs: pd.DataFrame) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "status", *TAGS, *RESOURCES])
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
    for c in runs.columns:
        if c.startswith("metrics."):
            out[c.removeprefix("metrics.")] = runs[c]
    return out.reset_index(drop=True)


def search_all(client: MlflowClient, exps: list[str], filt: str) -> list:
    """Every run matching FILT, page after page, the earliest first."""
    runs, token = [], None
    while True:
        page = client.search_runs(exps, filter_string=filt, order_by=["attributes.start_time ASC"],
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


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
    exp = parent.info.experiment_id
    children = search_all(client, [exp], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'")
    df = _frame(_runs_frame(children))
    # A trial finished by an earlier sweep is linked in (kd.reused_from): it counts in the table, and
    # its cost is that sweep's.
    df["in_sweep"] = df["reused_from"].isna()
    # Teachers this sweep used, wherever they were trained (the parent records their runs).
    used = json.loads(parent.data.tags.get("kd.teacher_runs", "{}"))
    here = set(df.loc[df["role"] == "teacher", "run_id"])
    extra = [client.get_run(r) for r in used.values() if r not in here]
    if extra:
        earlier = _frame(_runs_frame(extra))
        earlier["in_sweep"] = False
        df = pd.concat([df, earlier], ignore_index=True)
    return parent, df

