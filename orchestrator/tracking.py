"""MLflow, from the driver only: one experiment per sweep, a parent run per `kd-sweep run`, a child
run per trial. Workers never talk to the store, so a cluster's nodes need no access to it.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from results.mlflow_schema import (METRIC_PREFIXES, RESULT_TAGS, VIEW_TAG, WALL_METRIC, Role, State, Status, Tag,
                                   all_runs, cell_tag, child_of, experiments, has_view, holds_result, is_result_tag,
                                   latest_run, link_name, run_name, status_is, tag_is, tag_is_not, version_tags)
from trainables.config import FAILED, MEMBERS, REUSED, VERSIONS, cell_label, checkpoint_members
from trainables.versions import versions

from .trials import describe, flat_params, trial_members, trial_name

METRIC_NOTE = ("eval/<protocol>_top1 is the last epoch (RepDistiller's convention); eval/classifier_top1_best is"
               " the best training epoch (mdistiller's) and eval/linear_top1_best the probe's best epoch;"
               " eval/classifier_top1 is also logged per epoch")

logging.getLogger("mlflow").setLevel(logging.WARNING)
# With a server store, MLflow prints two "View run/experiment" lines each time a run ends (and fetches
# the run to do so): dozens of lines on a sweep. kd-sweep names the experiment once, at the end.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def resolve_tracking_uri(uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else MLflow's own default (sqlite:///mlflow.db here)."""
    if uri:
        mlflow.set_tracking_uri(uri)
    return mlflow.get_tracking_uri()


def local_store_path(uri: str) -> str | None:
    """The file (sqlite) or folder (file store) of a store on this machine; None for a server."""
    if uri.startswith("sqlite:///"):
        return os.path.abspath(uri.removeprefix("sqlite:///"))
    if uri.startswith("file:") or "://" not in uri:
        return os.path.abspath(uri.removeprefix("file://").removeprefix("file:"))
    return None


def store_exists(uri: str) -> bool:
    """Whether a store is there to read; a server is assumed to be."""
    path = local_store_path(uri)
    return path is None or os.path.exists(path)


def unwritable_store(uri: str) -> str | None:
    """Why a local store cannot take this sweep's runs (read-only file or folder), or None. Checked before
    Ray starts: MLflow would otherwise fail deep inside with hundreds of lines of traceback."""
    path = local_store_path(uri)
    if path is None:
        return None  # a server: it answers for itself
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    folder = os.path.dirname(path)
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.access(folder or ".", os.W_OK):
        return f"{path} cannot be created: {folder} is not writable"
    return None


def store_failure(e: BaseException) -> bool:
    """Whether E comes from the store itself rather than from kd-sweep: MLflow's own errors, the
    database's, the HTTP client's, and the OS errors a full, read-only or lost disk gives."""
    import errno

    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    if isinstance(e, (MlflowException, sqlalchemy.exc.SQLAlchemyError, requests.exceptions.RequestException)):
        return True
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM,
                                                 errno.EDQUOT, errno.EIO)


def failure_reason(e: BaseException) -> str:
    """The part of a store error a person acts on, not MLflow's 400-character wrapping of it."""
    import re

    text = str(e)
    for known, said in (("Connection refused", None), ("readonly database", None), ("disk is full", None),
                        ("No space left on device", None), ("Read-only file system", None),
                        ("Name or service not known", None), ("timed out", None),
                        # a server killed mid-request: the HTTP client's several ways of saying so
                        ("Connection aborted", "connection lost"), ("RemoteDisconnected", "connection lost"),
                        ("Connection reset", "connection lost"), ("Max retries exceeded", "the server does not answer")):
        if known.lower() in text.lower():
            return said or known.lower()
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    return m.group(1).strip() if m else (text.strip().splitlines() or [type(e).__name__])[0][:160]


