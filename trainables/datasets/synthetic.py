"""Small datasets in the real on-disk formats (random pixels): what tests read through the real
loaders, and what `kd-sweep run --smoke` trains on when the real dataset is not on this machine (each
dataset's registration names its writer: `Smoke(write=...)`)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def _labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """Every class about equally often (stratification is testable), in random order."""
    return rng.permutation(np.arange(n) % classes)


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, list]]:
    """cifar-10-batches-py/: data_batch_1..5 (the training set in five pickles), test_batch, batches.meta.

    Each pickle holds "data", (n, 3072) uint8 rows of 1024 red, 1024 green, 1024 blue values (32x32 row-major),
    and "labels", a list of ints. Returns {"train": (data, labels), "test": (data, labels)}."""
    d = Path(root) / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = _labels(rng, n, 10).tolist()
        out[split] = (data, labels)
    parts = np.array_split(np.arange(n_train), 5)
    for i, idx in enumerate(parts, start=1):
        with open(d / f"data_batch_{i}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i} of 5", "data": out["train"][0][idx],
                         "labels": [out["train"][1][j] for j in idx]}, f)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "data": out["test"][0], "labels": out["test"][1]}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": 10000,
                     "num_vis": 3072}, f)
    return out


def write_svhn(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train_32x32.mat and test_32x32.mat in root: X (32, 32, 3, n) uint8 and y (n, 1) in 1..10, 10 for digit 0.

    Returns {"train": (X, y), "test": (X, y)} as written (y flattened, still 1..10)."""
    from scipy.io import savemat

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (_labels(rng, n, 10) + 1).astype(np.uint8)  # digits 1..9 as themselves, 0 as 10
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": y.reshape(n, 1)})
        out[split] = (x, y)
    return out


def _idx(array: np.ndarray) -> bytes:
    """The idx format: magic (0, 0, type 0x08 = ubyte, number of dims), each dim big-endian, then the bytes."""
    return struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(root: Path, n_train: int, n_test: int, seed: int = 0, archives: bool = True
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST/raw/: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte (what torchvision reads), plus, with `archives`, the .gz archive of each (what its
    download leaves beside them). Returns {"train": (images (n, 28, 28), labels), "test": ...}."""
    d = Path(root) / "MNIST" / "raw"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = _labels(rng, n, 10).astype(np.uint8)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            blob = _idx(array)
            (d / name).write_bytes(blob)
            if archives:
                (d / f"{name}.gz").write_bytes(gzip.compress(blob, mtime=0))
        out[split] = (images, labels)
    return out


def write_cifar100(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """CIFAR-100 in torchvision's on-disk format (the pickles of cifar-100-python/)."""
    d = Path(root) / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, m in (("train", n_train), ("test", n_test)):
        with open(d / split, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (m, 3072), dtype=np.uint8),
                         "fine_labels": _labels(rng, m, 100).tolist(),
                         "coarse_labels": rng.integers(0, 20, m).tolist()}, f)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, f)
    return Path(root)


def write_imagefolder(root: Path, n_train: int, n_test: int, classes: int = 3, seed: int = 0) -> Path:
    """An ImageNet-style ImageFolder: train/ and val/, a folder of JPEGs per class (sizes vary)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_test)):
        for c in range(classes):
            d = Path(root) / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(max(1, n // classes)):
                h, w = rng.integers(40, 90, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{c}_{i}.JPEG")
    return Path(root)
