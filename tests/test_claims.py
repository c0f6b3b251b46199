"""Claims per config hash (orchestrator/claims.py): atomic across drivers on sqlite and on a team's MLflow
server over PostgreSQL, taken over from a dead driver, kept by a resumed parent; and two identical sweeps
started together through `kd-sweep run` train each config once."""
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import mlflow
import pytest

from orchestrator.claims import OWNER, PREFIX, Claims
from results.mlflow_schema import Status, Tag

from .conftest import REPO, digits_coss_sweep, trained_counts

HASHES = [f"{i:016x}" for i in range(40)]


def _race(uri: str, start, out, reverse: bool) -> None:
    """One driver: its own parent run, then claims on every hash as soon as START opens."""
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("race")
    parent = client.create_run(exp.experiment_id).info.run_id
    claims = Claims(client, parent, "race")
    start.wait()
    got = [h for h in (HASHES[::-1] if reverse else HASHES) if claims.take(h) is None]
    out.put((parent, got))


@pytest.fixture(params=["sqlite", "postgres-server"])
def store_uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/mlflow.db"
    return request.getfixturevalue("team_server")


def test_of_four_drivers_claiming_the_same_configs_at_once_each_config_goes_to_exactly_one(store_uri):
    client = mlflow.MlflowClient(store_uri)
    if client.get_experiment_by_name("race") is None:
        client.create_experiment("race")
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(store_uri, start, out, i % 2 == 1)) for i in range(4)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # every driver has made its parent run and waits at the line
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    owners: dict[str, list[str]] = {}
    for parent, got in results:
        for h in got:
            owners.setdefault(h, []).append(parent)
    assert sorted(owners) == sorted(HASHES), "every config was claimed"
    assert all(len(v) == 1 for v in owners.values()), {h: v for h, v in owners.items() if len(v) > 1}
    assert len({parent for parent, got in results if got}) >= 2, "the drivers really raced"
    # The claims are no experiments anyone browses.
    assert not [e.name for e in client.search_experiments() if e.name.startswith(PREFIX)]


def test_a_dead_drivers_claim_is_taken_over_and_a_resumed_parent_keeps_its_own(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("s")
    parent = lambda: client.create_run(exp).info.run_id  # noqa: E731
    a, b, c = (Claims(client, parent(), name) for name in "abc")
    h = HASHES[0]
    assert a.take(h) is None
    held = b.take(h)
    assert held is not None and held.parent == a.parent and held.sweep == "a" and held.alive
    assert Claims(client, a.parent, "a").take(h) is None, "a resumed attempt of the same parent run holds it"
    # The holder's driver is gone (its parent run ended): reported dead, taken over only when asked.
    client.set_terminated(a.parent, Status.KILLED)
    held = b.take(h)
    assert held is not None and held.parent == a.parent and not held.alive
    assert b.take(h, over_dead=True) is None
    assert c.take(h).parent == b.parent, "the takeover is the claim now"
    assert c.take(h, over_dead=True).parent == b.parent, "a live holder is not taken over for being asked"
    assert c.take(h, force=True) is None  # its run of the config ended unfinished: the waiter trains it
    generations = [e.name for e in client.search_experiments(view_type=mlflow.entities.ViewType.ALL)
                   if e.name.startswith(PREFIX + h)]
    assert sorted(generations) == [f"{PREFIX}{h}/{g}" for g in range(3)]


def test_a_driver_on_another_machine_is_alive_while_its_heartbeat_is_fresh(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("s")
    far = Claims(client, client.create_run(exp).info.run_id, "far")
    far.owner = json.dumps({**json.loads(far.owner), "host": "another-machine", "pid": 1})
    near = Claims(client, client.create_run(exp).info.run_id, "near")
    h = HASHES[1]
    assert far.take(h) is None
    client.set_tag(far.parent, Tag.HEARTBEAT, f"{time.time():.0f}")
    assert near.take(h).alive
    client.set_tag(far.parent, Tag.HEARTBEAT, f"{time.time() - 600:.0f}")
    assert not near.take(h).alive
    tags = client.get_experiment_by_name(f"{PREFIX}{h}/0").tags
    assert json.loads(tags[OWNER])["host"] == "another-machine"


def test_two_identical_sweeps_started_together_train_each_config_once(store_uri, tmp_path):
    """Same configs, different names, one store, started 0.1 s apart through `kd-sweep run`: the teacher
    and every student are trained by one of them; the other waits, links, and prints the same table."""
    for n in "ab":
        (tmp_path / f"{n}.yaml").write_text(digits_coss_sweep(f"twin_{n}", "[0, 0.5]", 3, pack="off"))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    procs = []
    for n in "ab":
        procs.append(subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", f"{n}.yaml",
                                       "--tracking-uri", store_uri], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(0.1)
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    client = mlflow.MlflowClient(store_uri)
    trained = trained_counts(client, ["twin_a", "twin_b"])
    assert len(trained) == 3 and set(trained.values()) == {1}, (trained, outs)
    assert any("waits for them and links them" in o for o in outs), outs
    tables = [o[o.index("| teacher/student"):o.index("twin_", o.index("| teacher/student"))] for o in outs]
    assert tables[0] == tables[1], outs


def test_a_sweep_waiting_on_a_driver_that_is_killed_takes_its_trials_over(tmp_path):
    """Sweep b waits on the teacher sweep a is training; a's driver is SIGKILLed (its parent run stays
    RUNNING, as after a power cut): b sees the driver gone, claims the teacher, trains it and the rest."""
    import signal

    slow = digits_coss_sweep("killed", "[0, 0.5]", 2, pack="off").replace("teacher_train: {epochs: 2", "teacher_train: {epochs: 250")
    (tmp_path / "a.yaml").write_text(slow)
    (tmp_path / "b.yaml").write_text(slow.replace("name: killed", "name: waiter"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    client.search_experiments()  # the store's tables made before the drivers open it
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1"}
    cmd = lambda f: [sys.executable, "-m", "orchestrator.cli", "run", f, "--tracking-uri", uri]  # noqa: E731
    a_log = open(tmp_path / "a.log", "w")
    a = subprocess.Popen(cmd("a.yaml"), cwd=tmp_path, env=env, stdout=a_log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    deadline = time.time() + 120
    while not [e for e in client.search_experiments(view_type=mlflow.entities.ViewType.ALL) if e.name.startswith(PREFIX)]:
        assert a.poll() is None and time.time() < deadline, (tmp_path / "a.log").read_text()
        time.sleep(0.2)
    b = subprocess.Popen(cmd("b.yaml"), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    seen = []
    for line in b.stdout:
        seen.append(line)
        if "waits for them and links them" in line:
            break
    os.killpg(a.pid, signal.SIGKILL)
    a.wait(30)
    rest, _ = b.communicate(timeout=400)
    out = "".join(seen) + rest
    assert b.returncode == 0, out
    assert "sweep 'killed'" in out and "stopped before finishing it; training it here" in out, out
    trained = trained_counts(client, ["killed", "waiter"])
    assert len(trained) == 3 and set(trained.values()) == {1}, (trained, out)
