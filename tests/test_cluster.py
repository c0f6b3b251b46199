"""The warm local Ray cluster: joined by the next sweep, stopped by `kd-sweep down` or when idle, never
kept up by a dead driver, and never shared with a driver of another Python."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from orchestrator import cluster
from tests.conftest import digits_coss_sweep, kd_sweep


def _gone(pid: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _raylets_of(state: dict) -> list[int]:
    """The processes of the warm cluster's head (its process group)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid="], capture_output=True, text=True).stdout.split("\n")
    return [int(p) for p, g in (line.split() for line in out if line.strip()) if int(g) == state["head"]]


def test_a_second_sweep_joins_the_warm_cluster_and_down_stops_it(tmp_path):
    folder = tmp_path / "cluster"
    env = {"KD_SWEEP_CLUSTER": str(folder), "KD_SWEEP_KEEP_WARM": "600"}
    (tmp_path / "a.yaml").write_text(digits_coss_sweep("warm-a", "[0.5]", epochs=1))
    (tmp_path / "b.yaml").write_text(digits_coss_sweep("warm-b", "[1.0]", epochs=1))

    first = kd_sweep("run", "a.yaml", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "starting a local Ray cluster, kept warm for 600 s" in first.stdout
    state = json.loads((folder / "state.json").read_text())
    assert _raylets_of(state), "the head's processes should be up after the sweep"
    assert (folder / "state.json").stat().st_mode & 0o077 == 0, "it holds the environment: owner-only"

    second = kd_sweep("run", "b.yaml", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "starting a local Ray cluster" not in second.stdout
    assert json.loads((folder / "state.json").read_text())["keeper"] == state["keeper"]
    # Both sweeps' trials really ran on it and landed in their own experiments.
    for name, value in (("warm-a", "0.5"), ("warm-b", "1")):
        table = kd_sweep("report", name, "--table", "--format", "csv", "--metric", "knn_top1", cwd=tmp_path)
        assert table.returncode == 0, table.stdout + table.stderr
        assert f"lambda={value}" in table.stdout, table.stdout

    down = kd_sweep("down", cwd=tmp_path, env=env)
    assert down.returncode == 0 and "stopped the warm local Ray cluster" in down.stdout
    assert _gone(state["keeper"])
    assert not (folder / "state.json").exists()
    assert _gone(state["head"]) and not _raylets_of(state)
    again = kd_sweep("down", cwd=tmp_path, env=env)
    assert "no warm local Ray cluster is running" in again.stdout


def test_the_cluster_stops_by_itself_when_idle_and_a_dead_driver_does_not_keep_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_SWEEP_CLUSTER", str(tmp_path))
    monkeypatch.setenv("KD_SWEEP_KEEP_WARM", "2")
    # A driver that takes the lease and is killed: the OS drops its lock, the keeper sees no one.
    holder = subprocess.Popen([sys.executable, "-c", "from orchestrator import cluster; import time;"
                               " l = cluster.lease(); print(l.state['keeper'], flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ})
    keeper = int(holder.stdout.readline())
    time.sleep(4)  # longer than the idle time: held, so still up
    assert cluster.running() is not None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert _gone(keeper, within=20)
    assert cluster.running() is None and not (tmp_path / "state.json").exists()


def test_no_warm_cluster_when_turned_off(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_SWEEP_CLUSTER", str(tmp_path))
    monkeypatch.setenv("KD_SWEEP_KEEP_WARM", "0")
    assert cluster.lease() is None
    monkeypatch.setenv("KD_SWEEP_KEEP_WARM", "soon")
    with pytest.raises(cluster.ClusterError, match="KD_SWEEP_KEEP_WARM='soon' is not a number"):
        cluster.lease()


@pytest.fixture
def fake_running(tmp_path, monkeypatch):
    """A state file whose keeper is this process and whose head is a listening socket: `running()` is
    true without starting Ray."""
    monkeypatch.setenv("KD_SWEEP_CLUSTER", str(tmp_path))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def write(**over):
        state = {"keeper": os.getpid(), "head": -1, "address": f"127.0.0.1:{srv.getsockname()[1]}",
                 "fingerprint": cluster.fingerprint(), "env": {"KEPT": "1", "SAME": "x"}, **over}
        (tmp_path / "state.json").write_text(json.dumps(state))
        return state

    yield write
    srv.close()


def test_a_driver_of_another_python_gets_a_private_ray_while_the_warm_one_is_busy(fake_running, tmp_path):
    fake_running(fingerprint="another-venv")
    busy = cluster.Lease(tmp_path, cluster.running())  # another driver is on it
    try:
        assert cluster.lease() is None
    finally:
        busy.release()


def test_workers_get_the_drivers_own_environment(fake_running, monkeypatch):
    fake_running()
    monkeypatch.setenv("SAME", "x")
    monkeypatch.setenv("KD_SWEEP_FAULT", "crash:1")
    monkeypatch.setenv("TERM", "dumb")  # per terminal: not forwarded
    monkeypatch.delenv("KEPT", raising=False)
    held = cluster.lease()
    try:
        env = held.env_vars()
    finally:
        held.release()
    assert env["KD_SWEEP_FAULT"] == "crash:1"
    assert env["KEPT"] == ""  # the keeper's variable this driver lacks: emptied
    assert "SAME" not in env and "TERM" not in env
