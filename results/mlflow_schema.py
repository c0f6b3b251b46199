"""What kd-sweep keeps in MLflow, in one place: the names of the tags and params it writes and reads,
the `kd.state` of a trial's run, how runs are named and hang under their parent, and the searches every
reader pages through.

The layout: one experiment per sweep (`<name>-smoke` for `--smoke`), a parent run per `kd-sweep run`
(`kd.role` = "sweep"), and under it (`mlflow.parentRunId`) a child run per trial. The driver writes it
(orchestrator/tracking.py); `report`, `status`, `run`'s resume and the dry run read it.

Light on purpose: no MLflow, Ray or torch import (the functions take the client they search), so that
`results` can read tags without loading the writer.
"""
from __future__ import annotations

import json
from enum import StrEnum


class NoRuns(Exception):
    """The store holds no kd-sweep run that fits what was asked: one line for the user."""


class Tag:
    """Run tag names."""
    # MLflow's own (mlflow.utils.mlflow_tags): spelled out, since importing that module loads all of MLflow.
    PARENT = "mlflow.parentRunId"
    RUN_NAME = "mlflow.runName"
    NOTE = "mlflow.note.content"
    # Parent and child runs.
    ROLE = "kd.role"
    SWEEP = "kd.sweep"
    SMOKE = "kd.smoke"
    DATASET = "kd.dataset"
    # A trial's child run: what it is (tracking.trial_tags)...
    METHOD = "kd.method"
    PAIR = "kd.pair"
    PAIR_INDEX = "kd.pair_index"
    TEACHER = "kd.teacher"
    STUDENT = "kd.student"
    SEED = "kd.seed"
    CELL = "kd.cell"
    CELL_LABEL = "kd.cell_label"
    TRIAL = "kd.trial"
    CONFIG_HASH = "kd.config_hash"
    TEACHER_HASH = "kd.teacher_hash"
    WEIGHTS_HASH = "kd.weights_hash"
    DATA_FINGERPRINT = "kd.data_fingerprint"
    EVAL_SPLIT = "kd.eval_split"
    METRICS = "kd.metrics"
    GPU = "kd.gpu"
    CPU = "kd.cpu"
    # ...and what became of it.
    STATE = "kd.state"
    ERROR = "kd.error"
    FAILED_EPOCH = "kd.failed_epoch"
    REUSED_FROM = "kd.reused_from"
    DEVICE = "kd.device"
    NODE = "kd.node"
    PACK = "kd.pack"
    PACK_SIZE = "kd.pack_size"
    # A parent run: the sweep as a whole, and its driver.
    N_TRIALS = "kd.n_trials"
    SWEEP_KEY = "kd.sweep_key"
    ATTEMPT = "kd.attempt"
    DRIVER = "kd.driver"
    HEARTBEAT = "kd.heartbeat"  # unix time the driver last said it is alive (orchestrator/claims.py)
    COMMAND = "kd.command"  # the command line that started (or continued) it, for a reproduction record
    SEEDS = "kd.seeds"
    SETTING = "kd.setting"
    SEARCH = "kd.search"
    PAPER = "kd.paper"
    TEACHER_RUNS = "kd.teacher_runs"


class Param:
    """The params kd-sweep reads back. A trial's params are its config's values, one dotted name each
    (trials.flat_params), so only the few read by name are here."""
    EPOCHS = "train.epochs"
    METHOD = "method"
    # Runs logged before the resources became tags have them as params.
    GPU = "resources.gpu"
    CPU = "resources.cpu"

    @staticmethod
    def knob(name: str) -> str:
        return f"knobs.{name}"


# The experiment tag MLflow's UI loads a saved runs-table view from when a link names its key
# (orchestrator/ui.py writes one per sweep).
VIEW_KEY = "kd-sweep"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"

# Result keys that become metrics: the trainable's per-epoch names; the rest of a Tune result is Ray's.
METRIC_PREFIXES = ("train/", "eval/", "pretrain/", "cost/", "curve/")
# Result keys that become tags of the trial's run: where it ran.
RESULT_TAGS = {"device": Tag.DEVICE, "node": Tag.NODE}
# The versions that decided a run's numbers (trainables.versions): a tag `kd.versions.<name>` each, on a
# trial's run its worker's, on a parent run the driver's.
VERSIONS_PREFIX = "kd.versions."


def version_tags(versions: dict[str, str]) -> dict[str, str]:
    return {f"{VERSIONS_PREFIX}{name}": str(v) for name, v in versions.items()}


def run_versions(tags: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix(VERSIONS_PREFIX): v for k, v in tags.items() if k.startswith(VERSIONS_PREFIX)}


def is_result_tag(name: str) -> bool:
    return name in RESULT_TAGS.values() or name.startswith(VERSIONS_PREFIX)


# Reported every epoch: its history's steps are the epochs a run logged, its values the time they took.
WALL_METRIC = "cost/wall_s"


class Role(StrEnum):
    """`kd.role`: a trial's role as its config names it, or "sweep" for a parent run."""
    SWEEP = "sweep"
    TEACHER = "teacher"
    STUDENT = "student"
    SCRATCH = "scratch"


