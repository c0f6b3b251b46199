import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"


def write_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """CIFAR-100 in torchvision's on-disk format (the pickles of cifar-100-python/), random pixels."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, m in (("train", n_train), ("test", n_test)):
        with open(d / split, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (m, 3072), dtype=np.uint8),
                         "fine_labels": rng.integers(0, 100, m).tolist(),
                         "coarse_labels": rng.integers(0, 20, m).tolist()}, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, f)
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar"), n_train=128, n_test=64)


def kd_sweep(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, in its own working directory (its own MLflow store)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
