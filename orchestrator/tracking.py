"""MLflow, from the driver only: one experiment per sweep, a parent run per `kd-sweep run`, a child
run per trial. Workers never talk to the store, so a cluster's nodes need no access to it.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

from results.collect import search_all
from trainables.config import cell_label
from trainables.tune_trial import FAILED, MEMBERS, REUSED

from .trials import describe, flat_params, trial_members, trial_name

KD_VERSION = "0.1.0"
# Per-epoch names the trainable reports; everything else in a Tune result is Ray's bookkeeping.
METRIC_PREFIXES = ("train/", "eval/", "pretrain/", "cost/", "curve/")

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
    One quick request before Ray starts, where MLflow's client would retry for minutes."""
    if not uri.startswith(("http://", "https://")):
        return None
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=10)
    except requests.exceptions.RequestException as e:
        return failure_reason(e)
    return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Once per process: it tags every trial's run."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def trial_tags(cfg: dict) -> dict[str, str]:
    lab = cfg["labels"]
    tags = {
        "kd.role": cfg["role"], "kd.sweep": cfg["sweep"], "kd.method": cfg["method"],
        "kd.pair": lab["pair"], "kd.teacher": lab["teacher"], "kd.student": lab["student"],
        "kd.seed": str(cfg["seed"]), "kd.cell": json.dumps(lab["cell"], sort_keys=True),
        "kd.config_hash": cfg["config_hash"], "kd.dataset": cfg["dataset"]["name"], "kd.version": KD_VERSION,
        # Which split the eval/* numbers are on: "val" numbers are for tuning, never for the paper.
        "kd.eval_split": "val" if cfg["dataset"].get("val_split") else "test",
        "kd.metrics": METRIC_NOTE,
        "kd.pair_index": str(lab.get("pair_index", 0)),
        "kd.cell_label": cell_label(lab["cell"]) or cfg["method"], "kd.trial": cfg["name"],
        "kd.gpu": str(cfg["resources"]["gpu"]), "kd.cpu": str(cfg["resources"]["cpu"]),
        "kd.data_fingerprint": str(cfg["dataset"].get("fingerprint", "")),
        MLFLOW_RUN_NAME: lab.get("run", cfg["name"]),
        MLFLOW_RUN_NOTE: f"{describe(cfg)}\n\n{METRIC_NOTE}.",
    }
    if cfg.get("teacher"):
        tags["kd.teacher_hash"] = cfg["teacher"]["hash"]
    if cfg.get("weights_hash"):
        tags["kd.weights_hash"] = cfg["weights_hash"]
    commit = git_commit()
    if commit:
        tags["kd.git_commit"] = commit
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

    def experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        return exp.experiment_id if exp else self.client.create_experiment(name)

    def start_parent(self, exp_id: str, sweep_name: str, resolved_yaml: str, n_trials: int,
                     tags: dict[str, str]) -> str:
        """`tags`: what the report needs of the sweep as a whole (kd.seeds, kd.smoke...)."""
        run = self.client.create_run(exp_id, run_name=f"{sweep_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                                     tags={"kd.role": "sweep", "kd.sweep": sweep_name, "kd.version": KD_VERSION,
                                           "kd.n_trials": str(n_trials), **tags,
                                           **({"kd.git_commit": c} if (c := git_commit()) else {})})
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory() as d:
            p = Path(d, "sweep.yaml")
            p.write_text(resolved_yaml)
            self.client.log_artifact(run_id, str(p))
        return run_id

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def find_teacher(self, key: str, value: str):
        """The latest finished teacher run whose `kd.<key>` tag is `value`, from any sweep; or None."""
        runs = self.client.search_runs(
            [e.experiment_id for e in self.client.search_experiments()],
            filter_string=f"tags.`kd.role` = 'teacher' and tags.`kd.{key}` = '{value}'"
                          " and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def complete_parent(self, name: str, key: str, students: set[str], teachers: set[str]):
        """The latest parent run of this same sweep when it finished every trial (FINISHED: nothing
        failed or was interrupted) and its children hold every student config now planned; or None."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            return None
        runs = self.client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`kd.role` = 'sweep' and tags.`kd.sweep_key` = '{key}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if not runs or runs[0].info.status != "FINISHED":
            return None
        kids = search_all(self.client, [exp.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{runs[0].info.run_id}'")
        done = {r.data.tags.get("kd.config_hash") for r in kids
                if r.info.status == "FINISHED" and r.data.tags.get("kd.state") in ("done", "reused")}
        if not students <= done or any(self.find_teacher("config_hash", h) is None for h in teachers):
            return None
        return runs[0]

    def find_resumable(self, exp_id: str, key: str):
        """The latest parent run of this same sweep whose driver stopped before the end (killed,
        Ctrl-C: status RUNNING or KILLED); or None."""
        runs = self.client.search_runs(
            [exp_id], filter_string=f"tags.`kd.role` = 'sweep' and tags.`kd.sweep_key` = '{key}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs and runs[0].info.status in ("RUNNING", "KILLED") else None

    def find_finished(self, hashes: set[str]) -> dict[str, list]:
        """config hash -> the finished trial runs of it, from any sweep, the earliest first."""
        if not hashes:
            return {}
        found: dict[str, list] = {}
        for r in search_all(self.client, self._experiments(),
                            "attributes.status = 'FINISHED' and tags.`kd.role` != 'sweep'"
                            " and tags.`kd.role` != 'teacher'"):
            h = r.data.tags.get("kd.config_hash")
            if h in hashes and r.data.tags.get("kd.state") in ("done", "reused"):
                found.setdefault(h, []).append(r)
        return found

    def finished_like(self, cfg: dict) -> dict[str, tuple[str, dict[str, float]]]:
        """config hash -> (run id, final metrics) of the finished trials, in any sweep, of CFG's method,
        pair and dataset: what a search may sample again."""
        out: dict[str, tuple[str, dict[str, float]]] = {}
        for r in search_all(self.client, self._experiments(),
                            f"attributes.status = 'FINISHED' and tags.`kd.method` = '{cfg['method']}'"
                            f" and tags.`kd.pair` = '{cfg['labels']['pair']}'"
                            f" and tags.`kd.dataset` = '{cfg['dataset']['name']}'"):
            t = r.data.tags
            if t.get("kd.state") in ("done", "reused"):
                out.setdefault(t["kd.config_hash"], (t.get("kd.reused_from") or r.info.run_id, dict(r.data.metrics)))
        return out

    def _experiments(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def link(self, exp_id: str, parent_id: str, cfg: dict, source, tags: dict[str, str]) -> str:
        """A child run of PARENT standing for a trial that finished in an earlier sweep: its params, tags,
        every metric's whole history (the curves read as the original's), `kd.reused_from` naming the run
        that holds its weights, and a name that says it is a link."""
        src_id = source.data.tags.get("kd.reused_from") or source.info.run_id
        name = f"{cfg['labels'].get('run', cfg['name'])} (reused)"
        run = self.client.create_run(exp_id, run_name=name, tags={
            MLFLOW_PARENT_RUN_ID: parent_id, **trial_tags(cfg), **tags, "kd.state": "reused",
            "kd.reused_from": src_id, MLFLOW_RUN_NAME: name,
            **{k: v for k, v in source.data.tags.items() if k in ("kd.device", "kd.node")}})
        params = [Param(k, v[:6000]) for k, v in flat_params(cfg).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        self.log_config(run.info.run_id, cfg)
        self.copy_history(source.info.run_id, run.info.run_id, source.data.metrics)
        self.finish(run.info.run_id, "FINISHED")
        return run.info.run_id

    def copy_history(self, src_id: str, dst_id: str, names) -> None:
        """Every point of every metric in NAMES, with its step and time, from one run to another."""
        points = [m for name in names for m in self.client.get_metric_history(src_id, name)]
        for i in range(0, len(points), 1000):  # MLflow's cap on metrics per batch
            self.client.log_batch(dst_id, metrics=points[i:i + 1000])

    def log_config(self, run_id: str, cfg: dict) -> None:
        """The whole resolved trial config (paths, hashes and resources included) as `config.json`."""
        with tempfile.TemporaryDirectory() as d:
            p = Path(d, "config.json")
            p.write_text(json.dumps({k: v for k, v in cfg.items() if k != "resume_from"}, indent=1, default=str))
            self.client.log_artifact(run_id, str(p))

    def download(self, run_id: str, artifact: str) -> str:
        return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                   tracking_uri=self.uri)


def _numbers(result: dict) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if k.startswith(METRIC_PREFIXES) and isinstance(v, (int, float)) and not isinstance(v, bool)}


def member_result(result: dict, cfg: dict) -> dict | None:
    """CFG's part of a Tune result: the result itself, or its student's entry in a pack's."""
    if MEMBERS not in result:
        return result
    r = result[MEMBERS].get(cfg["config_hash"])
    return None if r is None else {**r, **{k: result[k] for k in ("device", "node") if k in result}}


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
            found = store.client.search_runs(
                [exp_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_id}'"
                                        f" and tags.`kd.config_hash` = '{key}'", max_results=1)
            if found:
                run_id = found[0].info.run_id
                store.client.update_run(run_id, status="RUNNING")
            else:
                run = store.client.create_run(exp_id, tags={MLFLOW_PARENT_RUN_ID: parent_id, **trial_tags(cfg),
                                                             **(tags or {})})
                run_id = run.info.run_id
                params = [Param(k, v[:6000]) for k, v in flat_params(cfg).items()]
                for i in range(0, len(params), 100):
                    store.client.log_batch(run_id, params=params[i:i + 100])
                store.log_config(run_id, cfg)
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
                    store.client.log_batch(run_id, tags=[RunTag("kd.pack", trial_name(trial.config)),
                                                         RunTag("kd.pack_size", str(len(members)))])
                if progress:
                    progress.started(cfg)

        def _logged_before(self, cfg: dict, run_id: str) -> set[int]:
            """Epochs a killed driver logged for a trial this driver resumes: never logged twice."""
            key = cfg["config_hash"]
            if key not in self.logged:
                self.logged[key] = ({m.step for m in store.client.get_metric_history(run_id, "cost/wall_s")}
                                    if cfg.get("resume_from") else set())
            return self.logged[key]

        def _log_checkpoint_epoch(self, cfg: dict, run_id: str) -> None:
            """The epoch a resumed trial starts after: its numbers are in the checkpoint, and the killed
            driver may have died before logging them (the trial never reports that epoch again)."""
            info = read_epoch_json(cfg["resume_from"])
            if not info:
                return
            metrics = info.get("metrics") or {}
            if "members" in info:
                metrics = metrics.get(cfg["config_hash"], {})
            step = int(info.get("epoch", 0))
            metrics = _numbers(metrics)  # as on_trial_result logs them: the per-epoch names only
            logged = self._logged_before(cfg, run_id)
            if metrics and step not in logged:
                ts = int(time.time() * 1000)
                store.client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v in metrics.items()])
                logged.add(step)

        @_unless_store_failed
        def on_trial_result(self, iteration, trials, trial, result, **info):
            for cfg in self._open(trial):
                r = member_result(result, cfg)
                if r is None:
                    continue
                run_id = self._run_for(cfg)
                step = int(r.get("epoch", 0))
                ts = int(time.time() * 1000)
                metrics = [Metric(k, v, ts, step) for k, v in _numbers(r).items()]
                if step in self._logged_before(cfg, run_id) or REUSED in r:
                    metrics = []
                tags = [RunTag(f"kd.{k}", str(r[k])) for k in ("device", "node") if k in r]
                if FAILED in r:
                    tags += [RunTag("kd.failed_epoch", str(step))]
                store.client.log_batch(run_id, metrics=metrics, tags=tags)
                self.last[cfg["config_hash"]] = r
                if FAILED in r:  # failed for good inside the trainable (a non-finite loss): not retried
                    self._failed(cfg, r[FAILED])
                elif progress:
                    progress.result(cfg, r)

        @_unless_store_failed
        def on_trial_complete(self, iteration, trials, trial, **info):
            self.completed_trials.add(trial_name(trial.config))
            packed = "pack" in trial.config["trial"]
            for cfg in self._open(trial):
                self._complete(trial, cfg, f"model_{cfg['config_hash']}.pt" if packed else "model.pt")

        def _complete(self, trial, cfg: dict, model_file: str) -> None:
            run_id = self._run_for(cfg)
            last = self.last.get(cfg["config_hash"]) or member_result(trial.last_result or {}, cfg) or {}
            if (source := last.get(REUSED)):  # a searched config run before: linked
                if source == run_id:
                    store.client.set_tag(run_id, "kd.state", "done")
                else:  # as Store.link: the original's curves, and a name that says it is a link
                    store.copy_history(source, run_id, store.client.get_run(source).data.metrics)
                    store.client.log_batch(run_id, tags=[RunTag("kd.state", "reused"), RunTag("kd.reused_from", source),
                                                         RunTag(MLFLOW_RUN_NAME,
                                                                f"{cfg['labels'].get('run', cfg['name'])} (reused)")])
                self._close(cfg, run_id, "FINISHED")
                if progress:
                    progress.completed(cfg)
                return
            epoch = int(last.get("epoch", 0))
            if epoch < cfg["train"]["epochs"]:  # the scheduler (ASHA) stopped it: not a finished trial
                store.client.set_tag(run_id, "kd.state", "stopped_early")
                self._close(cfg, run_id, "KILLED")
                if progress:
                    progress.stopped_early(cfg, epoch)
                return
            ckpt = trial.checkpoint
            if ckpt is not None:
                with ckpt.as_directory() as d:
                    model = os.path.join(d, model_file)
                    if os.path.exists(model) and model_file == "model.pt":
                        store.client.log_artifact(run_id, model, artifact_path=cfg["role"])
                    elif os.path.exists(model):  # a pack's student: its weights are <role>/model.pt too
                        with tempfile.TemporaryDirectory() as t:
                            shutil.copyfile(model, os.path.join(t, "model.pt"))
                            store.client.log_artifact(run_id, os.path.join(t, "model.pt"), artifact_path=cfg["role"])
            store.client.set_tag(run_id, "kd.state", "done")
            self._close(cfg, run_id, "FINISHED")
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
        def close_unfinished(self) -> int:
            """After an interrupt: the runs of trials that started and did not finish become KILLED
            (kd.state interrupted), so no run stays RUNNING; a continued sweep reopens them."""
            open_runs = [(key, run_id) for key, run_id in self.runs.items() if key not in self.closed]
            for key, run_id in open_runs:
                store.client.set_tag(run_id, "kd.state", "interrupted")
                store.finish(run_id, "KILLED")
                self.closed.add(key)
            return len(open_runs)

        def _close(self, cfg: dict, run_id: str, status: str) -> None:
            self.closed.add(cfg["config_hash"])
            store.finish(run_id, status)

        def _failed(self, cfg: dict, reason: str) -> None:
            run_id = self._run_for(cfg)
            store.client.log_batch(run_id, tags=[RunTag("kd.state", "failed"), RunTag("kd.error", reason[:5000])])
            self._close(cfg, run_id, "FAILED")
            if progress:
                progress.failed(cfg, reason)

    return MLflowTrials()


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

