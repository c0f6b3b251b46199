"""Dataset registry: `load_dataset(name, root, ...)` returns an in-memory `ImageData`."""
from __future__ import annotations

import importlib
import os
import pkgutil

from ..registry import DATASETS
from .base import AUGMENTATIONS, MAX_VAL_SPLIT, DatasetMissing, ImageData, check_options, eval_batches, train_batches
from .registration import Smoke, image_file_datasets, register_dataset, smoke_of

__all__ = ["AUGMENTATIONS", "DATASETS", "DatasetMissing", "ImageData", "MAX_VAL_SPLIT", "Smoke", "eval_batches",
           "image_file_datasets", "load_dataset", "register_dataset", "smoke_of", "train_batches"]


def import_dataset_modules() -> None:
    """Imports every public module of this package: a dataset module registers itself on import, so a new
    dataset needs no edit here (the others, base, views..., register nothing; `_`-prefixed ones are skipped)."""
    for m in pkgutil.iter_modules(__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")


import_dataset_modules()


def load_dataset(name: str, root: str, download: bool = False, verify_checksum: bool = True,
                 augment: str | None = None, val_split: float = 0.0, val_seed: int = 0,
                 train_fraction: float = 1.0, max_train: int | None = None, max_test: int | None = None,
                 image_size: int | None = None, train_split: float = 1.0, train_split_seed: int = 42,
                 normalize: dict | None = None) -> ImageData:
    """`augment`: None (the dataset's default view) or one of AUGMENTATIONS. `val_split` > 0: a stratified part
    of the training set, seeded by `val_seed`, comes back in place of the test split (eval_split "val") and
    leaves the training set; keep the test split for final numbers. `image_size`: the crop side of a
    dataset read from image files (imagenet; 224 by default); in-memory datasets keep their own.
    `train_split` < 1: train on the first part of torch's random split (`ImageData.split_part`, RRKD's
    notebook). `normalize`: {mean: [...], std: [...]} in place of the dataset's own statistics."""
    check_options(augment, val_split)  # before any reading or downloading
    root = os.path.abspath(os.path.expanduser(root))
    sized = {} if image_size is None else {"image_size": image_size}
    data = DATASETS.get(name)(root, download=download, verify_checksum=verify_checksum, augment=augment,
                              val_split=val_split, val_seed=val_seed, **sized)
    data = data.split_part(train_split, train_split_seed) if train_split < 1 else data
    data = data.normalised_by(normalize["mean"], normalize["std"]) if normalize else data
    data = data.subset(train_fraction, val_seed) if train_fraction < 1 else data
    if max_train is not None and max_train < data.num_train:
        data = data.subset(max_train / data.num_train, val_seed)
    if max_test is not None and max_test < len(data.test_y):
        data = data.subset(max_test / len(data.test_y), val_seed, split="test")
    return data
