"""`kd-sweep run`: pre-flight checks, teachers first, then the students, all as Ray Tune trials.

Reading order: `preflight.preflight` (nothing started yet) -> `run_sweep` (the lock, MLflow's parent
run, `ray_session._init_ray`, two Tuner phases) -> `_fit_phase` (one Tuner) -> summary and exit code.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import yaml

from results.mlflow_schema import SMOKE_SUFFIX, Param, Role, State, Status, Tag, cell_of, holds_result, smoke_tags
from trainables.config import PackConfig

from .claims import Claims, Holder, describe_holders, wait_for_holders
from .progress import Progress
from .resume import (SweepLock, SweepLocked, checkpoint_bytes, command_line, driver_alive, driver_tag, latest_checkpoints,
                     prune_checkpoints, sweep_key)
from .spec import Sweep, resolve_path, search_metric
from .sweep_summary import log_sweep_summary
from .tracking import (Store, failure_reason, local_store_path, make_callback, store_exists, store_failure,
                       unreachable_server, unwritable_store)
from . import packing
from .preflight import Plan, preflight
from .ray_session import (ClusterWatch, RunError, _init_ray, _shutdown_ray, check_storage, gcs_address, kill_own_ray,
                          unreachable_cluster)
from .sidelog import SideLog
from .ui import browse_hint, sweep_view
from .trials import evaluate_only, trial_name


class StoreFailed(RunError):
    """The MLflow store stopped taking the sweep's runs (read-only, full disk, server gone)."""

    def __init__(self, uri: str, e: BaseException, parent: str | None = None, tracebacks: str | None = None):
        then = f" and run the same command again to continue parent run {parent[:8]}" if parent else \
            " and run the same command again"
        super().__init__(f"the MLflow store {uri} stopped taking this sweep's runs ({failure_reason(e)}). Trials"
                         " keep their epoch checkpoints: fix the store (free disk space, make it writable,"
                         f" start the server again){then}{f'. Tracebacks: {tracebacks}' if tracebacks else ''}")


class Interrupted(Exception):
    """Tune stopped before every trial of a phase finished: Ctrl-C (Tune's own handler stops the
    trials and returns as if done) or SIGTERM (turned into SIGINT)."""

    def __init__(self, unfinished: int):
        super().__init__(f"{unfinished} trial(s) did not finish")
        self.unfinished = unfinished


INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
CLUSTER_LOST_EXIT = 1


def _term_as_int(signum, frame) -> None:
    """SIGTERM (a scheduler's stop, `kill`) stops the sweep as Ctrl-C does: trials stop, runs are closed."""
    os.kill(os.getpid(), signal.SIGINT)


def _fit_phase(name: str, trials: list[PackConfig], sweep: Sweep, storage: str, callback,
               weights: dict[str, dict[str, torch.Tensor]], students: bool = False,
               searched: list[tuple[dict, float]] | None = None,
               finished: dict[str, tuple[str, dict[str, float]]] | None = None):
    """One Tuner over TRIALS (a grid of them), or, for the students of a search sweep, over
    `n_trials - len(searched)` samples of the search space around the student of TRIALS[0]."""
    from ray import tune

    from trainables.tune_trial import tune_trainable

    import ray

    refs = {k: ray.put(v) for k, v in weights.items()}  # each trial fetches its own teacher, not all of them
    trainable = tune.with_resources(tune.with_parameters(tune_trainable, teachers=refs, finished=finished),
                                    {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu})
    namer = lambda t: trial_name(t.config)  # noqa: E731
    # Reused actors keep torch imported between trials: seconds per trial on short ones.
    tune_config = dict(trial_name_creator=namer, trial_dirname_creator=namer, reuse_actors=True)
    param_space = {"trial": tune.grid_search(trials)}
    if students and (sweep.search or sweep.scheduler):
        from . import search

        if sweep.scheduler:
            tune_config["scheduler"] = search.scheduler(sweep)
        if sweep.search:
            done = searched or []
            param_space = {"trial": trials[0], "search": search.search_space(sweep)}
            tune_config.update(search_alg=search.searcher(sweep, done), num_samples=sweep.search.n_trials - len(done))
    expected = sweep.search.n_trials - len(searched or []) if students and sweep.search else \
        sum(len(t["pack"]) for t in trials)
    closed_before = len(callback.closed)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(**tune_config),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, callbacks=[callback], verbose=0,
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None if sweep.keep_checkpoints == "all" else 2),
            stop=callback.stopper()),
    )
    # Trials stopped before they started (an interrupt, a failed store) have no results: Tune's result
    # grid warns about each, though kd-sweep reads its results from the callback, not from the grid.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    result = tuner.fit()
    if callback.store_error is not None:
        raise callback.store_error
    if sweep.keep_checkpoints == "last":
        prune_checkpoints(storage, name, callback.completed_trials)
    unfinished = expected - (len(callback.closed) - closed_before)
    if unfinished > 0:
        raise Interrupted(unfinished)
    return result


