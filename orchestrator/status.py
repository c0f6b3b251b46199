"""`kd-sweep status [SWEEP]`: each trial of a sweep's latest run, from MLflow (what the driver logged),
so it works from any machine that reaches the store, while the sweep runs or after its driver died.
"""
from __future__ import annotations

import json

from mlflow import MlflowClient

from results.mlflow_schema import (WALL_METRIC, NoRuns, Param, Role, State, Status, Tag, children, has_view, is_smoke,
                                   latest_parent)

from .progress import _fmt_time
from .resume import driver_alive
from .ui import browse_hint


def latest_run(client: MlflowClient, sweep: str | None):
    """The latest parent run of SWEEP, smoke or not (a smoke run logs to `<name>-smoke`)."""
    try:
        return latest_parent(client, sweep, smoke=None)
    except NoRuns:  # status says it shorter than the report: no hint to run one, no list of sweeps
        raise NoRuns(f"no kd-sweep runs{f' for sweep {sweep!r}' if sweep else ''} in {client.tracking_uri}") from None


def trial_state(client: MlflowClient, run, driver_running: bool) -> tuple[str, str]:
    """(state, detail) of one child run."""
    tags, m = run.data.tags, run.data.metrics
    epochs = int(float(run.data.params.get(Param.EPOCHS, 0) or 0))
    if run.info.status == Status.FINISHED:
        score = ", ".join(f"{k.removeprefix('eval/')} {v:.2f}" for k, v in sorted(m.items())
                          if k.startswith("eval/") and k.endswith("_top1"))
        if tags.get(Tag.STATE) == State.REUSED:
            return "reused", f"from run {tags.get(Tag.REUSED_FROM, '?')[:8]}; {score}"
        return "done", score
    if tags.get(Tag.STATE) == State.STOPPED_EARLY:
        return "early", f"stopped by the scheduler after epoch {max(m.get('epoch', 0), _last_epoch(client, run))}"
    if tags.get(Tag.STATE) == State.INTERRUPTED:
        return "lost", "its driver died mid-search; the continued search sampled other knobs instead"
    if run.info.status == Status.FAILED:
        return "failed", tags.get(Tag.ERROR, "no reason logged")
    hist = client.get_metric_history(run.info.run_id, WALL_METRIC)
    epoch = max((h.step for h in hist), default=0)
    if not driver_running:
        return "stopped", f"at epoch {epoch}/{epochs}: `kd-sweep run` with the same file resumes it"
    if epoch == 0:
        return "running", f"epoch 0/{epochs}"
    wall = max(h.value for h in hist)
    eta = wall / epoch * (epochs - epoch)
    return "running", f"epoch {epoch}/{epochs}, eta {_fmt_time(eta)}"


def _last_epoch(client: MlflowClient, run) -> int:
    return max((h.step for h in client.get_metric_history(run.info.run_id, WALL_METRIC)), default=0)


def show(tracking_uri: str, sweep: str | None, echo) -> int:
    """Prints the status; returns how many trials failed."""
    client = MlflowClient(tracking_uri)
    parent = latest_run(client, sweep)
    ptags = parent.data.tags
    exp = parent.info.experiment_id
    kids = children(client, parent)
    pid = driver_alive(ptags.get(Tag.DRIVER))
    live = parent.info.status == Status.RUNNING and (pid is not None or _elsewhere(ptags.get(Tag.DRIVER)))
    where = (f"running (driver pid {pid})" if pid else "running (driver on another machine)" if live else
             "stopped before the end: run the same file again to continue it" if parent.info.status in
             (Status.RUNNING, Status.KILLED) else parent.info.status.lower())
    smoke = " [SMOKE]" if is_smoke(parent) else ""
    echo(f"sweep {ptags.get(Tag.SWEEP, '?')}{smoke}: parent run {parent.info.run_id[:8]}, {where}")
    counts: dict[str, int] = {}
    rows = []
    for r in sorted(kids, key=lambda r: (r.data.tags.get(Tag.ROLE) != Role.TEACHER, r.info.start_time)):
        state, detail = trial_state(client, r, live)
        counts[state] = counts.get(state, 0) + 1
        rows.append((r.data.tags.get(Tag.RUN_NAME, r.info.run_id[:8]), r.data.tags.get(Tag.PAIR, ""), state,
                     detail))
    students = sum(1 for r in kids if r.data.tags.get(Tag.ROLE) in (Role.STUDENT, Role.SCRATCH))
    pending = max(0, int(ptags.get(Tag.N_TRIALS, students)) - students)
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
