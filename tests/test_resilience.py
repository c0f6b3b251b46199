"""Sweeps that survive their driver and their trials: a SIGKILLed driver continues where it stopped,
finished trials are never run twice, a crashed trial resumes from its checkpoint, a diverging one
fails at once with its reason, and every trial has exactly one MLflow run."""
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.tracking import Store

from .conftest import digits_coss_sweep, kd_sweep, mlflow_server, stop_server as stop


def children(client: MlflowClient, parent: str) -> list:
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}'")


def parents(client: MlflowClient) -> list:
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, "tags.`kd.role` = 'sweep'", order_by=["attributes.start_time ASC"])


def start_driver(tmp_path):
    """`kd-sweep run s.yaml` in TMP_PATH as its own process group, epochs slowed so that a test can stop it
    midway: (store URI, env, command, process)."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KD_SWEEP_FAULT": "slow:0.4"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "s.yaml", "--tracking-uri", uri]
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    return uri, env, cmd, driver


def watch(client: MlflowClient, driver, seconds: float = 240):
    """The child runs of the latest parent, every half second while the driver runs."""
    deadline = time.time() + seconds
    while time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
        try:
            ps = parents(client)
            yield children(client, ps[-1].info.run_id) if ps else []
        except Exception:  # noqa: BLE001 - the store may not exist yet
            continue


def epochs_logged(client: MlflowClient, run_id: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, "cost/wall_s")]  # reported every epoch


@pytest.mark.parametrize("pack", ["off", 2])
def test_killed_driver_resumes_and_a_second_run_links_every_trial(tmp_path, pack):
    """Packed (two packs of two students), every student resumes from its pack's checkpoint."""
    (tmp_path / "s.yaml").write_text(digits_coss_sweep("resilience", "[0, 0.25, 0.5, 1.0]", 8, pack))
    uri, env, cmd, driver = start_driver(tmp_path)
    client = Store(uri).client  # kd-sweep's opener: the driver is creating this store right now
    # Kill once a student trial has finished and another has an epoch checkpoint but has not finished.
    killed_with = None
    for kids in watch(client, driver):
        students = [r for r in kids if r.data.tags.get("kd.role") == "student"]
        done = [r for r in students if r.info.status == "FINISHED"]
        going = [r for r in students if r.info.status == "RUNNING" and epochs_logged(client, r.info.run_id)]
        if going and (done or pack != "off"):  # a pack's students finish together
            killed_with = ({r.info.run_id for r in done}, {r.info.run_id for r in going})
            os.kill(driver.pid, signal.SIGKILL)  # the driver only: as a lost head node would
            break
    driver.wait(timeout=60)
    assert killed_with, "the sweep never reached a state with finished and running trials:\n" + driver.stdout.read()
    finished_before, running_before = killed_with

    # `status` from MLflow alone: the dead driver's trials show as stopped, with the way to continue.
    st = kd_sweep("status", "resilience", "--tracking-uri", uri, cwd=tmp_path)
    assert "stopped before the end: run the same file again" in st.stdout, st.stdout + st.stderr
    assert st.stdout.count(" done ") >= 1 and "stopped  at epoch" in st.stdout

    again = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "continuing parent run" in again.stdout
    # An unfinished trial resumed from its checkpoint, not epoch 0.
    assert "from its epoch" in again.stdout, f"killed with {killed_with}:\n{again.stdout}"

    (parent,) = parents(client)  # one parent: the second driver continued the first's
    assert parent.info.status == "FINISHED" and parent.data.tags["kd.attempt"] == "2"
    kids = children(client, parent.info.run_id)
    students = [r for r in kids if r.data.tags["kd.role"] == "student"]
    # Exactly one run per trial, all finished, every epoch logged exactly once.
    assert Counter(r.data.tags["kd.config_hash"] for r in kids).most_common(1)[0][1] == 1
    assert len(students) == 4 and all(r.info.status == "FINISHED" for r in students)
    for r in students:
        steps = epochs_logged(client, r.info.run_id)
        # Every epoch exactly once across the two drivers: the checkpoint's own epoch included, which the
        # resumed trial never reports again and the killed driver may not have logged.
        assert steps == list(range(1, 9)), (r.info.run_name, steps)
        for name in ("train/loss", "eval/knn_top1"):
            assert len(client.get_metric_history(r.info.run_id, name)) >= (8 if name == "train/loss" else 1)
    assert running_before <= {r.info.run_id for r in students}  # continued, not duplicated
    assert finished_before <= {r.info.run_id for r in students}  # finished ones kept, not run again

    if pack != "off":
        assert all(r.data.tags["kd.pack_size"] == "2" for r in students)
        return  # what follows does not depend on packing
    nothing = kd_sweep("run", "s.yaml", "--resume", "--tracking-uri", uri, cwd=tmp_path)
    assert nothing.returncode == 1 and "nothing to resume" in nothing.stderr

    # The same sweep again: complete, so nothing is written and Ray never starts.
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()], ""))
    third = kd_sweep("run", "s.yaml", "--tracking-uri", uri, cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "'resilience' is complete" in third.stdout and "Token authentication" not in third.stdout + third.stderr
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()], "")) == before

    # Another sweep with the same trials: every trial is linked from the finished ones, none runs, same table.
    first = kd_sweep("report", "resilience", "--metric", "knn_top1", "--tracking-uri", uri, cwd=tmp_path)
    (tmp_path / "s2.yaml").write_text((tmp_path / "s.yaml").read_text().replace("name: resilience", "name: other"))
    fourth = kd_sweep("run", "s2.yaml", "--tracking-uri", uri, cwd=tmp_path)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert "4 trial(s) finished in an earlier sweep: linked" in fourth.stdout
    assert "trials to run" not in fourth.stdout
    second = kd_sweep("report", "other", "--metric", "knn_top1", "--tracking-uri", uri, cwd=tmp_path)
    table = lambda out: [ln for ln in out.splitlines() if ln.startswith("|")]  # noqa: E731
    assert table(second.stdout) == table(first.stdout) and len(table(first.stdout)) == 3
    latest = parents(client)[-1]
    linked = children(client, latest.info.run_id)
    assert len(linked) == 4 and all(r.data.tags["kd.state"] == "reused" for r in linked)
    assert {r.data.tags["kd.reused_from"] for r in linked} == {r.info.run_id for r in students}
    # Each link carries its original's whole curves, and a name that says it is a link.
    assert all(epochs_logged(client, r.info.run_id) == list(range(1, 9)) for r in linked)
    assert all(r.info.run_name.endswith(" (reused)") for r in linked)