def _teacher_weights(store: Store, run) -> dict[str, torch.Tensor]:
    return torch.load(store.download(run.info.run_id, "teacher/model.pt"), map_location="cpu", weights_only=True)


def _checkpoints(storage: str, prefix: str, progress: Progress) -> dict[str, tuple[int, str]]:
    notes: list[str] = []
    found = latest_checkpoints(storage, prefix, notes)
    for line in notes:
        progress.note(line)
    return found


def _with_checkpoints(configs: list[dict], found: dict[str, tuple[int, str]], progress: Progress) -> list[dict]:
    """Trials an earlier driver left unfinished continue from their newest epoch checkpoint."""
    out = []
    for cfg in configs:
        if cfg["config_hash"] in found:
            epoch, path = found[cfg["config_hash"]]
            progress.note(f"resume {cfg['name']} from its epoch {epoch} checkpoint")
            cfg = {**cfg, "resume_from": path}
        out.append(cfg)
    return out


def run_sweep(sweep: Sweep, file: str, address: str | None, tracking_uri: str, storage: str | None,
              out=sys.stdout, smoke: bool = False, rerun: bool = False, resume: bool = False) -> int:
    """`rerun`: run every student trial, even those an earlier sweep finished (otherwise linked).
    `resume`: only continue a sweep whose driver died; RunError when there is none."""
    base = os.path.dirname(os.path.abspath(file))
    plan = preflight(sweep, file, base)
    storage_path = resolve_path(storage or sweep.storage or "ray_results", None)
    raw = sweep.model_dump(mode="json", by_alias=True)
    # Packing changes no number and a resumed student finds its state in any checkpoint layout; the
    # paper reference only annotates the report.
    key = sweep_key({k: v for k, v in raw.items() if k not in ("pack", "paper", "keep_checkpoints")}, smoke)
    if (why := unwritable_store(tracking_uri)) is not None:
        raise RunError(f"the MLflow store cannot take this sweep's runs: {why}; give a writable one with"
                       " --tracking-uri (or MLFLOW_TRACKING_URI), or fix its permissions")
    if (why := unreachable_cluster(address)) is not None:
        raise RunError(why)
    if (why := unreachable_server(tracking_uri)) is not None:
        raise RunError(f"the MLflow server {tracking_uri} does not answer ({why}): start it (`mlflow server`),"
                       " or give another store with --tracking-uri")
    # Before anything is written: two drivers started together must not both run the sweep (the
    # parent-run check below sees only a driver that has already made its parent run).
    local = local_store_path(tracking_uri)
    # Beside a store on this machine; for a server, under the checkpoint storage (or the home folder).
    folder = os.path.dirname(local) if local else storage_path if "://" not in storage_path else \
        os.path.expanduser("~/.kd-sweep")
    try:
        lock = SweepLock(folder, sweep.name, key).acquire()
    except SweepLocked as e:
        raise RunError(str(e)) from None
    sidelog = SideLog(sweep.name).start()
    progress = Progress(out, tracebacks=sidelog.where)
    try:
        store = None
        if not (rerun or resume or sweep.search) and store_exists(tracking_uri):
            # A sweep run again after it finished: nothing to do, and no Ray, no new parent or linked runs.
            # (MLflow's start-up before Ray's, paid only where a store already exists; `look` reuses it.)
            store = Store(tracking_uri)
            done = store.complete_parent(sweep.name, key, {c["config_hash"] for c in plan.students},
                                         {c["config_hash"] for c in plan.teachers})
            if done is not None:
                progress.note(f"sweep {sweep.name!r} is complete: parent run {done.info.run_id[:8]} finished its"
                              f" {len(plan.students)} trial(s); nothing to run (`--rerun` runs them again)")
                progress.note(f"table: `kd-sweep report {report_name(sweep.name, smoke)} --table`")
                progress.note(browse_hint(tracking_uri, done.info.experiment_id,
                                          store.has_view(done.info.experiment_id)))
                return 0
        return _run_sweep(sweep, file, address, tracking_uri, smoke, rerun, resume, plan, storage_path, progress,
                          raw, key, lock, store)
    except Exception as e:
        if isinstance(e, RunError) or not store_failure(e):
            raise
        raise StoreFailed(tracking_uri, e, tracebacks=sidelog.where()) from None
    finally:
        progress.close()
        sidelog.stop()
        lock.release()


