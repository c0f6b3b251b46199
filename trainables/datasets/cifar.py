"""CIFAR-10 and CIFAR-100 through torchvision's own loaders (the pickles of the official releases)."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from ..registry import DATASETS
from .base import DatasetMissing, ImageData, configure, missing_part, open_or_download  # noqa: F401

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# Per-channel mean and std over all CIFAR-10 training pixels.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@functools.cache
def _classes(name: str) -> tuple[type, type]:
    """torchvision's reader of CIFAR-10 or -100, and the same reader without the MD5 check (for copies
    that are not the official files, `verify_checksum: false`). Imported here, on first use: torchvision
    costs every Ray worker and every `kd-sweep` command ~2 s of start-up."""
    import torchvision

    official = getattr(torchvision.datasets, name)

    class Unchecked(official):
        meta = {**official.meta, "md5": None}

        def _check_integrity(self) -> bool:
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f))
                       for f, _ in self.train_list + self.test_list)

    return official, Unchecked


def _split(ds) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    return x, torch.tensor(ds.targets, dtype=torch.int64)


def _read_cifar(release: str, what: str, size: str, root: str, download: bool,
                verify_checksum: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Train and test split of a CIFAR release under root/<base_folder>/, downloaded (atomically) if asked."""
    official, unchecked = _classes(release)
    cls = official if verify_checksum else unchecked
    folder = os.path.join(root, official.base_folder)
    names = [name for name, _ in official.train_list + official.test_list] + [official.meta["filename"]]
    absent = [name for name in names if not os.path.isfile(os.path.join(folder, name))]

    def read():
        return _split(cls(root, train=True)), _split(cls(root, train=False))

    def fetch(tmp: str) -> None:  # the official class: the archive's MD5 and each file's are checked
        official(tmp, train=True, download=True), official(tmp, train=False, download=True)

    return open_or_download(
        read, root, download=download, present=not absent,
        missing=(f"{what} not found: looked for {folder}/ ({', '.join(names)}{missing_part(absent, names)})."
                 f" Set `dataset.download: true` to fetch it ({size} from {official.url}), or put the"
                 f" extracted {official.base_folder}/ folder under {root}"),
        corrupt=lambda e: (
            f"{what} under {folder} is incomplete or does not match the official checksums ({e})."
            " Re-download it with `dataset.download: true`, or, for a copy that is not the official"
            " release, set `dataset.verify_checksum: false`"),
        fetch=fetch, keep=[official.base_folder], what=f"{what} ({size} from {official.url})",
        by_hand=f"extract {official.filename} under {root} yourself")


@DATASETS.register("cifar100")
def load_cifar100(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
                  val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    (train_x, train_y), (test_x, test_y) = _read_cifar(
        "CIFAR100", "CIFAR-100", "169 MB", root, download, verify_checksum)
    return configure(ImageData(train_x, train_y, test_x, test_y, num_classes=100,
                               mean=CIFAR100_MEAN, std=CIFAR100_STD, crop_padding=4, flip=True),
                     augment, val_split, val_seed)


@DATASETS.register("cifar10")
def load_cifar10(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
                 val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    """CIFAR-10; by default RandomCrop(32, padding=4) + flip, as CIFAR-100 (the CRD/RepDistiller recipe)."""
    (train_x, train_y), (test_x, test_y) = _read_cifar(
        "CIFAR10", "CIFAR-10", "170 MB", root, download, verify_checksum)
    return configure(ImageData(train_x, train_y, test_x, test_y, num_classes=10,
                               mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_padding=4, flip=True),
                     augment, val_split, val_seed)
