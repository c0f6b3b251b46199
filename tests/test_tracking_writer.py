"""The MLflow writer on its own: Tune's trial events, from fake trials carrying the configs the driver
really makes, into a real sqlite store; what lands there is what `report`, `status` and a continued
sweep read back. No Ray starts: the callback is driven by hand."""
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient

from orchestrator import packing
from orchestrator.spec import load_sweep
from orchestrator.tracking import Store, make_callback, trial_tags
from orchestrator.trials import _dataset, flat_params, student_trials, teacher_trial
from results.mlflow_schema import Role, State, Status, Tag, children, latest_parent
from trainables.tune_trial import FAILED, MEMBERS, REUSED

SWEEP = """\
name: writer
dataset: {name: digits}
pairs:
  - teacher: {model: mlp, hidden: [64]}
    student: {model: mlp, hidden: [32]}
method: coss
knobs: {beta: 1.0}
grid:
  lambda: [0, 0.5]
seeds: [0]
train: {epochs: 2, batch_size: 64, lr: 0.05, milestones: []}
teacher_train: {epochs: 2, batch_size: 64, lr: 0.05, milestones: []}
eval:
  knn: {k: 10, temperature: 0.07}
resources: {cpu: 1, gpu: 0}
pack: off
"""


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """(sweep, teacher config, student configs) as the driver makes them from the file."""
    path = tmp_path_factory.mktemp("sweep") / "writer.yaml"
    path.write_text(SWEEP)
    sweep = load_sweep(path)
    data = _dataset(sweep, "/data", "f")
    teacher = teacher_trial(sweep, sweep.pairs[0].teacher, data, None)
    return sweep, teacher, student_trials(sweep, data, {0: teacher["weights_hash"]})


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """A new store's file, its tables made: MLflow takes seconds to create them."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path.parent)
        Store(f"sqlite:///{path}")
    return path


@pytest.fixture
def store(empty_store, tmp_path, monkeypatch):
    """A store of its own per test: finished runs of one test must not be found by another's searches.
    Run from TMP_PATH: a sqlite store's artifacts go to ./mlruns."""
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    return Store(f"sqlite:///{tmp_path}/mlflow.db")


@pytest.fixture
def parent(store):
    """A new `kd-sweep run` of the sweep: (experiment id, parent run id)."""
    exp = store.experiment("writer")
    return exp, store.start_parent(exp, "writer", SWEEP, 2, {Tag.SWEEP_KEY: "k"})


class FakeCheckpoint:
    def __init__(self, folder):
        self.folder = folder

    @contextmanager
    def as_directory(self):
        yield str(self.folder)


def fake_trial(config: dict, checkpoint=None, error: Exception | None = None):
    """What the callback reads of a Tune trial."""
    return SimpleNamespace(config={"trial": config}, checkpoint=checkpoint, last_result=None, error_file=None,
                           get_pickled_error=lambda: error)


def epoch_result(epoch: int, final: bool = False) -> dict:
    """A trainable's report of one epoch, with Ray's own keys beside it (never logged as metrics)."""
    out = {"epoch": epoch, "train/loss": 2.0 / epoch, "train/lr": 0.05, "eval/classifier_top1": 40.0 + epoch,
           "cost/wall_s": 1.5 * epoch, "device": "cpu", "node": "node-1",
           "training_iteration": epoch, "time_this_iter_s": 0.2, "done": False, "should_checkpoint": True}
    if final:
        out.update({"eval/knn_top1": 55.5, "eval/classifier_top1_best": 42.0})
    return out