def _run_sweep(sweep: Sweep, file: str, address: str | None, tracking_uri: str, smoke: bool, rerun: bool,
               resume: bool, plan: Plan, storage_path: str, progress: Progress, raw: dict, key: str,
               lock: SweepLock, opened: Store | None = None) -> int:
    def look():
        """MLflow's first touch (the client and its schema check: over a second on a new store) runs
        beside Ray's start-up (~3 s), unless the completeness check made it already. It only reads:
        nothing is logged until both are up."""
        store = opened or Store(tracking_uri)
        exp_id = store.find_experiment(sweep.name)
        found = None if rerun or exp_id is None else store.find_resumable(exp_id, key)
        return store, exp_id, found

    with ThreadPoolExecutor(1) as pool:
        looked = pool.submit(look)
        _init_ray(address, sweep, file)

    try:
        store, exp_id, earlier = looked.result()
        if resume and earlier is None:
            raise RunError(f"nothing to resume: no run of sweep {sweep.name!r} (as this file resolves now) stopped"
                           f" before its end in {tracking_uri}; `kd-sweep status {sweep.name}` shows its latest run")
        if earlier is not None and (pid := driver_alive(earlier.data.tags.get(Tag.DRIVER))):
            raise RunError(f"this sweep is being run by process {pid} (parent run {earlier.info.run_id}); wait"
                           " for it, or stop it and run again to continue")
        exp_id = exp_id or store.experiment(sweep.name)
        check_storage(storage_path, file)
        if earlier is not None:
            parent = earlier.info.run_id
            attempt = int(earlier.data.tags.get(Tag.ATTEMPT, "1")) + 1
            store.reopen(parent)
            paper = {k: v for k, v in parent_tags(sweep, smoke).items() if k == Tag.PAPER}  # the file's latest notes
            store.set_tags(parent, {Tag.ATTEMPT: str(attempt), Tag.DRIVER: driver_tag(),
                                    Tag.COMMAND: command_line(), **paper})
            lock.write(parent)
            progress.note(f"continuing parent run {parent[:8]} of sweep {sweep.name!r} (its driver stopped;"
                          f" attempt {attempt}): finished trials stay finished, unfinished ones resume")
        else:
            attempt = 1
            parent = store.start_parent(exp_id, sweep.name, yaml.safe_dump(raw, sort_keys=False),
                                        len(plan.students), {**parent_tags(sweep, smoke), Tag.SWEEP_KEY: key,
                                                             Tag.ATTEMPT: "1", Tag.DRIVER: driver_tag(),
                                                             Tag.COMMAND: command_line()})
            lock.write(parent)
        store.save_view(exp_id, runs_view(sweep, parent))
    except BaseException:
        _shutdown_ray()
        raise
    smoke_tag = smoke_tags(smoke)
    status = Status.FAILED
    callbacks: list = []
    own_ray = not (address or os.environ.get("RAY_ADDRESS"))

    def cluster_lost(why: str) -> None:
        """From the watch's thread, while the main thread waits on a Ray that will never answer: close
        the runs, say so in one line, and leave before Ray's driver ends the process from C++."""
        gcs = watch.gcs_address
        try:
            stopped = sum(cb.close_unfinished(State.CLUSTER_LOST) or 0 for cb in callbacks)
            store.set_tags(parent, {Tag.STATE: State.CLUSTER_LOST})
            store.finish(parent, Status.KILLED)
            closed = f"{stopped} started trial(s) and the parent run are marked KILLED (kd.state cluster_lost)"
        except Exception as e:  # noqa: BLE001 - the line below must be said whatever the store does
            closed = f"the runs could not be closed ({failure_reason(e)}); the same command closes or continues them"
        # The cluster by the address the user gave (Ray reports the head's GCS by the machine's IP).
        head = address or os.environ.get("RAY_ADDRESS") or gcs
        what = (f"this sweep's own Ray stopped (its GCS at {gcs}: {why}; killed, or out of memory?)" if own_ray
                else f"the Ray cluster's head at {head} no longer answers ({why}; node down, killed, or out of memory?)")
        sys.stdout.flush()
        sys.stderr.write(f"\nerror: lost the Ray cluster: {what}. {closed}; finished trials and epoch checkpoints"
                         f" under {storage_path} are kept: run `{command_line()}` again to continue parent run"
                         f" {parent[:8]}{f'. Tracebacks: {where}' if (where := progress.tracebacks()) else ''}.\n")
        sys.stderr.flush()
        if own_ray:
            kill_own_ray()
        os._exit(CLUSTER_LOST_EXIT)

    watch = ClusterWatch(gcs_address(), cluster_lost, grace=5.0 if own_ray else 15.0).start()
    # A search samples its own configs; every other trial is claimed before it is trained.
    claims = None if sweep.search else Claims(store.client, parent, sweep.name).heartbeat()
    on_term = signal.signal(signal.SIGTERM, _term_as_int) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        weights = dict(plan.given)
        # Phase 1: teachers. Weights trained by any earlier sweep are reused (and only re-scored
        # when this sweep evaluates differently); the rest are trained here.
        todo, teacher_runs = [], {}
        for cfg in plan.teachers:
            label = cfg["labels"]["student"]
            if (run := store.find_teacher("config_hash", cfg["config_hash"])) is not None:
                progress.note(f"teacher {label}: reusing run {run.info.run_id[:8]} (weights {cfg['weights_hash'][:8]})")
            elif (run := store.find_teacher("weights_hash", cfg["weights_hash"])) is not None:
                progress.note(f"teacher {label}: re-scoring the weights of run {run.info.run_id[:8]}")
                weights[cfg["weights_hash"]] = _teacher_weights(store, run)
                todo.append(evaluate_only(cfg))
            else:
                todo.append(cfg)
        deferred: list[dict] = []
        if plan.students and not sweep.search and scoring_only(todo, weights):
            deferred, todo = todo, []
        later = {c["config_hash"] for c in deferred}
        todo, theirs = _claimed(claims, todo, progress, "teacher")
        prefix = f"{sweep.name}-teachers-{parent[:8]}"
        if todo:
            if attempt > 1:
                todo = _with_checkpoints(todo, _checkpoints(storage_path, prefix, progress), progress)
            progress.begin(f"teachers: {len(todo)} trial(s)", len(todo))
            callbacks.append(make_callback(store, exp_id, parent, progress, smoke_tag))
            _fit_phase(f"{prefix}-{attempt}", packing.alone(todo), sweep, storage_path, callbacks[-1], weights)
        if theirs:
            taken = _await_claimed(claims, theirs, store, progress, lambda hashes: {
                h for h in hashes if store.find_teacher("config_hash", h) is not None})
            if taken:
                progress.begin(f"teachers: {len(taken)} trial(s) taken over", len(taken))
                callbacks.append(make_callback(store, exp_id, parent, progress, smoke_tag))
                _fit_phase(f"{prefix}-{attempt}-taken", packing.alone(taken), sweep, storage_path, callbacks[-1],
                           weights)
        for cfg in plan.teachers:
            if cfg["config_hash"] in later:
                continue  # scored in phase 2; its weights are in `weights`
            run = store.find_teacher("config_hash", cfg["config_hash"])
            if run is None:
                progress.note(f"teacher {cfg['labels']['student']} failed: its students cannot run")
                progress.summary()
                return 1
            if cfg["weights_hash"] not in weights:
                weights[cfg["weights_hash"]] = _teacher_weights(store, run)
            teacher_runs[cfg["weights_hash"]] = run.info.run_id
        # The report's Teacher column reads the exact runs this sweep used.
        store.set_teacher_runs(parent, teacher_runs)
        if not plan.students:
            progress.note(f"teachers ready; MLflow: {tracking_uri} (experiment {sweep.name!r}). Later sweeps"
                          " with the same teacher model, data and teacher_train reuse them.")
            progress.note(browse_hint(tracking_uri, exp_id))
            status = Status.FINISHED
            return 0
        prefix = f"{sweep.name}-{parent[:8]}"
        table = None  # the grid's table, printed at the end
        callback = make_callback(store, exp_id, parent, progress, smoke_tag)
        callbacks.append(callback)
        if sweep.search:
            # Phase 2 of a search: n_trials sampled knob sets; a continued search tells the sampler
            # what the stopped driver's trials found and samples only the rest.
            searched = _searched(store, exp_id, parent, search_metric(sweep))
            todo_n = sweep.search.n_trials - len(searched)
            if searched:
                progress.note(f"{len(searched)} searched trial(s) finished before the driver stopped; sampling"
                              f" {todo_n} more")
            if todo_n > 0:
                progress.begin(f"search {sweep.name}: {todo_n} trials to run ({sweep.search.algorithm},"
                               f" {sweep.search.max_concurrent} at a time)", todo_n)
                finished = {} if rerun else store.finished_like(plan.students[0])
                _fit_phase(f"{prefix}-{attempt}", packing.alone(plan.students), sweep, storage_path, callback,
                           weights, students=True, searched=searched, finished=finished)
        else:
            # Phase 2: the students of every cell x pair x seed, and the from-scratch students. A trial
            # that finished before (in this sweep before its driver stopped, or in any other) is not run again.
            todo = _students_to_run(plan.students, store, exp_id, parent, smoke_tag, progress, rerun)
            # --rerun trains again on purpose: nothing to claim.
            todo, theirs = _claimed(None if rerun else claims, todo, progress, "student")
            if attempt > 1:
                todo = _with_checkpoints(todo, _checkpoints(storage_path, prefix, progress), progress)
            if todo or deferred:
                scoring = f" (+ scoring {len(deferred)} teacher(s))" if deferred else ""
                progress.begin(f"sweep {sweep.name}: {len(todo)} trials to run{scoring}", len(todo) + len(deferred))
                _fit_phase(f"{prefix}-{attempt}", packing.alone(deferred) + _packed(todo, sweep, plan, progress),
                           sweep, storage_path, callback, weights, students=True)
            if theirs:
                def linked(hashes: set[str]) -> set[str]:
                    found = store.find_finished(hashes)
                    for h, runs in found.items():
                        store.link(exp_id, parent, theirs[h][0], runs[0], smoke_tag)
                        progress.note(f"linked {theirs[h][0]['name']}: trained by another sweep, run"
                                      f" {runs[0].info.run_id[:8]}")
                    return set(found)

                taken = _await_claimed(claims, theirs, store, progress, linked)
                if taken:
                    progress.begin(f"sweep {sweep.name}: {len(taken)} trial(s) taken over", len(taken))
                    _fit_phase(f"{prefix}-{attempt}-taken", _packed(taken, sweep, plan, progress), sweep,
                               storage_path, callback, weights, students=True)
            for cfg in deferred:
                if (run := store.find_teacher("config_hash", cfg["config_hash"])) is not None:
                    teacher_runs[cfg["weights_hash"]] = run.info.run_id
            if deferred:
                store.set_teacher_runs(parent, teacher_runs)
            try:
                table = log_sweep_summary(store, parent, sweep.name, smoke, search_metric(sweep))
            except Exception as e:  # noqa: BLE001 - the trials' runs are logged; only the parent's summary is missing
                if store_failure(e):
                    raise
                progress.note(f"the parent run's table was not logged ({type(e).__name__}: {e});"
                              " `kd-sweep report` still prints it")
        failed = progress.summary()
        if table:
            progress.note(f"\n{table}")
        status = Status.FAILED if failed else Status.FINISHED
        if (used := checkpoint_bytes(storage_path, sweep.name)) is not None:
            progress.note(f"epoch checkpoints: {used / 2**20:.1f} MB under {storage_path}"
                          f" (keep_checkpoints: {sweep.keep_checkpoints})")
        progress.note(f"MLflow: {tracking_uri}\n  experiment {sweep.name!r}, parent run {parent}")
        progress.note(f"table: `kd-sweep report {report_name(sweep.name, smoke)} --table`")
        progress.note(browse_hint(tracking_uri, exp_id))
        return 1 if failed else 0
    except (Interrupted, KeyboardInterrupt) as e:
        status = Status.KILLED
        stopped = sum(cb.close_unfinished() or 0 for cb in callbacks)
        never = max(0, e.unfinished - stopped) if isinstance(e, Interrupted) else 0
        progress.note(f"interrupted: {stopped} trial(s) stopped before their end"
                      f"{f' and {never} never started' if never else ''}; their runs are marked KILLED, finished"
                      f" trials and epoch checkpoints are kept. Run the same command again (or with --resume) to"
                      f" continue parent run {parent[:8]}.")
        return INTERRUPTED_EXIT
    except Exception as e:
        if not store_failure(e):
            raise
        status = None  # the parent stays RUNNING: the next run of the same command continues it
        raise StoreFailed(tracking_uri, e, parent, progress.tracebacks()) from None
    finally:
        watch.stop()
        if claims is not None:
            claims.stop()
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
        _shutdown_ray()
        if status is not None:
            try:
                store.finish(parent, status)
            except Exception as e:
                if not store_failure(e):
                    raise
                # The sweep's end is not recorded: the parent stays RUNNING and the same command continues it.
                raise StoreFailed(tracking_uri, e, parent, progress.tracebacks()) from None


