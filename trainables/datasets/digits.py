"""scikit-learn's bundled 8x8 handwritten digits: real images that need no download."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from .base import ImageData, configure
from .registration import register_dataset

TEST_FRACTION = 0.2


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images (1797, 8, 8) of 0..16, labels): scikit-learn's file, read as `sklearn.datasets.load_digits`
    reads it, without importing scikit-learn (a second of CPU in the driver and in every trial actor)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():  # another layout: scikit-learn's own reader
        from sklearn.datasets import load_digits as sk_digits

        d = sk_digits()
        return d.images, d.target
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@register_dataset("digits")  # bundled with scikit-learn: never missing, no writer
def load_digits(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
                val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    images, target = digits_arrays()
    x = np.round(images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # 0..16 grey levels -> uint8
    y = target.astype(np.int64)
    # A fixed stratified split, so every trial and every machine sees the same test set.
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, int(round(len(idx) * TEST_FRACTION)), replace=False)] = True
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    train_x = xt[~torch.from_numpy(test)]
    mean = float(train_x.float().mean() / 255)
    std = float(train_x.float().std() / 255)
    data = ImageData(train_x, yt[~torch.from_numpy(test)], xt[torch.from_numpy(test)], yt[torch.from_numpy(test)],
                     num_classes=10, mean=(mean,), std=(std,))
    return configure(data, augment, val_split, val_seed)  # mean/std stay those of the whole training part