@pytest.mark.parametrize("pack", ["off", 2])
def test_a_diverging_trial_fails_at_once_and_a_crashed_one_resumes_from_its_checkpoint(tmp_path, pack):
    """Packed, the diverging student fails alone and the crash retries the pack from its checkpoint."""
    (tmp_path / "s.yaml").write_text(digits_coss_sweep("resilience", "[1.0, 1.0e+30]", 3, pack))
    faults = tmp_path / "faults"
    logs = tmp_path / "logs"
    res = kd_sweep("run", "s.yaml", cwd=tmp_path, env={"KD_SWEEP_FAULT": f"crash:2:{faults}", "KD_SWEEP_LOGS": str(logs)})
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout
    # Tune's traceback of each failure goes to the log file the summary names, not to the terminal.
    assert "Traceback" not in res.stderr, res.stderr
    (log,) = logs.iterdir()
    assert f"  tracebacks: {log}" in out.split("1 trial(s) failed")[1]
    assert "Trial task failed for trial" in log.read_text() and "Traceback" in log.read_text()
    assert log.stat().st_mode & 0o777 == 0o600
    assert f"retry  {'student_lambda=1.0_' if pack == 'off' else 'pack2_coss_s0_'}" in out
    assert "1 trial(s) failed" in out
    assert "λ=1e+30 · s0: loss is not finite" in out.split("1 trial(s) failed")[1]
    assert "loss is not finite at epoch 1" in out.split("1 trial(s) failed")[1]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (parent,) = parents(client)
    assert parent.info.status == "FAILED"
    runs = {r.data.tags["kd.cell"]: r for r in children(client, parent.info.run_id)
            if r.data.tags["kd.role"] == "student"}
    ok, nan = runs['{"lambda": 1.0}'], runs['{"lambda": 1e+30}']
    # Crashed at the start of epoch 2, retried from the epoch 1 checkpoint: epoch 1 ran once.
    assert ok.info.status == "FINISHED" and epochs_logged(client, ok.info.run_id) == [1, 2, 3]
    # Diverged: failed at once with its reason and epoch; never retried (max_failures is 2).
    assert nan.info.status == "FAILED" and nan.data.tags["kd.failed_epoch"] == "1"
    assert "loss is not finite at epoch 1" in nan.data.tags["kd.error"]
    assert "retry  student_lambda=1e+30" not in out
    assert len(list(faults.iterdir())) == 2  # the teacher and the good student (or its pack) crashed once each

    st = kd_sweep("status", cwd=tmp_path)
    assert st.returncode == 1 and "2 done, 1 failed" in st.stdout  # the teacher and one student
    assert "failed   loss is not finite at epoch 1" in st.stdout


