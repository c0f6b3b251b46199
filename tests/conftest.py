import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.datasets.synthetic import write_cifar100  # noqa: F401  (tests import it from here)

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar"), n_train=128, n_test=64)


# Files of whole sweeps (tens of seconds a test) run first: with `-n 2` the two workers then end together
# instead of one finishing the last long sweep alone.
SWEEP_FILES = ("test_resilience", "test_methods_sweep", "test_smoke_sweeps", "test_e2e", "test_packing",
               "test_search")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.module.__name__.rsplit(".", 1)[-1] not in SWEEP_FILES)


def kd_sweep(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, in its own working directory (its own MLflow store)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
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