def unreachable_server(uri: str) -> str | None:
    """Why an MLflow server at URI does not answer, or None (a local store, or a server that answers).
    One quick request before anything else, where MLflow's client would retry for minutes."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=(5, 10))
    except requests.exceptions.RequestException as e:
        return failure_reason(e)
    return None


# The stores MLflow's tracking client takes (a database by its SQLAlchemy dialect, with or without a driver:
# postgresql+psycopg2://...).
STORE_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def damaged_sqlite(path: str) -> str | None:
    """Why the sqlite file at PATH is no MLflow store to read (damaged, cut short, another program's
    database), as "it is ...", or None. Read-only: a sweep may be writing it."""
    import sqlite3

    if os.path.getsize(path) == 0:
        return None  # an empty file: MLflow makes its tables in it
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            # quick_check reads every page: a file cut short passes the first page and fails here.
            check = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return f"it is not a readable SQLite database ({e}: damaged or cut short?)"
    if check != "ok":
        return f"it is damaged (SQLite's check: {check})"
    if tables and "experiments" not in tables:
        return "it is another program's SQLite database, not an MLflow store (no experiments table)"
    return None


def store_problem(uri: str) -> str | None:
    """Why the MLflow store at URI cannot be used, in one line, or None: a scheme MLflow does not take, a
    server that does not answer, a damaged or foreign sqlite file. Every command asks this first, in
    seconds, before it writes anything."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else "file"
    if scheme not in STORE_SCHEMES:
        return (f"the MLflow store URI {uri} has a scheme MLflow does not take ({scheme}://): give sqlite:///FILE,"
                " a folder, http(s)://SERVER, or a database (postgresql://, mysql://, mssql://)")
    if (why := unreachable_server(uri)) is not None:
        return (f"the MLflow server {uri} does not answer ({why}): start it (`mlflow server`), or give another"
                " store with --tracking-uri")
    path = local_store_path(uri)
    if uri.startswith("sqlite:") and path and os.path.isfile(path) and (why := damaged_sqlite(path)):
        return (f"the MLflow store {uri} cannot be read: {why}; give another store with --tracking-uri, or move"
                f" {path} aside and run again (a new store starts empty)")
    return None


def trial_tags(cfg: dict) -> dict[str, str]:
    lab = cfg["labels"]
    tags = {
        Tag.ROLE: cfg["role"], Tag.SWEEP: cfg["sweep"], Tag.METHOD: cfg["method"],
        Tag.PAIR: lab["pair"], Tag.TEACHER: lab["teacher"], Tag.STUDENT: lab["student"],
        Tag.SEED: str(cfg["seed"]), Tag.CELL: cell_tag(lab["cell"]),
        Tag.CONFIG_HASH: cfg["config_hash"], Tag.DATASET: cfg["dataset"]["name"],
        # Which split the eval/* numbers are on: "val" numbers are for tuning, never for the paper.
        Tag.EVAL_SPLIT: "val" if cfg["dataset"].get("val_split") else "test",
        Tag.METRICS: METRIC_NOTE,
        Tag.PAIR_INDEX: str(lab.get("pair_index", 0)),
        Tag.CELL_LABEL: cell_label(lab["cell"]) or cfg["method"], Tag.TRIAL: cfg["name"],
        Tag.GPU: str(cfg["resources"]["gpu"]), Tag.CPU: str(cfg["resources"]["cpu"]),
        Tag.DATA_FINGERPRINT: str(cfg["dataset"].get("fingerprint", "")),
        Tag.RUN_NAME: run_name(cfg),
        Tag.NOTE: f"{describe(cfg)}\n\n{METRIC_NOTE}.",
        # The driver's until the trial's first result replaces them with its worker's.
        **version_tags(versions()),
    }
    if cfg.get("teacher"):
        tags[Tag.TEACHER_HASH] = cfg["teacher"]["hash"]
    if cfg.get("weights_hash"):
        tags[Tag.WEIGHTS_HASH] = cfg["weights_hash"]
    return tags