def test_a_second_driver_on_a_running_sweep_is_refused(tmp_path):
    """The pid check that keeps two drivers from continuing one sweep."""
    from orchestrator.resume import driver_alive, driver_tag

    import json
    import socket

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "kd-sweep"])
    try:
        while not open(f"/proc/{child.pid}/cmdline", "rb").read():  # until the exec is visible
            time.sleep(0.05)
        tag = json.dumps({"host": socket.gethostname(), "pid": child.pid})
        assert driver_alive(tag) == child.pid
        assert driver_alive(json.dumps({"host": "elsewhere", "pid": child.pid})) is None
        assert driver_alive(driver_tag()) is None  # this very process
    finally:
        child.kill()
        child.wait()
    assert driver_alive(tag) is None  # dead now


def test_a_multi_node_sweep_refuses_storage_that_some_node_cannot_see(monkeypatch):
    import pytest

    from orchestrator import ray_session as runner
    from orchestrator.spec import SpecError

    monkeypatch.setattr(runner, "storage_blind_nodes", lambda storage: (3, ["10.0.0.7 (abcd1234)"]))
    monkeypatch.setattr("ray.shutdown", lambda: None)
    with pytest.raises(SpecError) as e:
        runner.check_storage("/local/ray_results", "big.yaml")
    msg = str(e.value)
    assert msg.startswith("big.yaml: storage:") and "1 of the cluster's 3 nodes (10.0.0.7" in msg
    assert "shared path (NFS) or an object store URI" in msg and "--storage" in msg
    monkeypatch.setattr(runner, "storage_blind_nodes", lambda storage: (3, []))
    runner.check_storage("/shared/ray_results", "big.yaml")  # every node sees it: no error


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sweep_is_killed_not_finished_and_continues(tmp_path, sig):
    """Ctrl-C (or SIGTERM) mid-sweep: exit 130, the parent and the started trials' runs KILLED (never
    FINISHED, none left RUNNING), how to continue printed; the same command then continues it, with
    the trials that finished before the interrupt not run again."""
    (tmp_path / "s.yaml").write_text(digits_coss_sweep("interrupt", "[0, 0.25, 0.5, 1.0]", 6, "off"))
    uri, env, cmd, driver = start_driver(tmp_path)
    client = Store(uri).client  # kd-sweep's opener: the driver is creating this store right now
    sent = False
    for kids in watch(client, driver):
        if any(r.data.tags.get("kd.role") == "student" and r.info.status == "RUNNING"
               and epochs_logged(client, r.info.run_id) for r in kids):
            os.kill(driver.pid, sig)
            sent = True
            break
    out = driver.communicate(timeout=120)[0]
    assert sent, "no student trial ever ran:\n" + out
    assert driver.returncode == 130, out
    assert "interrupted:" in out and "Run the same command again" in out and "all trials finished" not in out
    # kd-sweep's words only: not Tune's advice to call an API the user never called
    assert "Tuner.restore" not in out and "Resume experiment" not in out and "Ray Tune run" not in out, out
    (parent,) = parents(client)
    assert parent.info.status == "KILLED"
    kids = children(client, parent.info.run_id)
    assert not [r for r in kids if r.info.status == "RUNNING"]
    stopped = {r.data.tags["kd.config_hash"] for r in kids if r.info.status == "KILLED"}
    assert stopped and all(r.data.tags.get("kd.state") == "interrupted" for r in kids if r.info.status == "KILLED")
    done_before = {r.info.run_id for r in kids if r.info.status == "FINISHED" and r.data.tags["kd.role"] == "student"}

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "continuing parent run" in again.stdout
    assert "from its epoch" in again.stdout  # the stopped trial resumed from its checkpoint, not epoch 0
    (parent,) = parents(client)
    assert parent.info.status == "FINISHED"
    kids = children(client, parent.info.run_id)
    students = [r for r in kids if r.data.tags["kd.role"] == "student"]
    assert len(students) == 4 and all(r.info.status == "FINISHED" for r in students)
    assert Counter(r.data.tags["kd.config_hash"] for r in kids).most_common(1)[0][1] == 1  # one run per trial
    assert done_before <= {r.info.run_id for r in students}  # finished before: the same runs, not run again


def test_two_drivers_started_together_run_the_sweep_once(tmp_path):
    """The second driver, started 0.1 s after the first into an empty directory, exits 1 naming the
    first's pid (the lock is taken before the store exists); one parent run, one run per trial."""
    (tmp_path / "s.yaml").write_text(digits_coss_sweep("twice", "[0, 1.0]", 2, "off"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "s.yaml", "--tracking-uri", uri]
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.1)
    second = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out2 = second.communicate(timeout=300)[0]
    out1 = first.communicate(timeout=300)[0]
    codes = sorted([(first.returncode, out1), (second.returncode, out2)])
    assert [c for c, _ in codes] == [0, 1], out1 + out2
    assert "this sweep is being run by process" in codes[1][1] and "Traceback" not in codes[1][1]
    client = Store(uri).client  # kd-sweep's opener: the driver is creating this store right now
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert Counter(r.data.tags["kd.config_hash"] for r in kids).most_common(1)[0][1] == 1
    assert len([r for r in kids if r.data.tags["kd.role"] == "student"]) == 2


