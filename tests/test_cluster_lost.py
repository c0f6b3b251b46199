"""Losing the Ray cluster mid-sweep (its GCS killed, as the OOM killer or a lost head node does): the
driver says so in one line within seconds, closes every started run KILLED with kd.state saying why,
leaves no Ray process behind, exits 1, and the same command continues the sweep to its end."""
import os
import signal
import subprocess
import sys
import time

from mlflow import MlflowClient

from .conftest import SWEEPS

# One seed, a short teacher, students long enough (~10 s) to be caught running.
SHRINK = ["--set", "teacher_train.epochs=5", "--set", "train.epochs=20", "--set", "seeds=[0]"]


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _descendants(pid: int) -> list[int]:
    todo, seen = _children(pid), []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _alive(pid: int) -> bool:
    """Running, not a zombie (a container's init may never reap what the driver left)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def runs(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("quickstart")
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_a_sweep_whose_ray_loses_its_gcs_says_so_closes_its_runs_and_continues_after(tmp_path):
    (tmp_path / "sweeps").symlink_to(SWEEPS)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "orchestrator.cli", "run", "sweeps/quickstart.yaml", *SHRINK]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not any(r.data.tags.get("kd.role") == "student" and r.info.status == "RUNNING" for r in runs(uri)):
            assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
            time.sleep(0.5)
        ray = _descendants(driver.pid)
        gcs = [p for p in ray if _name(p) == "gcs_server"]
        assert len(gcs) == 1, [_name(p) for p in ray]
        os.kill(gcs[0], signal.SIGKILL)
        killed = time.monotonic()
        out, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert time.monotonic() - killed < 20  # Ray's own driver would wait 60 s for the GCS, then die from C++
    assert driver.returncode == 1, out[-2000:] + err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: lost the Ray cluster: this sweep's own Ray stopped (its GCS at "), err[-2000:]
    assert "marked KILLED (kd.state cluster_lost)" in last
    assert "run `kd-sweep run sweeps/quickstart.yaml --set teacher_train.epochs=5 --set train.epochs=20 --set" \
        " 'seeds=[0]'` again" in last
    assert "Traceback" not in err
    # Raylet, workers and agents went with it (SIGKILL lands when a process leaves the kernel: a worker
    # mid-write on a loaded machine may take a moment).
    deadline = time.monotonic() + 10
    while (left := [p for p in ray if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [_name(p) for p in left]
    after = runs(uri)
    parent = next(r for r in after if r.data.tags.get("kd.role") == "sweep")
    assert (parent.info.status, parent.data.tags.get("kd.state")) == ("KILLED", "cluster_lost")
    students = [r for r in after if r.data.tags.get("kd.role") != "sweep" and r.data.tags.get("kd.role") != "teacher"]
    assert students and all(r.info.status == "KILLED" and r.data.tags["kd.state"] == "cluster_lost" for r in students)
    assert not [r for r in after if r.info.status == "RUNNING"]

    # The same command continues the same parent run to its end.
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"continuing parent run {parent.info.run_id[:8]}" in again.stdout + again.stderr
    final = runs(uri)
    assert {r.info.status for r in final} == {"FINISHED"}
    assert len([r for r in final if r.data.tags.get("kd.role") in ("student", "scratch")]) == 4


def test_a_sweep_on_a_cluster_whose_head_dies_says_so_and_closes_its_runs(tmp_path):
    """--address: the head node of a team's cluster goes down mid-sweep (every process of `ray start
    --head` killed at once, as a lost machine): one line naming the head within seconds, exit 1, the
    parent and the started runs KILLED with kd.state cluster_lost."""
    from .conftest import free_port

    port = free_port()
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.Popen([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while subprocess.run([ray, "status", f"--address={address}"], capture_output=True).returncode:
            assert head.poll() is None and time.monotonic() < deadline, "the head did not start"
            time.sleep(0.5)
        (tmp_path / "sweeps").symlink_to(SWEEPS)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
        env["PYTHONUNBUFFERED"] = "1"
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        driver = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "sweeps/quickstart.yaml",
                                   "--address", address, *SHRINK], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while not any(r.data.tags.get("kd.role") == "student" and r.info.status == "RUNNING" for r in runs(uri)):
                assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()
                time.sleep(0.5)
            os.killpg(head.pid, signal.SIGKILL)  # the head node, gone: GCS, raylet, workers
            killed = time.monotonic()
            out, err = driver.communicate(timeout=90)
        finally:
            if driver.poll() is None:
                driver.kill()
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(30)
    assert time.monotonic() - killed < 40, "Ray's own driver would wait 60 s for the GCS"
    assert driver.returncode == 1, out[-2000:] + err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: lost the Ray cluster: the Ray cluster's head at {address} no longer answers"), \
        err[-2000:]
    assert "marked KILLED (kd.state cluster_lost)" in last and "--address" in last
    after = runs(uri)
    parent = next(r for r in after if r.data.tags.get("kd.role") == "sweep")
    assert (parent.info.status, parent.data.tags.get("kd.state")) == ("KILLED", "cluster_lost")
    assert not [r for r in after if r.info.status == "RUNNING"]