def report_name(name: str, smoke: bool) -> str:
    """What `kd-sweep report` takes for this run: a smoke run's sweep is `<name>-smoke`, and
    `report <name> --smoke` finds it."""
    return f"{name.removesuffix(SMOKE_SUFFIX)} --smoke" if smoke else name


def runs_view(sweep: Sweep, parent: str) -> dict:
    """The MLflow runs table a sweep's link opens on: its trials, its swept knobs, seed and scores."""
    axes = sweep.axes() or list(sweep.search.space if sweep.search else [])
    params = [Param.METHOD if k == "method" else Param.knob(k) for k in axes]
    tags = [Tag.SEED, *([Tag.PAIR] if sum(p.student is not None for p in sweep.pairs) > 1 else [])]
    metrics = [f"eval/{p}_top1" for p in sweep.eval.protocols()]
    metrics += [m for m in ("eval/classifier_top1", "train/loss") if m not in metrics]
    return sweep_view(parent, metrics, params, tags)


def scoring_only(teachers: list[dict], weights: dict) -> bool:
    """Teachers that only need scoring (a given checkpoint, weights an earlier sweep trained) can run
    beside the students: one Tuner fewer saves an actor start-up per sweep. Only when their weights are
    here already: a teacher of torchvision `weights:` and 0 epochs makes its weights in its own trial,
    and its students need them, so it still comes first."""
    return bool(teachers) and all(c["train"]["epochs"] == 0 and c["weights_hash"] in weights for c in teachers)