def history(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def the_child(store: Store, exp: str, parent_id: str):
    (run,) = store.children(exp, parent_id)
    return run


def test_a_trained_trial_is_a_child_run_with_its_params_tags_curves_and_weights(store, plan, parent, tmp_path):
    _, _, students = plan
    exp, parent_id = parent
    cfg = students[1]  # lambda 0.5
    client = store.client
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "model.pt").write_bytes(b"weights")
    trial = fake_trial(cfg, FakeCheckpoint(tmp_path / "checkpoint"))
    callback = make_callback(store, exp, parent_id, None, {Tag.SMOKE: "false"})

    callback.on_trial_start(0, [], trial)
    run = the_child(store, exp, parent_id)
    assert run.info.status == Status.RUNNING and Tag.STATE not in run.data.tags
    assert run.data.tags[Tag.PARENT] == parent_id and run.info.experiment_id == exp
    assert run.info.run_name == cfg["labels"]["run"] == "λ=0.5 · s0"
    assert run.data.params == flat_params(cfg) and run.data.params["knobs.lambda"] == "0.5"
    assert run.data.tags.items() >= {**trial_tags(cfg), Tag.SMOKE: "false"}.items()
    assert run.data.tags[Tag.ROLE] == Role.STUDENT and json.loads(run.data.tags[Tag.CELL]) == {"lambda": 0.5}
    config = json.loads(open(client.download_artifacts(run.info.run_id, "config.json")).read())
    assert config["config_hash"] == cfg["config_hash"] == run.data.tags[Tag.CONFIG_HASH]

    callback.on_trial_result(0, [], trial, epoch_result(1))
    callback.on_trial_result(0, [], trial, epoch_result(2, final=True))
    run = client.get_run(run.info.run_id)
    assert run.info.status == Status.RUNNING and Tag.STATE not in run.data.tags  # still training
    assert history(client, run.info.run_id, "train/loss") == [(1, 2.0), (2, 1.0)]
    assert history(client, run.info.run_id, "cost/wall_s") == [(1, 1.5), (2, 3.0)]
    assert history(client, run.info.run_id, "eval/knn_top1") == [(2, 55.5)]
    assert run.data.tags[Tag.DEVICE] == "cpu" and run.data.tags[Tag.NODE] == "node-1"

    callback.on_trial_complete(0, [], trial)
    run = client.get_run(run.info.run_id)
    assert run.info.status == Status.FINISHED and run.data.tags[Tag.STATE] == State.DONE
    # The run's final metrics: the last epoch's numbers, nothing of Ray's.
    assert run.data.metrics == {k: v for k, v in epoch_result(2, final=True).items()
                                if k.startswith(("train/", "eval/", "cost/"))}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "student")] == ["student/model.pt"]
    assert Tag.ERROR not in run.data.tags and Tag.REUSED_FROM not in run.data.tags

    # A second event for a closed trial changes nothing; the readers find it under its parent.
    callback.on_trial_error(0, [], fake_trial(cfg, error=RuntimeError("late")))
    assert client.get_run(run.info.run_id).data.tags[Tag.STATE] == State.DONE
    store.finish(parent_id)
    assert latest_parent(client, "writer").info.run_id == parent_id
    assert [r.info.run_id for r in children(client, client.get_run(parent_id))] == [run.info.run_id]


def test_a_failed_trial_is_failed_with_its_reason(store, plan, parent):
    _, _, students = plan
    exp, parent_id = parent
    callback = make_callback(store, exp, parent_id)
    crashed = fake_trial(students[0], error=RuntimeError("CUDA out of memory"))
    callback.on_trial_start(0, [], crashed)
    callback.on_trial_result(0, [], crashed, epoch_result(1))
    callback.on_trial_error(0, [], crashed)
    run = the_child(store, exp, parent_id)
    assert run.info.status == Status.FAILED and run.data.tags[Tag.STATE] == State.FAILED
    assert run.data.tags[Tag.ERROR] == "RuntimeError: CUDA out of memory"
    assert history(store.client, run.info.run_id, "train/loss") == [(1, 2.0)]  # what it logged stays

    # Failed inside the trainable (a non-finite loss): the result says so, and at which epoch.
    diverged = fake_trial(students[1])
    callback.on_trial_start(0, [], diverged)
    callback.on_trial_result(0, [], diverged, {"epoch": 1, FAILED: "loss is nan at epoch 1", "device": "cpu"})
    (run,) = [r for r in store.children(exp, parent_id) if r.data.tags[Tag.CONFIG_HASH] == students[1]["config_hash"]]
    assert run.info.status == Status.FAILED and run.data.tags[Tag.STATE] == State.FAILED
    assert run.data.tags[Tag.ERROR] == "loss is nan at epoch 1" and run.data.tags[Tag.FAILED_EPOCH] == "1"


