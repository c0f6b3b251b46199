"""The software and hardware that decide a trial's numbers, as strings for its run's tags.

Measured where the code runs: a trial reports its worker's (on a cluster that may be another node with
another torch or GPU than the driver's), the driver tags its parent run with its own.
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# Read from the installed metadata: importing torchvision alone costs ~2 s, and torch's is read from torch.
PACKAGES = {"kd-sweep": "kd-sweep", "torchvision": "torchvision", "ray": "ray", "mlflow": "mlflow"}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout kd-sweep runs from (an editable install), `-dirty` when tracked files
    differ from it; None for an install from a wheel. Once per process."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _cpu() -> str:
    """The processor and how many logical CPUs this process may use: `<model> (2 CPUs)`."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({n} CPUs)"


@functools.lru_cache(maxsize=1)
def _software() -> dict[str, str]:
    import torch

    found = {name: _version(dist) for name, dist in PACKAGES.items()}
    found["torch"] = torch.__version__  # with its build: 2.14.1+cu130 and 2.14.1+cpu differ
    found["commit"] = git_commit()
    found["python"] = platform.python_version()
    found["cpu"] = _cpu()
    return {k: v for k, v in found.items() if v}


def versions(device: str | None = None) -> dict[str, str]:
    """Name -> version: kd-sweep and its commit, Python, torch, torchvision, Ray, MLflow, the CPU; with a CUDA
    DEVICE also the CUDA and cuDNN torch was built with and the GPU's name."""
    out = dict(_software())
    if device is not None and device.startswith("cuda"):
        import torch

        out["cuda"] = str(torch.version.cuda)
        if (cudnn := torch.backends.cudnn.version()) is not None:
            out["cudnn"] = str(cudnn)
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out