def parent_tags(sweep: Sweep, smoke: bool) -> dict[str, str]:
    """What the report needs of the sweep as a whole: the seeds asked (a cell with fewer is marked),
    smoke or not, the dataset, and with `paper:` the tables it reproduces, the pairs it runs (a table
    split over two files counts only its own pairs) and its known deviations."""
    tags = {Tag.SEEDS: json.dumps(sweep.seeds), **smoke_tags(smoke), Tag.DATASET: sweep.dataset.name,
            Tag.SETTING: sweep.setting}
    if sweep.search:
        tags[Tag.SEARCH] = json.dumps({**sweep.search.model_dump(mode="json"), "metric": search_metric(sweep)})
    if sweep.paper is not None:
        # A teacher-only pair is its teacher's row (a teachers sweep's table).
        pairs = [{"pair": p.label, "teacher": p.teacher.label,
                  "student": p.student.label if p.student else p.teacher.label} for p in sweep.pairs]
        tags[Tag.PAPER] = json.dumps({"tables": sweep.paper.tables, "pairs": pairs,
                                       "deviations": sweep.paper.deviations})
    return tags


def _packed(configs: list[dict], sweep: Sweep, plan: Plan, progress: Progress) -> list[PackConfig]:
    """Students that can share a teacher forward, packed into trials (orchestrator/packing.py)."""
    import ray

    if sweep.search or sweep.scheduler or sweep.pack == "off":
        return packing.alone(configs)
    room = None
    if sweep.pack == "auto":
        room = packing.room_by_memory(plan.data, packing.device_memory(sweep.resources.gpu, sweep.resources.cpu))
    trials = packing.trials(configs, sweep.pack,
                            packing.slots(ray.cluster_resources(), sweep.resources.cpu, sweep.resources.gpu), room)
    packs = [len(t["pack"]) for t in trials if len(t["pack"]) > 1]
    if packs:
        progress.note(f"packed {sum(packs)} students into {len(packs)} trial(s) of {'/'.join(map(str, packs))}:"
                      " one teacher forward a batch (`pack: off` runs them apart)")
    return trials