def test_a_stopped_trial_is_killed_and_a_restarted_one_continues_its_run(store, plan, parent):
    _, _, students = plan
    exp, parent_id = parent
    early, cut = fake_trial(students[0]), fake_trial(students[1])
    callback = make_callback(store, exp, parent_id)
    for trial in (early, cut):
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, epoch_result(1))
    callback.on_trial_complete(0, [], early)  # at epoch 1 of 2: the scheduler stopped it
    assert callback.close_unfinished() == 1  # Ctrl-C: the other one had not finished
    runs = {r.data.tags[Tag.CONFIG_HASH]: r for r in store.children(exp, parent_id)}
    stopped, interrupted = runs[students[0]["config_hash"]], runs[students[1]["config_hash"]]
    assert stopped.info.status == Status.KILLED and stopped.data.tags[Tag.STATE] == State.STOPPED_EARLY
    assert interrupted.info.status == Status.KILLED and interrupted.data.tags[Tag.STATE] == State.INTERRUPTED

    # The continued sweep's callback finds the interrupted trial's run: RUNNING again, and no second run.
    again = make_callback(store, exp, parent_id)
    again.on_trial_start(0, [], cut)
    assert store.client.get_run(interrupted.info.run_id).info.status == Status.RUNNING
    again.on_trial_result(0, [], cut, epoch_result(2, final=True))
    again.on_trial_complete(0, [], cut)
    run = store.client.get_run(interrupted.info.run_id)
    assert run.info.status == Status.FINISHED and run.data.tags[Tag.STATE] == State.DONE
    assert history(store.client, run.info.run_id, "train/loss") == [(1, 2.0), (2, 1.0)]
    assert len(store.children(exp, parent_id)) == 2


def test_a_pack_gives_each_student_its_run_and_weights(store, plan, parent, tmp_path):
    _, _, students = plan
    exp, parent_id = parent
    (unit,) = packing.plan(students, 2, 1)  # both students share one trial
    (tmp_path / "checkpoint").mkdir()
    for cfg in students:
        (tmp_path / "checkpoint" / f"model_{cfg['config_hash']}.pt").write_bytes(cfg["config_hash"].encode())
    trial = fake_trial(unit, FakeCheckpoint(tmp_path / "checkpoint"))
    callback = make_callback(store, exp, parent_id)
    callback.on_trial_start(0, [], trial)
    for epoch in (1, 2):
        member = {k: v for k, v in epoch_result(epoch).items() if k not in ("device", "node")}
        callback.on_trial_result(0, [], trial, {"epoch": epoch, "device": "cpu", "node": "node-1",
                                               MEMBERS: {c["config_hash"]: member for c in students}})
    callback.on_trial_complete(0, [], trial)
    runs = store.children(exp, parent_id)
    assert sorted(r.data.tags[Tag.CONFIG_HASH] for r in runs) == sorted(c["config_hash"] for c in students)
    for run in runs:
        assert run.info.status == Status.FINISHED and run.data.tags[Tag.STATE] == State.DONE
        assert run.data.tags[Tag.PACK] == unit["name"] and run.data.tags[Tag.PACK_SIZE] == "2"
        assert run.data.tags[Tag.DEVICE] == "cpu"  # the pack's, on each student
        assert history(store.client, run.info.run_id, "train/loss") == [(1, 2.0), (2, 1.0)]
        weights = store.download(run.info.run_id, "student/model.pt")  # renamed from model_<hash>.pt
        assert open(weights, "rb").read() == run.data.tags[Tag.CONFIG_HASH].encode()


