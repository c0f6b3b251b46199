"""CIFAR-100 through torchvision's own loader (the pickles of the official release)."""
from __future__ import annotations

import os

import numpy as np
import torch
import torchvision

from ..registry import DATASETS
from .base import DatasetMissing, ImageData

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


class _UncheckedCIFAR100(torchvision.datasets.CIFAR100):
    """Same reader, no MD5 check: for copies that are not the official files (`verify_checksum: false`)."""

    meta = {**torchvision.datasets.CIFAR100.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, name))
                   for name, _ in self.train_list + self.test_list)


def _split(ds: torchvision.datasets.CIFAR100) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return x, torch.tensor(ds.targets, dtype=torch.int64)


@DATASETS.register("cifar100")
def load_cifar100(root: str, download: bool = False, verify_checksum: bool = True) -> ImageData:
    cls = torchvision.datasets.CIFAR100 if verify_checksum else _UncheckedCIFAR100
    folder = os.path.join(root, cls.base_folder)
    if not download and not os.path.isdir(folder):
        raise DatasetMissing(
            f"CIFAR-100 not found: looked for {folder}/ (train, test, meta). Set `dataset.download: true`"
            f" to fetch it (169 MB), or put the extracted cifar-100-python/ folder under {root}")
    try:
        train, test = cls(root, train=True, download=download), cls(root, train=False, download=download)
    except RuntimeError as e:
        raise DatasetMissing(
            f"CIFAR-100 under {folder} is incomplete or does not match the official checksums ({e})."
            " Re-download it with `dataset.download: true`, or, for a copy that is not the official"
            " release, set `dataset.verify_checksum: false`") from None
    (train_x, train_y), (test_x, test_y) = _split(train), _split(test)
    return ImageData(train_x, train_y, test_x, test_y, num_classes=100,
                     mean=CIFAR100_MEAN, std=CIFAR100_STD, crop_padding=4, flip=True)