def _searched(store: Store, exp_id: str, parent: str, metric: str) -> list[tuple[dict, float]]:
    """(sampled knobs, metric) of the search trials this parent run finished. Those a dead driver left
    running are closed as interrupted: the continued search samples afresh rather than resuming them."""
    # Newest first, the order the sampler was told them in before: it decides what a seeded search samples.
    runs = store.children(exp_id, parent, Role.STUDENT, newest_first=True)
    for r in runs:
        if r.info.status == Status.RUNNING:
            store.interrupt(r.info.run_id)
    return [(cell_of(r.data.tags), r.data.metrics[metric]) for r in runs
            if holds_result(r) and metric in r.data.metrics]


def _students_to_run(students: list[dict], store: Store, exp_id: str, parent: str, tags: dict[str, str],
                     progress: Progress, rerun: bool) -> list[dict]:
    if rerun:
        return students
    found = store.find_finished({c["config_hash"] for c in students})
    todo, here, linked = [], 0, 0
    for cfg in students:
        runs = found.get(cfg["config_hash"], [])
        if any(r.data.tags.get(Tag.PARENT) == parent for r in runs):
            here += 1
        elif runs:
            store.link(exp_id, parent, cfg, runs[0], tags)
            linked += 1
        else:
            todo.append(cfg)
    if here:
        progress.note(f"{here} trial(s) finished before the driver stopped: not run again")
    if linked:
        progress.note(f"{linked} trial(s) finished in an earlier sweep: linked into this one, not run"
                      " (`--rerun` runs them again)")
    return todo