def test_a_damaged_newest_checkpoint_is_passed_over_for_an_intact_older_one(tmp_path):
    """A state.pt cut short (a kill or a full disk mid-write) or an epoch.json that does not parse: the
    resuming driver takes the newest checkpoint that is whole, and says which it skipped."""
    import json

    import torch

    from orchestrator.resume import latest_checkpoints

    def checkpoint(trial: str, epoch: int, info=None, cut: bool = False):
        d = tmp_path / "sweep-abc-1" / trial / f"checkpoint_{epoch:06d}"
        d.mkdir(parents=True)
        torch.save({"w": torch.ones(1000)}, d / "state.pt")
        if cut:
            data = (d / "state.pt").read_bytes()
            (d / "state.pt").write_bytes(data[: len(data) // 2])
        (d / "epoch.json").write_text(info if info is not None else json.dumps({"epoch": epoch, "config_hash": trial}))
        return str(d)

    ok_a = checkpoint("a", 1)
    checkpoint("a", 2, cut=True)
    ok_b = checkpoint("b", 1)
    checkpoint("b", 2, info="{not json")
    ok_c = checkpoint("c", 1)
    whole = checkpoint("c", 2)  # a whole archive, but not the size the trial wrote: a copy cut short
    (tmp_path / whole / "epoch.json").write_text(json.dumps(
        {"epoch": 2, "config_hash": "c", "state_bytes": (tmp_path / whole / "state.pt").stat().st_size + 512}))
    notes = []
    found = latest_checkpoints(str(tmp_path), "sweep-abc", notes)
    assert found == {"a": (1, ok_a), "b": (1, ok_b), "c": (1, ok_c)}
    assert any("state.pt is damaged" in n for n in notes) and any("epoch.json does not read" in n for n in notes)
    assert any(f"{whole}: its state.pt holds" in n and "cut short" in n for n in notes)


def test_a_store_lost_mid_sweep_stops_it_in_one_line_and_the_same_command_continues(tmp_path):
    """The MLflow server dies while students train: the driver stops the trials (their checkpoints stay),
    says in one line which store failed and what to do, exits 1 and leaves the parent run to continue;
    with the server back, the same command continues it without retraining from epoch 0. A server that
    is down at the start is told before Ray starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    (tmp_path / "s.yaml").write_text(digits_coss_sweep("lost", "[0, 0.5, 1.0]", 4, "off"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "KD_SWEEP_FAULT": "slow:0.4",
           "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}  # MLflow's own retries would wait minutes for the server
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "s.yaml", "--tracking-uri", uri]

    down = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 1 and f"the MLflow server {uri} does not answer (connection refused)" in down.stderr
    assert "Traceback" not in down.stdout + down.stderr and not (tmp_path / "ray_results").exists()

    server = mlflow_server(tmp_path, port)
    try:
        driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True)
        client = Store(uri).client  # kd-sweep's opener: the driver is creating this store right now
        lost = False
        for kids in watch(client, driver):
            if any(r.data.tags.get("kd.role") == "student" and r.info.status == "RUNNING"
                   and epochs_logged(client, r.info.run_id) for r in kids):
                stop(server)
                lost = True
                break
        out = driver.communicate(timeout=180)[0]
        assert lost, "no student trial ever ran:\n" + out
        assert driver.returncode == 1, out
        # Refused, or lost mid-request, as the kill falls: either way one line that says so.
        assert re.search(rf"the MLflow store {uri} stopped taking this sweep's runs \((connection refused|connection"
                         r" lost|the server does not answer)\)\. Trials keep", out), out
        assert "run the same command again to continue parent run" in out and "Traceback" not in out, out

        server = mlflow_server(tmp_path, port)
        (parent,) = parents(client)
        assert parent.info.status == "RUNNING"  # left to continue, not closed as finished or failed
        again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "continuing parent run" in again.stdout and "from its epoch" in again.stdout, again.stdout
        (parent,) = parents(client)
        assert parent.info.status == "FINISHED"
        kids = children(client, parent.info.run_id)
        students = [r for r in kids if r.data.tags["kd.role"] == "student"]
        assert len(students) == 3 and all(r.info.status == "FINISHED" for r in students)
        assert Counter(r.data.tags["kd.config_hash"] for r in kids).most_common(1)[0][1] == 1
    finally:
        stop(server)