class Store:
    def __init__(self, uri: str):
        self.uri = uri
        path = local_store_path(uri)
        self.client = MlflowClient(uri) if path is None else self._first_touch(path)

    def _first_touch(self, path: str) -> MlflowClient:
        """Open a local store now, one kd-sweep process at a time. MLflow creates (and migrates) a new
        sqlite file's tables on first use, and two processes doing so at once (a driver, and a second
        driver or a `kd-sweep ui` beside it) interleave their migrations: "table ... already exists",
        "duplicate column", a half-migrated file. An flock beside the store serialises the first touch."""
        import fcntl

        folder = os.path.join(os.path.dirname(path), ".kd-sweep-locks")
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(os.path.join(folder, "store-open.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a read-only folder: nobody can be creating a store in it
            return MlflowClient(self.uri)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            client = MlflowClient(self.uri)
            client.search_experiments(max_results=1)  # the tables exist once this returns
            return client
        finally:
            os.close(fd)  # drops the lock

    def find_experiment(self, name: str) -> str | None:
        exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id if exp else None

    def experiment(self, name: str) -> str:
        return self.find_experiment(name) or self.client.create_experiment(name)

    def has_view(self, exp_id: str) -> bool:
        return has_view(self.client, exp_id)

    def save_view(self, exp_id: str, view: dict) -> None:
        """The runs table the experiment's link opens on (ui.sweep_view)."""
        self.client.set_experiment_tag(exp_id, VIEW_TAG, json.dumps(view))

    def start_parent(self, exp_id: str, sweep_name: str, resolved_yaml: str, n_trials: int,
                     tags: dict[str, str]) -> str:
        """`tags`: what the report needs of the sweep as a whole (kd.seeds, kd.smoke...)."""
        run = self.client.create_run(exp_id, run_name=f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     tags={Tag.ROLE: Role.SWEEP.value, Tag.SWEEP: sweep_name,
                                           Tag.N_TRIALS: str(n_trials), **tags, **version_tags(versions())})
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as d:
            p = Path(d, "sweep.yaml")
            p.write_text(resolved_yaml)
            self.log_file(run_id, str(p))
        return run_id

    def start_trial(self, exp_id: str, parent_id: str, cfg: dict, tags: dict[str, str],
                    name: str | None = None) -> str:
        """A trial's child run under PARENT: its tags (TAGS over trial_tags), its params and its config."""
        run = self.client.create_run(exp_id, run_name=name, tags={Tag.PARENT: parent_id, **trial_tags(cfg), **tags})
        params = [Param(k, v[:6000]) for k, v in flat_params(cfg).items()]
        for i in range(0, len(params), 100):  # MLflow's cap on params per batch
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        self.log_config(run.info.run_id, cfg)
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        """A run its driver left unfinished goes on: RUNNING again."""
        self.client.update_run(run_id, status=Status.RUNNING.value)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def set_state(self, run_id: str, state: State, tags: dict[str, str] | None = None) -> None:
        """A trial run's `kd.state`, and the tags that go with it (kd.error...) in the same request."""
        self.set_tags(run_id, {Tag.STATE: State(state).value, **(tags or {})})

    def set_teacher_runs(self, parent_id: str, runs: dict[str, str]) -> None:
        """teacher weights hash -> run, on the parent: the report's Teacher column reads these exact runs."""
        self.client.set_tag(parent_id, Tag.TEACHER_RUNS, json.dumps(runs, sort_keys=True))

    def finish(self, run_id: str, status: Status = Status.FINISHED) -> None:
        self.client.set_terminated(run_id, Status(status).value)

    def interrupt(self, run_id: str, why: State = State.INTERRUPTED) -> None:
        """A trial stopped before its end (its driver stopped, its cluster was lost): KILLED, so no run
        stays RUNNING."""
        self.set_state(run_id, why)
        self.finish(run_id, Status.KILLED)

    def log_epoch(self, run_id: str, step: int, numbers: dict[str, float],
                  tags: dict[str, str] | None = None) -> None:
        ts = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v in numbers.items()],
                              tags=[RunTag(k, v) for k, v in (tags or {}).items()])

    def logged_epochs(self, run_id: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, WALL_METRIC)}

    def log_weights(self, run_id: str, path: str, role: str) -> None:
        """Trained weights as the run's `<role>/model.pt`, whatever the file is called here (a trial's
        checkpoint holds each student's as `model_<hash>.pt`): later sweeps and the report find them by
        that name."""
        if os.path.basename(path) == "model.pt":
            self.log_file(run_id, path, role)
            return
        with tempfile.TemporaryDirectory() as t:
            shutil.copyfile(path, os.path.join(t, "model.pt"))
            self.log_file(run_id, os.path.join(t, "model.pt"), role)

    def log_file(self, run_id: str, path: str, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, path, artifact_path=folder)

    def log_metrics(self, run_id: str, points: list[Metric]) -> None:
        """Metric points as they are (name, value, time, step)."""
        for i in range(0, len(points), 1000):  # MLflow's cap on metrics per batch
            self.client.log_batch(run_id, metrics=points[i:i + 1000])

    def children(self, exp_id: str, parent_id: str, role: Role | None = None, newest_first: bool = False) -> list:
        """The trials' runs of a parent run (of one role), the earliest first unless NEWEST_FIRST."""
        filt = child_of(parent_id) + (f" and {tag_is(Tag.ROLE, role)}" if role else "")
        return all_runs(self.client, [exp_id], filt, newest_first)

    def find_teacher(self, key: str, value: str):
        """The latest finished teacher run whose `kd.<key>` tag (config_hash, weights_hash) is `value`, from
        any sweep; or None."""
        tag = {"config_hash": Tag.CONFIG_HASH, "weights_hash": Tag.WEIGHTS_HASH}[key]
        return latest_run(self.client, experiments(self.client),
                          f"{tag_is(Tag.ROLE, Role.TEACHER)} and {tag_is(tag, value)} and {status_is(Status.FINISHED)}")

    def _latest_parent(self, exp_id: str, key: str):
        """The latest parent run of this same sweep (as its file resolves now)."""
        return latest_run(self.client, [exp_id], f"{tag_is(Tag.ROLE, Role.SWEEP)} and {tag_is(Tag.SWEEP_KEY, key)}")

    def complete_parent(self, name: str, key: str, students: set[str], teachers: set[str]):
        """The latest parent run of this same sweep when it finished every trial (FINISHED: nothing
        failed or was interrupted) and its children hold every student config now planned; or None."""
        exp_id = self.find_experiment(name)
        if exp_id is None:
            return None
        last = self._latest_parent(exp_id, key)
        if last is None or last.info.status != Status.FINISHED:
            return None
        done = {r.data.tags.get(Tag.CONFIG_HASH) for r in self.children(exp_id, last.info.run_id) if holds_result(r)}
        if not students <= done or any(self.find_teacher("config_hash", h) is None for h in teachers):
            return None
        return last

    def find_resumable(self, exp_id: str, key: str):
        """The latest parent run of this same sweep whose driver stopped before the end (killed,
        Ctrl-C: status RUNNING or KILLED); or None."""
        last = self._latest_parent(exp_id, key)
        return last if last is not None and last.info.status in (Status.RUNNING, Status.KILLED) else None

    def find_finished(self, hashes: set[str]) -> dict[str, list]:
        """config hash -> the finished trial runs of it, from any sweep, the earliest first."""
        if not hashes:
            return {}
        found: dict[str, list] = {}
        for r in all_runs(self.client, experiments(self.client),
                          f"{status_is(Status.FINISHED)} and {tag_is_not(Tag.ROLE, Role.SWEEP)}"
                          f" and {tag_is_not(Tag.ROLE, Role.TEACHER)}"):
            h = r.data.tags.get(Tag.CONFIG_HASH)
            if h in hashes and holds_result(r):
                found.setdefault(h, []).append(r)
        return found

    def ended_unfinished(self, config_hash: str, parent_id: str) -> bool:
        """Whether PARENT's run of CONFIG_HASH has ended without finishing (FAILED or KILLED), none of its
        runs of it going on or finished."""
        runs = all_runs(self.client, experiments(self.client),
                        f"{child_of(parent_id)} and {tag_is(Tag.CONFIG_HASH, config_hash)}")
        return bool(runs) and all(r.info.status in (Status.FAILED, Status.KILLED) for r in runs)

    def finished_like(self, cfg: dict) -> dict[str, tuple[str, dict[str, float]]]:
        """config hash -> (run id, final metrics) of the finished trials, in any sweep, of CFG's method,
        pair and dataset: what a search may sample again."""
        out: dict[str, tuple[str, dict[str, float]]] = {}
        for r in all_runs(self.client, experiments(self.client),
                          f"{status_is(Status.FINISHED)} and {tag_is(Tag.METHOD, cfg['method'])}"
                          f" and {tag_is(Tag.PAIR, cfg['labels']['pair'])}"
                          f" and {tag_is(Tag.DATASET, cfg['dataset']['name'])}"):
            t = r.data.tags
            if holds_result(r):
                out.setdefault(t[Tag.CONFIG_HASH], (t.get(Tag.REUSED_FROM) or r.info.run_id, dict(r.data.metrics)))
        return out

    def link(self, exp_id: str, parent_id: str, cfg: dict, source, tags: dict[str, str]) -> str:
        """A child run of PARENT standing for a trial that finished in an earlier sweep: its params, tags,
        every metric's whole history (the curves read as the original's), `kd.reused_from` naming the run
        that holds its weights, and a name that says it is a link."""
        src_id = source.data.tags.get(Tag.REUSED_FROM) or source.info.run_id
        name = link_name(cfg)
        run_id = self.start_trial(exp_id, parent_id, cfg, {
            **tags, Tag.STATE: State.REUSED.value, Tag.REUSED_FROM: src_id, Tag.RUN_NAME: name,
            **{k: v for k, v in source.data.tags.items() if is_result_tag(k)}}, name)
        self.copy_history(source.info.run_id, run_id, source.data.metrics)
        self.finish(run_id, Status.FINISHED)
        return run_id

    def copy_history(self, src_id: str, dst_id: str, names=None) -> None:
        """Every point of every metric in NAMES (default: every metric SRC has), with its step and time,
        from one run to another."""
        if names is None:
            names = self.client.get_run(src_id).data.metrics
        self.log_metrics(dst_id, [m for name in names for m in self.client.get_metric_history(src_id, name)])

    def log_config(self, run_id: str, cfg: dict) -> None:
        """The whole resolved trial config (paths, hashes and resources included) as `config.json`."""
        with tempfile.TemporaryDirectory() as d:
            p = Path(d, "config.json")
            p.write_text(json.dumps({k: v for k, v in cfg.items() if k != "resume_from"}, indent=1, default=str))
            self.log_file(run_id, str(p))

    def download(self, run_id: str, artifact: str) -> str:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                   tracking_uri=self.uri)


