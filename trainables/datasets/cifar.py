"""CIFAR-10 and CIFAR-100: the pickles of the official releases, checked against torchvision's MD5s and
read by a data-only unpickler (pickles.py), never by `pickle.load`; torchvision only downloads them."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from .base import DatasetMissing, ImageData, configure, missing_part, open_or_download  # noqa: F401
from .pickles import load_data_pickle
from .registration import Smoke, register_dataset
from .synthetic import write_cifar10, write_cifar100

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
# Per-channel mean and std over all CIFAR-10 training pixels.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@functools.cache
def _release(name: str) -> type:
    """torchvision's class of CIFAR-10 or -100: its file lists, MD5s and download. Imported here, on first
    use: torchvision costs every Ray worker and every `kd-sweep` command ~2 s of start-up."""
    import torchvision

    return getattr(torchvision.datasets, name)


def _split(folder: str, files: list) -> tuple[torch.Tensor, torch.Tensor]:
    """One split from its batch files: rows of 1024 red, 1024 green, 1024 blue values -> (N, 3, 32, 32)."""
    data, labels = [], []
    for name, _ in files:
        entry = load_data_pickle(os.path.join(folder, name))
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
    x = torch.from_numpy(np.ascontiguousarray(np.vstack(data).reshape(-1, 3, 32, 32)))
    return x, torch.tensor(labels, dtype=torch.int64)


def _read_cifar(release: str, what: str, size: str, root: str, download: bool,
                verify_checksum: bool) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Train and test split of a CIFAR release under root/<base_folder>/, downloaded (atomically) if asked."""
    official = _release(release)
    folder = os.path.join(root, official.base_folder)
    files = official.train_list + official.test_list + [[official.meta["filename"], official.meta["md5"]]]
    names = [name for name, _ in files]
    absent = [name for name in names if not os.path.isfile(os.path.join(folder, name))]

    def read():
        from torchvision.datasets.utils import check_integrity

        for name, md5 in files:  # as torchvision's reader checks them, before anything is read
            if not check_integrity(os.path.join(folder, name), md5 if verify_checksum else None):
                raise RuntimeError(f"{name} is missing or not the official file")
        return _split(folder, official.train_list), _split(folder, official.test_list)

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


@register_dataset("cifar100", smoke=Smoke(write_cifar100))
def load_cifar100(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
                  val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    (train_x, train_y), (test_x, test_y) = _read_cifar(
        "CIFAR100", "CIFAR-100", "169 MB", root, download, verify_checksum)
    return configure(ImageData(train_x, train_y, test_x, test_y, num_classes=100,
                               mean=CIFAR100_MEAN, std=CIFAR100_STD, crop_padding=4, flip=True),
                     augment, val_split, val_seed)


@register_dataset("cifar10", smoke=Smoke(write_cifar10))
def load_cifar10(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
                 val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    """CIFAR-10; by default RandomCrop(32, padding=4) + flip, as CIFAR-100 (the CRD/RepDistiller recipe)."""
    (train_x, train_y), (test_x, test_y) = _read_cifar(
        "CIFAR10", "CIFAR-10", "170 MB", root, download, verify_checksum)
    return configure(ImageData(train_x, train_y, test_x, test_y, num_classes=10,
                               mean=CIFAR10_MEAN, std=CIFAR10_STD, crop_padding=4, flip=True),
                     augment, val_split, val_seed)
