"""Every sweep file in sweeps/ runs end to end with --smoke, on a Ray cluster the tests start once
(as a user's `ray start --head`), and lands in MLflow as smoke runs the report keeps apart."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from orchestrator.smoke import smoke_sweep
from orchestrator.spec import count_trials, load_sweep

from .conftest import SWEEPS, kd_sweep

# CI runs a file of each kind whose smoke run takes well under a minute on 2 cores (CoSS on CIFAR-100,
# RRKD on SVHN, RRKD's autoencoder teacher on MNIST with its anchors), not the two that tests/test_e2e.py
# runs whole (quickstart.yaml, lambda_ablation.yaml); KD_SWEEP_SMOKE_ALL=1 runs every file (about half an
# hour there: the ImageNet models and CoSS supp. Table 1's 63 trials).
QUICK = {"coss_table2_components.yaml", "rrkd_table3_svhn.yaml", "rrkd_tables12_mnist_ssl.yaml",
         "rrkd_table5_anchors.yaml"}
ALL = sorted(p.name for p in SWEEPS.glob("*.yaml"))
FILES = ALL if os.environ.get("KD_SWEEP_SMOKE_ALL") else [f for f in ALL if f in QUICK]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes on this machine, one CPU each, as `ray start --head` plus `ray start --address`
    on two machines: trials land on both, and the driver checks both see the storage."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # not the test process's cluster
    env["RAY_AUTH_MODE"] = "disabled"  # a loopback test cluster
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    # Each node blocks in a process group of its own, stopped alone at the end: `ray stop` would stop
    # every Ray on the machine, the cluster the other tests share included.
    nodes = [subprocess.Popen([ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                               "--disable-usage-stats", "--block"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.monotonic() + 60
    while subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"], capture_output=True, env=env).returncode:
        assert time.monotonic() < deadline, "the test cluster's head did not start"
        time.sleep(0.5)
    nodes.append(subprocess.Popen([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--block"], env=env,
                                  start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    while '"CPU": 2' not in _resources(ray, port, env):
        assert time.monotonic() < deadline, "the test cluster's second node did not join"
        time.sleep(0.5)
    yield f"127.0.0.1:{port}", env
    for node in reversed(nodes):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(3)
                break


def _resources(ray: str, port: int, env: dict) -> str:
    code = (f"import ray, json; ray.init(address='127.0.0.1:{port}', logging_level='ERROR');"
            " print(json.dumps({k: v for k, v in ray.cluster_resources().items() if k == 'CPU'}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout


@pytest.mark.parametrize("name", FILES)
def test_sweep_file_runs_with_smoke(name, cluster, tmp_path, monkeypatch):
    """Run with a 900 s limit per file; CI takes the QUICK ones."""
    address, env = cluster
    cache = tmp_path_factory_cache(tmp_path)
    monkeypatch.setenv("KD_SWEEP_CACHE", cache)
    res = kd_sweep("run", str(SWEEPS / name), "--smoke", "--address", address, cwd=tmp_path, timeout=900,
                   env={"RAY_AUTH_MODE": "disabled", "KD_SWEEP_CACHE": cache})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "SMOKE RUN" in res.stdout and "NOT results" in res.stdout
    # The follow-up the run prints is a command that works as printed.
    printed = res.stdout.split("`kd-sweep report ", 1)[1].split("`", 1)[0].split()
    follow = kd_sweep("report", *printed, cwd=tmp_path)
    assert follow.returncode == 0 and "|" in follow.stdout, follow.stdout + follow.stderr
    sweep, _ = smoke_sweep(load_sweep(SWEEPS / name), str(SWEEPS))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name(sweep.name)
    parent = client.search_runs([exp.experiment_id], "tags.`kd.role` = 'sweep'")[0]
    assert parent.data.tags["kd.smoke"] == "true" and parent.info.status == "FINISHED"
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                              max_results=1000)
    students = [r for r in kids if r.data.tags["kd.role"] in ("student", "scratch")]
    assert len(students) == count_trials(sweep)
    assert all(r.info.status == "FINISHED" and r.data.tags["kd.smoke"] == "true" for r in kids)
    # Logged once per trial, from the driver, whichever node ran it; with several trials, both nodes did.
    assert len({r.data.tags["kd.config_hash"] for r in kids}) == len(kids)
    if name == "rrkd_table5_anchors.yaml":  # 4 students on 2 one-CPU nodes
        assert len({r.data.tags["kd.node"] for r in kids}) == 2


def tmp_path_factory_cache(tmp_path) -> str:
    """One cache of generated datasets for the whole module (they are the same for every file)."""
    return str(tmp_path.parent / "kd-sweep-cache")