def _numbers(result: dict) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def result_tags(result: dict) -> dict[str, str]:
    """The tags a trial's result sets on its run: where it ran and with which versions."""
    tags = {tag: str(result[k]) for k, tag in RESULT_TAGS.items() if k in result}
    return {**tags, **version_tags(result.get(VERSIONS) or {})}


def member_result(result: dict, cfg: dict) -> dict | None:
    """CFG's part of a Tune result: a lone student's is the result itself, a pack's has its entry."""
    if MEMBERS not in result:
        return result
    r = result[MEMBERS].get(cfg["config_hash"])
    return None if r is None else {**r, **{k: result[k] for k in (*RESULT_TAGS, VERSIONS) if k in result}}


def _unless_store_failed(handler):
    """A store that fails mid-sweep (full disk, read-only, server gone) is noted, not raised: Tune would
    wrap it in a traceback of hundreds of lines. The callback's stopper then stops every trial (they keep
    their epoch checkpoints) and the driver reports it in one line; nothing more is written."""
    @functools.wraps(handler)
    def call(self, *args, **kwargs):
        if self.store_error is not None:
            return None
        try:
            return handler(self, *args, **kwargs)
        except Exception as e:
            if not store_failure(e):
                raise
            self.store_error = e
            return None
    return call


def make_callback(store: Store, exp_id: str, parent_id: str, progress=None, tags: dict[str, str] | None = None):
    from ray import tune
    from ray.tune.stopper import Stopper

    class MLflowTrials(tune.Callback):
        """Tune trial events -> MLflow child runs, one per student: a pack's students each get theirs.
        Runs are keyed by config hash under this parent, so a restarted trial continues its run instead
        of opening a second one. A student is closed once (done, failed, stopped early) and then left alone."""

        def __init__(self):
            self.runs: dict[str, str] = {}
            self.logged: dict[str, set[int]] = {}
            self.last: dict[str, dict] = {}
            self.closed: set[str] = set()
            self.store_error: Exception | None = None
            self.completed_trials: set[str] = set()  # Tune trial names: their older checkpoints can go

        def stopper(self) -> Stopper:
            """For RunConfig(stop=...): every trial stops once the store has failed."""
            callback = self

            class StoreFailedStop(Stopper):
                def __call__(self, trial_id, result):
                    return False

                def stop_all(self):
                    return callback.store_error is not None

            return StoreFailedStop()

        def _run_for(self, cfg: dict) -> str:
            key = cfg["config_hash"]
            if key in self.runs:
                return self.runs[key]
            found = latest_run(store.client, [exp_id], f"{child_of(parent_id)} and {tag_is(Tag.CONFIG_HASH, key)}")
            if found:
                run_id = found.info.run_id
                store.reopen(run_id)
            else:
                run_id = store.start_trial(exp_id, parent_id, cfg, tags or {})
            self.runs[key] = run_id
            return run_id

        def _open(self, trial) -> list[dict]:
            return [c for c in trial_members(trial.config) if c["config_hash"] not in self.closed]

        @_unless_store_failed
        def on_trial_start(self, iteration, trials, trial, **info):
            members = trial_members(trial.config)
            for cfg in self._open(trial):
                run_id = self._run_for(cfg)
                if cfg.get("resume_from"):
                    self._log_checkpoint_epoch(cfg, run_id)
                if len(members) > 1:  # which trial trained it, and beside how many others
                    store.set_tags(run_id, {Tag.PACK: trial_name(trial.config), Tag.PACK_SIZE: str(len(members))})
                if progress:
                    progress.started(cfg)

        def _logged_before(self, cfg: dict, run_id: str) -> set[int]:
            """Epochs a killed driver logged for a trial this driver resumes: never logged twice."""
            key = cfg["config_hash"]
            if key not in self.logged:
                self.logged[key] = store.logged_epochs(run_id) if cfg.get("resume_from") else set()
            return self.logged[key]

        def _log_checkpoint_epoch(self, cfg: dict, run_id: str) -> None:
            """The epoch a resumed trial starts after: its numbers are in the checkpoint, and the killed
            driver may have died before logging them (the trial never reports that epoch again)."""
            info = read_epoch_json(cfg["resume_from"])
            if not info:
                return
            metrics = checkpoint_members(info).get(cfg["config_hash"], {})
            step = int(info.get("epoch", 0))
            metrics = _numbers(metrics)  # as on_trial_result logs them: the per-epoch names only
            logged = self._logged_before(cfg, run_id)
            if metrics and step not in logged:
                store.log_epoch(run_id, step, metrics)
                logged.add(step)

        @_unless_store_failed
        def on_trial_result(self, iteration, trials, trial, result, **info):
            for cfg in self._open(trial):
                r = member_result(result, cfg)
                if r is None:
                    continue
                run_id = self._run_for(cfg)
                step = int(r.get("epoch", 0))
                numbers = {} if step in self._logged_before(cfg, run_id) or REUSED in r else _numbers(r)
                tags = result_tags(r)
                if FAILED in r:
                    tags[Tag.FAILED_EPOCH] = str(step)
                store.log_epoch(run_id, step, numbers, tags)
                self.last[cfg["config_hash"]] = r
                if FAILED in r:  # failed for good inside the trainable (a non-finite loss): not retried
                    self._failed(cfg, r[FAILED])
                elif progress:
                    progress.result(cfg, r)

        @_unless_store_failed
        def on_trial_complete(self, iteration, trials, trial, **info):
            self.completed_trials.add(trial_name(trial.config))
            for cfg in self._open(trial):
                self._complete(trial, cfg)

        def _complete(self, trial, cfg: dict) -> None:
            run_id = self._run_for(cfg)
            last = self.last.get(cfg["config_hash"]) or member_result(trial.last_result or {}, cfg) or {}
            if (source := last.get(REUSED)):  # a searched config run before: linked
                if source == run_id:
                    store.set_state(run_id, State.DONE)
                else:  # as Store.link: the original's curves, and a name that says it is a link
                    store.copy_history(source, run_id)
                    store.set_state(run_id, State.REUSED, {Tag.REUSED_FROM: source, Tag.RUN_NAME: link_name(cfg)})
                self._close(cfg, run_id, Status.FINISHED)
                if progress:
                    progress.completed(cfg)
                return
            epoch = int(last.get("epoch", 0))
            if epoch < cfg["train"]["epochs"]:  # the scheduler (ASHA) stopped it: not a finished trial
                store.set_state(run_id, State.STOPPED_EARLY)
                self._close(cfg, run_id, Status.KILLED)
                if progress:
                    progress.stopped_early(cfg, epoch)
                return
            ckpt = trial.checkpoint
            if ckpt is not None:
                with ckpt.as_directory() as d:
                    if (model := final_weights(d, cfg)) is not None:
                        store.log_weights(run_id, model, cfg["role"])
            store.set_state(run_id, State.DONE)
            self._close(cfg, run_id, Status.FINISHED)
            if progress:
                progress.completed(cfg)

        @_unless_store_failed
        def on_trial_error(self, iteration, trials, trial, **info):
            reason = error_reason(trial)
            for cfg in self._open(trial):
                self._failed(cfg, reason)

        def on_trial_recover(self, iteration, trials, trial, **info):
            if progress:
                progress.retrying(trial_name(trial.config), error_reason(trial))

        @_unless_store_failed
        def close_unfinished(self, why: State = State.INTERRUPTED) -> int:
            """After an interrupt (or a lost cluster): the runs of trials that started and did not finish
            become KILLED (kd.state WHY), so no run stays RUNNING; a continued sweep reopens them."""
            open_runs = [(key, run_id) for key, run_id in list(self.runs.items()) if key not in self.closed]
            for key, run_id in open_runs:
                store.interrupt(run_id, why)
                self.closed.add(key)
            return len(open_runs)

        def _close(self, cfg: dict, run_id: str, status: Status) -> None:
            self.closed.add(cfg["config_hash"])
            store.finish(run_id, status)

        def _failed(self, cfg: dict, reason: str) -> None:
            run_id = self._run_for(cfg)
            store.set_state(run_id, State.FAILED, {Tag.ERROR: reason[:5000]})
            self._close(cfg, run_id, Status.FAILED)
            if progress:
                progress.failed(cfg, reason)

    return MLflowTrials()


