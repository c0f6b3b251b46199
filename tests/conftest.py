import contextlib
import copy
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainables.datasets.synthetic import write_cifar100  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"
# A folder holding MNIST/raw/ with the official release: KD_SWEEP_TEST_DATA (.ci/run sets it), else the
# project's shared data beside the checkout.
REAL_MNIST = Path(os.environ.get("KD_SWEEP_TEST_DATA") or REPO.parent / "shared" / "data")
needs_real_mnist = pytest.mark.skipif(
    not (REAL_MNIST / "MNIST" / "raw").is_dir(),
    reason=f"the official MNIST release is not at {REAL_MNIST}/MNIST/raw: set KD_SWEEP_TEST_DATA to a folder"
           " holding MNIST/raw/ (its four .gz files)")


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar"), n_train=128, n_test=64)


# Files of whole sweeps (tens of seconds a test) run first: with `-n 2` the two workers then end together
# instead of one finishing the last long sweep alone.
SWEEP_FILES = ("test_resilience", "test_methods_sweep", "test_smoke_sweeps", "test_e2e", "test_packing",
               "test_search", "test_claims", "test_full_disk")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.module.__name__.rsplit(".", 1)[-1] not in SWEEP_FILES)


# The test processes' Ray cluster authenticates with a token of its own, set before anything imports Ray
# (Ray reads its mode at import).
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


@pytest.fixture(scope="session", autouse=True)
def ray_cluster(tmp_path_factory):
    """One Ray cluster per test process (`ray start --head` on loopback), which its sweeps join through
    RAY_ADDRESS as a team's sweeps join theirs (--address): a Ray of a sweep's own costs ~4 s of CPU to
    start and stop, and the suite runs dozens of sweeps on 2 cores. The default path, a private Ray per
    sweep, is what README's first command takes (tests/test_e2e.py) and the resilience tests keep."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    log = open(tmp_path_factory.mktemp("ray-cluster") / "head.log", "wb")
    head = subprocess.Popen([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while subprocess.run([ray, "status", f"--address=127.0.0.1:{port}"], capture_output=True).returncode:
        assert head.poll() is None and time.monotonic() < deadline, f"the tests' Ray did not start: see {log.name}"
        time.sleep(0.5)
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    yield os.environ["RAY_ADDRESS"]
    os.environ.pop("RAY_ADDRESS", None)
    for sig in (signal.SIGTERM, signal.SIGKILL):  # its processes share the head's process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(1)  # `ray start --block` takes ~30 s to stop on SIGTERM alone
            break
    log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_server(tmp_path: Path, port: int, backend: str | None = None) -> subprocess.Popen:
    """A real `mlflow server` on PORT over BACKEND (default a sqlite file in TMP_PATH), in its own
    process group."""
    import urllib.request

    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend or f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as `kd-sweep ui` starts it
        start_new_session=True)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            assert server.poll() is None, "mlflow server exited at start"
            time.sleep(0.3)
    raise AssertionError("mlflow server did not answer in 90 s")


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


@contextlib.contextmanager
def postgres_server():
    """A real PostgreSQL 15 server on loopback (the machine image's `initdb`/`pg_ctl`), its database
    `mlflow` empty: what a team's MLflow server keeps its runs in. Yields its URL. Run as the `postgres`
    user when this runs as root (PostgreSQL refuses root), its folder under /tmp where that user can
    reach it."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="kd-pg.", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = folder / "data"

    def pg(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, capture_output=True, cwd=folder)

    try:
        pg("initdb", "-D", str(data), "-U", "kd", "--auth=trust", "-E", "UTF8")
        pg("pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
           f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "kd", "mlflow")
        yield f"postgresql://kd@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                       cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url():
    import shutil

    if shutil.which("pg_ctl") is None or shutil.which("initdb") is None:
        pytest.skip("PostgreSQL (initdb, pg_ctl) is not installed")
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def team_server(postgres_url, tmp_path_factory):
    """A real `mlflow server` over the PostgreSQL server: a team's store. Yields its http URI."""
    port = free_port()
    server = mlflow_server(tmp_path_factory.mktemp("team-server"), port, postgres_url)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


def trained_counts(client, names: list[str]) -> dict[str, int]:
    """config hash -> how many runs of the sweeps NAMES trained it (kd.state done), teachers included."""
    count: dict[str, int] = {}
    for name in names:
        exp = client.get_experiment_by_name(name)
        for r in client.search_runs([exp.experiment_id], max_results=1000):
            if r.data.tags.get("kd.state") == "done":
                count[r.data.tags["kd.config_hash"]] = count.get(r.data.tags["kd.config_hash"], 0) + 1
    return count


def kd_sweep(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, in its own working directory (its own MLflow store), joining the
    test process's Ray cluster."""
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def collect():
    """A `report` callback for `fit`/`fit_pack` that keeps each epoch's metrics and state, and the model."""
    got = {"metrics": [], "states": [], "model": None}

    def report(metrics, state, model):
        got["metrics"].append(metrics)
        got["states"].append(copy.deepcopy(state))
        if model is not None:
            got["model"] = model
    return got, report


def digits_coss_sweep(name: str, lambdas: str, epochs: int, pack="auto", seeds: str = "[0]") -> str:
    """A CoSS lambda grid on digits with MLPs: seconds a trial, for the tests that run whole sweeps."""
    return f"""\
name: {name}
dataset: {{name: digits}}
pairs:
  - teacher: {{model: mlp, hidden: [64]}}
    student: {{model: mlp, hidden: [32]}}
method: coss
knobs: {{beta: 1.0}}
grid:
  lambda: {lambdas}
seeds: {seeds}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, milestones: []}}
teacher_train: {{epochs: 2, batch_size: 64, lr: 0.05, milestones: []}}
eval:
  knn: {{k: 10, temperature: 0.07}}
resources: {{cpu: 1, gpu: 0}}
pack: {pack}
"""
