"""SVHN (the cropped 32x32 digits) through torchvision's own loader (train_32x32.mat / test_32x32.mat)."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .base import ImageData, configure, missing_part, open_or_download
from .registration import Smoke, register_dataset
from .synthetic import write_svhn

# Per-channel statistics of the SVHN training set, as DeepCore (PatrickZH/DeepCore, deepcore/datasets/svhn.py)
# normalises it.
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
SPLITS = ("train", "test")
SIZE = "246 MB: train_32x32.mat 182 MB + test_32x32.mat 64 MB"


@functools.cache
def _classes() -> tuple[type, type]:
    """torchvision's SVHN reader, and the same reader without the MD5 check (for copies that are not the
    official files, `verify_checksum: false`). Imported on first use: torchvision costs ~2 s of start-up."""
    import torchvision

    class Unchecked(torchvision.datasets.SVHN):
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

    return torchvision.datasets.SVHN, Unchecked


def _split(ds) -> tuple[torch.Tensor, torch.Tensor]:
    # torchvision has already turned the .mat's (H, W, C, N) into (N, C, H, W) and label 10 into digit 0.
    x = torch.from_numpy(np.ascontiguousarray(ds.data))
    return x, torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))


@register_dataset("svhn", smoke=Smoke(write_svhn))
def load_svhn(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
              val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    """SVHN train/test (not `extra`). By default RandomCrop(32, padding=4) without flip: mirrored digits are
    not digits, so the MixMatch/FixMatch code (google-research/mixmatch libml/data.py, `augment_svhn`)
    shifts SVHN by up to 4 pixels and mirrors only CIFAR/STL. RRKD's paper says it flips SVHN, its notebook
    does not (cell 18 flips CIFAR-10/100 only): `augment: none` is the notebook's view."""
    official, unchecked = _classes()
    cls = official if verify_checksum else unchecked
    files = [os.path.join(root, official.split_list[s][1]) for s in SPLITS]
    absent = [f for f in files if not os.path.isfile(f)]
    url = os.path.dirname(official.split_list["train"][0]) + "/"

    def read():
        return tuple(_split(cls(root, split=s)) for s in SPLITS)

    def fetch(tmp: str) -> None:  # the official class: each file's MD5 is checked
        for s in SPLITS:
            official(tmp, split=s, download=True)

    (train_x, train_y), (test_x, test_y) = open_or_download(
        read, root, download=download, present=not absent,
        missing=(f"SVHN not found: looked for {' and '.join(files)}{missing_part(absent, files)}."
                 f" Set `dataset.download: true` to fetch them ({SIZE}, from {url}), or put the two"
                 f" .mat files in {root}"),
        corrupt=lambda e: (
            f"SVHN in {root} ({', '.join(os.path.basename(f) for f in files)}) is incomplete or does not"
            f" match the official checksums ({e}). Re-download it with `dataset.download: true`, or, for a"
            " copy that is not the official release, set `dataset.verify_checksum: false`"),
        fetch=fetch, keep=[os.path.basename(f) for f in files], what=f"SVHN ({SIZE}, from {url})",
        by_hand=f"download train_32x32.mat and test_32x32.mat from {url} into {root}")
    return configure(ImageData(train_x, train_y, test_x, test_y, num_classes=10,
                               mean=SVHN_MEAN, std=SVHN_STD, crop_padding=4, flip=False),
                     augment, val_split, val_seed)
