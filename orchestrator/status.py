"""`kd-sweep status [SWEEP]`: each trial of a sweep's latest run, from MLflow (what the driver logged),
so it works from any machine that reaches the store, while the sweep runs or after its driver died.
"""
from __future__ import annotations

import json

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from results.collect import NoRuns, _parents, search_all

from .progress import _fmt_time
from .resume import DRIVER_TAG, driver_alive
from .ui import browse_hint, has_view


def latest_run(client: MlflowClient, sweep: str | None):
    """The latest parent run of SWEEP, smoke or not (a smoke run logs to `<name>-smoke`)."""
    if sweep is None:
        runs = _parents(client, None)
    else:
        exps = [e.experiment_id for n in (sweep, f"{sweep}-smoke") if (e := client.get_experiment_by_name(n))]
        runs = _parents(client, exps) if exps else []
    if not runs:
        raise NoRuns(f"no kd-sweep runs{f' for sweep {sweep!r}' if sweep else ''} in {client.tracking_uri}")
    return max(runs, key=lambda r: r.info.start_time)


def trial_state(client: MlflowClient, run, driver_running: bool) -> tuple[str, str]:
    """(state, detail) of one child run."""
    tags, m = run.data.tags, run.data.metrics
    epochs = int(float(run.data.params.get("train.epochs", 0) or 0))
    if run.info.status == "FINISHED":
        score = ", ".join(f"{k.removeprefix('eval/')} {v:.2f}" for k, v in sorted(m.items())
                          if k.startswith("eval/") and k.endswith("_top1"))
        if tags.get("kd.state") == "reused":
            return "reused", f"from run {tags.get('kd.reused_from', '?')[:8]}; {score}"
        return "done", score
    if tags.get("kd.state") == "stopped_early":
        return "early", f"stopped by the scheduler after epoch {max(m.get('epoch', 0), _last_epoch(client, run))}"
    if tags.get("kd.state") == "interrupted":
        return "lost", "its driver died mid-search; the continued search sampled other knobs instead"
    if run.info.status == "FAILED":
        return "failed", tags.get("kd.error", "no reason logged")
    hist = client.get_metric_history(run.info.run_id, "cost/wall_s")
    epoch = max((h.step for h in hist), default=0)
    if not driver_running:
        return "stopped", f"at epoch {epoch}/{epochs}: `kd-sweep run` with the same file resumes it"
    if epoch == 0:
        return "running", f"epoch 0/{epochs}"
    wall = max(h.value for h in hist)
    eta = wall / epoch * (epochs - epoch)
    return "running", f"epoch {epoch}/{epochs}, eta {_fmt_time(eta)}"


def _last_epoch(client: MlflowClient, run) -> int:
    return max((h.step for h in client.get_metric_history(run.info.run_id, "cost/wall_s")), default=0)


def show(tracking_uri: str, sweep: str | None, echo) -> int:
    """Prints the status; returns how many trials failed."""
    client = MlflowClient(tracking_uri)
    parent = latest_run(client, sweep)
    ptags = parent.data.tags
    exp = parent.info.experiment_id
    kids = search_all(client, [exp], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'")
    pid = driver_alive(ptags.get(DRIVER_TAG))
    live = parent.info.status == "RUNNING" and (pid is not None or _elsewhere(ptags.get(DRIVER_TAG)))
    where = (f"running (driver pid {pid})" if pid else "running (driver on another machine)" if live else
             "stopped before the end: run the same file again to continue it" if parent.info.status in
             ("RUNNING", "KILLED") else parent.info.status.lower())
    smoke = " [SMOKE]" if ptags.get("kd.smoke") == "true" else ""
    echo(f"sweep {ptags.get('kd.sweep', '?')}{smoke}: parent run {parent.info.run_id[:8]}, {where}")
    counts: dict[str, int] = {}
    rows = []
    for r in sorted(kids, key=lambda r: (r.data.tags.get("kd.role") != "teacher", r.info.start_time)):
        state, detail = trial_state(client, r, live)
        counts[state] = counts.get(state, 0) + 1
        rows.append((r.data.tags.get(MLFLOW_RUN_NAME, r.info.run_id[:8]), r.data.tags.get("kd.pair", ""), state,
                     detail))
    students = sum(1 for r in kids if r.data.tags.get("kd.role") in ("student", "scratch"))
    pending = max(0, int(ptags.get("kd.n_trials", students)) - students)
    width = max((len(n) for n, *_ in rows), default=10)
    for name, pair, state, detail in rows:
        echo(f"  {name:<{width}}  {pair:<24} {state:<8} {detail}")
    if pending:
        echo(f"  ... {pending} trial(s) not started yet")
    counts["pending"] = pending
    echo("  " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    echo(browse_hint(tracking_uri, exp, has_view(client, exp)))
    return counts.get("failed", 0)


def _elsewhere(tag: str | None) -> bool:
    """The driver logged from another machine: its liveness cannot be checked from here."""
    import socket

    try:
        return json.loads(tag or "{}").get("host") not in (None, socket.gethostname())
    except ValueError:
        return False