class State(StrEnum):
    """`kd.state` of a trial's run: how it ended, which MLflow's status alone does not say."""
    DONE = "done"  # trained (or scored) to its last epoch; FINISHED
    REUSED = "reused"  # a link to the run of an earlier sweep that finished this very config; FINISHED
    STOPPED_EARLY = "stopped_early"  # the scheduler (ASHA) stopped it; KILLED
    INTERRUPTED = "interrupted"  # its driver stopped (Ctrl-C, SIGTERM, a kill) mid-trial; KILLED
    CLUSTER_LOST = "cluster_lost"  # its Ray cluster was lost mid-trial (head node down, GCS killed); KILLED
    FAILED = "failed"  # kd.error says why; FAILED


class Status(StrEnum):
    """MLflow's run status, as kd-sweep sets and reads it."""
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


# --- conventions -----------------------------------------------------------------------------------

SMOKE_SUFFIX = "-smoke"  # `kd-sweep run FILE --smoke` logs to the experiment `<name>-smoke`


def run_name(cfg: dict) -> str:
    """A trial's run name (trials.run_label), or its file-safe name for configs without one."""
    return cfg["labels"].get("run", cfg["name"])


def link_name(cfg: dict) -> str:
    """The name of a run that links to the earlier run that finished this config: it says it is a link."""
    return f"{run_name(cfg)} (reused)"


def cell_tag(cell: dict) -> str:
    """`kd.cell`: the grid cell's knobs, keyed the same whatever their order."""
    return json.dumps(cell, sort_keys=True)


def cell_of(tags: dict) -> dict:
    return json.loads(tags[Tag.CELL])


def smoke_tags(smoke: bool) -> dict[str, str]:
    return {Tag.SMOKE: str(smoke).lower()}


def is_smoke(parent) -> bool:
    return parent.data.tags.get(Tag.SMOKE, "false").lower() == "true"


def teacher_runs(parent) -> dict[str, str]:
    """teacher weights hash -> the teacher run a sweep's students used (wherever it was trained)."""
    return json.loads(parent.data.tags.get(Tag.TEACHER_RUNS, "{}"))


def holds_result(run) -> bool:
    """A trial's run with a result to count: FINISHED as done here or as a link (not a parent run, nor
    one closed by hand in the UI)."""
    return run.info.status == Status.FINISHED and run.data.tags.get(Tag.STATE) in (State.DONE, State.REUSED)


# --- searches --------------------------------------------------------------------------------------

def tag_is(tag: str, value: str) -> str:
    """A search filter clause."""
    return f"tags.`{tag}` = '{value}'"


def tag_is_not(tag: str, value: str) -> str:
    return f"tags.`{tag}` != '{value}'"


def status_is(status: Status) -> str:
    return f"attributes.status = '{status}'"


def child_of(parent_id: str) -> str:
    """The filter of a parent run's trials."""
    return tag_is(Tag.PARENT, parent_id)


PARENTS = tag_is(Tag.ROLE, Role.SWEEP)


def experiments(client) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def all_runs(client, experiment_ids: list[str], filter_string: str, newest_first: bool = False) -> list:
    """Every run matching, page after page (MLflow hands back at most 1000 a page), the earliest first
    unless NEWEST_FIRST."""
    order = ["attributes.start_time DESC" if newest_first else "attributes.start_time ASC"]
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, order_by=order, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def latest_run(client, experiment_ids: list[str], filter_string: str):
    """The newest run matching, or None."""
    runs = client.search_runs(experiment_ids, filter_string=filter_string, order_by=["attributes.start_time DESC"],
                              max_results=1)
    return runs[0] if runs else None


def parents(client, experiment_ids: list[str] | None = None) -> list:
    """Every parent run (one per `kd-sweep run`) in EXPERIMENT_IDS (default: every experiment), the latest
    first."""
    return all_runs(client, experiment_ids or experiments(client), PARENTS, newest_first=True)


def children(client, parent) -> list:
    """A parent run's trials, the earliest first."""
    return all_runs(client, [parent.info.experiment_id], child_of(parent.info.run_id))


def has_view(client, exp_id: str) -> bool:
    return VIEW_TAG in client.get_experiment(exp_id).tags


def latest_parent(client, sweep: str | None, smoke: bool | None = False):
    """The latest parent run of SWEEP (or of any sweep). Smoke runs (parent tag kd.smoke = "true")
    and real ones are never mixed: the latest real one by default, the latest smoke one with `smoke`;
    with `smoke` None (`status`), the latest of either."""
    if sweep is None:
        exps = experiments(client)
    else:
        # `status` (smoke None) looks in both; `--smoke` in `<name>-smoke` too, unless it names that one.
        both = smoke is None or (smoke and not sweep.endswith(SMOKE_SUFFIX))
        names = [sweep, f"{sweep}{SMOKE_SUFFIX}"] if both else [sweep]
        exps = [e.experiment_id for e in map(client.get_experiment_by_name, names) if e is not None]
        if not exps:
            known = sorted({r.data.tags.get(Tag.SWEEP) for r in parents(client)} - {None})
            raise NoRuns(f"no sweep named {sweep!r} in {client.tracking_uri}"
                         f" (sweeps there: {', '.join(known) or 'none'})")
    runs = parents(client, exps)
    where = f" for sweep {sweep!r}" if sweep else ""
    if not runs:
        raise NoRuns(f"no kd-sweep runs in {client.tracking_uri}{where}; run `kd-sweep run SWEEP.yaml` first")
    kind = [r for r in runs if smoke is None or is_smoke(r) == smoke]
    if not kind:
        if smoke:
            raise NoRuns(f"no smoke run{where} in {client.tracking_uri} (only real runs: drop --smoke)")
        raise NoRuns(f"only smoke runs{where} in {client.tracking_uri}: `--smoke` reports the latest of them")
    return kind[0]
