"""Dataset registry: `load_dataset(name, root, ...)` returns an in-memory `ImageData`."""
from __future__ import annotations

import os

from ..registry import DATASETS
from . import cifar, digits  # noqa: F401  (registration side effect)
from .base import DatasetMissing, ImageData, eval_batches, train_batches

__all__ = ["DATASETS", "DatasetMissing", "ImageData", "eval_batches", "load_dataset", "train_batches"]


def load_dataset(name: str, root: str, download: bool = False, verify_checksum: bool = True) -> ImageData:
    root = os.path.abspath(os.path.expanduser(root))
    return DATASETS.get(name)(root, download=download, verify_checksum=verify_checksum)