def final_weights(folder: str, cfg: dict) -> str | None:
    """CFG's final weights in its trial's last checkpoint: `model_<hash>.pt`, each student's own; a
    checkpoint of a lone student from before every trial was a pack holds `model.pt`."""
    for name in (f"model_{cfg['config_hash']}.pt", "model.pt"):
        if os.path.exists(path := os.path.join(folder, name)):
            return path
    return None


def read_epoch_json(checkpoint: str) -> dict | None:
    """A checkpoint's epoch.json (a path or a storage URI), or None when it does not read."""
    from .resume import _filesystem

    try:
        fs, path = _filesystem(checkpoint)
        with fs.open_input_stream(f"{path}/epoch.json") as f:
            info = json.loads(f.read())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def error_reason(trial) -> str:
    """The last line of the trial's exception: the one a user needs in a summary."""
    try:
        err = trial.get_pickled_error()
        if err is not None:
            cause = getattr(err, "cause", None) or err
            return f"{type(cause).__name__}: {cause}".strip().splitlines()[-1][:500]
    except Exception:  # noqa: BLE001 - a missing error file must not hide the failure itself
        pass
    if trial.error_file and os.path.exists(trial.error_file):
        lines = [ln for ln in Path(trial.error_file).read_text().splitlines() if ln.strip()]
        if lines:
            return lines[-1][:500]
    return "trial failed (no error recorded)"