def _claimed(claims: Claims | None, cfgs: list[dict], progress: Progress, role: str
             ) -> tuple[list[dict], dict[str, tuple[dict, Holder]]]:
    """CFGS split into the ones this driver claimed (to train) and, by config hash, the ones another
    live (or not yet found dead) driver holds, with their holder."""
    if claims is None:
        return cfgs, {}
    mine, theirs = [], {}
    for cfg in cfgs:
        holder = claims.take(cfg["config_hash"])
        if holder is None:
            mine.append(cfg)
        else:
            theirs[cfg["config_hash"]] = (cfg, holder)
    if theirs:
        held = describe_holders({h: holder for h, (_, holder) in theirs.items()})
        progress.note(f"{len(theirs)} {role} trial(s) are being trained {held}: this sweep waits for them and"
                      " links them (a config is never trained twice)")
    return mine, theirs


def _await_claimed(claims: Claims, theirs: dict[str, tuple[dict, Holder]], store: Store, progress: Progress,
                   finished) -> list[dict]:
    """Wait for the configs THEIRS other drivers hold; FINISHED(hashes) resolves (links) the finished ones.
    Returns the configs taken over from holders that died (or whose run of them ended unfinished)."""
    taken = wait_for_holders(claims, {h: holder for h, (_, holder) in theirs.items()}, finished,
                             store.ended_unfinished, progress.note)
    return [theirs[h][0] for h in taken]