def test_a_trial_finished_before_is_linked_with_its_curves(store, plan, parent):
    """Two ways: `run` links a finished config into a new parent (Store.link), and a search that samples
    a config finished before reports the run it reuses (REUSED)."""
    _, teacher, students = plan
    exp, first = parent
    callback = make_callback(store, exp, first)
    trained = fake_trial(students[0])
    callback.on_trial_start(0, [], trained)
    for epoch in (1, 2):
        callback.on_trial_result(0, [], trained, epoch_result(epoch, final=epoch == 2))
    callback.on_trial_complete(0, [], trained)
    source = the_child(store, exp, first)
    store.finish(first)

    second = store.start_parent(exp, "writer", SWEEP, 2, {Tag.SWEEP_KEY: "k"})
    found = store.find_finished({students[0]["config_hash"], students[1]["config_hash"]})
    assert [r.info.run_id for r in found[students[0]["config_hash"]]] == [source.info.run_id]
    linked = store.client.get_run(store.link(exp, second, students[0], found[students[0]["config_hash"]][0],
                                             {Tag.SMOKE: "false"}))
    assert linked.info.status == Status.FINISHED and linked.data.tags[Tag.STATE] == State.REUSED
    assert linked.data.tags[Tag.REUSED_FROM] == source.info.run_id and linked.data.tags[Tag.PARENT] == second
    assert linked.info.run_name == f"{students[0]['labels']['run']} (reused)"
    assert linked.data.params == flat_params(students[0]) and linked.data.metrics == source.data.metrics
    assert history(store.client, linked.info.run_id, "train/loss") == [(1, 2.0), (2, 1.0)]

    # A searched trial that sampled the config again: it reports the run it reuses, and its own run becomes
    # a link with the original's curves.
    third = store.start_parent(exp, "writer", SWEEP, 2, {Tag.SWEEP_KEY: "k"})
    callback = make_callback(store, exp, third)
    sampled = fake_trial(students[0])
    callback.on_trial_start(0, [], sampled)
    callback.on_trial_result(0, [], sampled, {"epoch": 2, REUSED: source.info.run_id, "eval/knn_top1": 1.0})
    assert history(store.client, the_child(store, exp, third).info.run_id, "eval/knn_top1") == []
    callback.on_trial_complete(0, [], sampled)
    run = the_child(store, exp, third)
    assert run.info.status == Status.FINISHED and run.data.tags[Tag.STATE] == State.REUSED
    assert run.data.tags[Tag.REUSED_FROM] == source.info.run_id
    assert run.info.run_name == f"{students[0]['labels']['run']} (reused)"
    assert history(store.client, run.info.run_id, "eval/knn_top1") == [(2, 55.5)]  # the original's, not 1.0


def test_teachers_are_found_by_either_key_once_finished(store, plan, parent):
    _, teacher, _ = plan
    exp, parent_id = parent
    callback = make_callback(store, exp, parent_id)
    trial = fake_trial(teacher)
    callback.on_trial_start(0, [], trial)
    assert store.find_teacher("config_hash", teacher["config_hash"]) is None  # not finished yet
    callback.on_trial_result(0, [], trial, epoch_result(2, final=True))
    callback.on_trial_complete(0, [], trial)
    run = the_child(store, exp, parent_id)
    assert run.data.tags[Tag.ROLE] == Role.TEACHER and run.data.tags[Tag.WEIGHTS_HASH] == teacher["weights_hash"]
    assert store.find_teacher("config_hash", teacher["config_hash"]).info.run_id == run.info.run_id
    assert store.find_teacher("weights_hash", teacher["weights_hash"]).info.run_id == run.info.run_id


def test_a_continued_search_reads_what_its_parent_finished_and_closes_what_it_left_running(store, plan, parent):
    """runner._searched: what the sampler is told of the stopped driver's trials."""
    from orchestrator.runner import _searched

    _, _, students = plan
    exp, parent_id = parent
    callback = make_callback(store, exp, parent_id)
    finished, left = fake_trial(students[0]), fake_trial(students[1])
    for trial in (finished, left):
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(0, [], trial, epoch_result(1))
    callback.on_trial_result(0, [], finished, epoch_result(2, final=True))
    callback.on_trial_complete(0, [], finished)
    assert _searched(store, exp, parent_id, "eval/knn_top1") == [({"lambda": 0.0}, 55.5)]
    (run,) = [r for r in store.children(exp, parent_id) if r.data.tags[Tag.CONFIG_HASH] == students[1]["config_hash"]]
    assert run.info.status == Status.KILLED and run.data.tags[Tag.STATE] == State.INTERRUPTED


def test_the_schema_spells_mlflows_own_tags_as_mlflow_does():
    """results.mlflow_schema spells them out rather than import MLflow; they must not drift apart."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

    assert (Tag.PARENT, Tag.RUN_NAME, Tag.NOTE) == (MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE)
