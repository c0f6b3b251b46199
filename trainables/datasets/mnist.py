"""MNIST through torchvision's own reader (the idx files of the official release, under MNIST/raw/)."""
from __future__ import annotations

import functools
import os
import struct
import zlib

import torch

from .base import ImageData, configure, missing_part, open_or_download
from .registration import Smoke, register_dataset
from .synthetic import write_mnist

# The normalisation of PyTorch's own MNIST example (pytorch/examples, mnist/main.py).
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
SIZE = "12 MB"
RAW_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]  # torchvision's MNIST.resources, less .gz


@functools.cache
def _classes() -> tuple[type, type]:
    """torchvision's MNIST reader, and that reader plus the check it lacks (`verify_checksum: true`): it
    verifies only the downloaded .gz archives, never the idx files it reads. The checked one wants each
    idx file next to its official archive (torchvision's MD5), matching the CRC-32 and size stored in
    that archive's gzip trailer. Imported on first use: torchvision costs ~2 s of start-up."""
    import torchvision
    from torchvision.datasets.utils import check_integrity

    class Checked(torchvision.datasets.MNIST):
        @property
        def raw_folder(self) -> str:  # torchvision names the folder after the class
            return os.path.join(self.root, "MNIST", "raw")

        @property
        def processed_folder(self) -> str:
            return os.path.join(self.root, "MNIST", "processed")

        def _check_legacy_exist(self) -> bool:  # the pre-0.9 processed/*.pt cache cannot be verified
            return False

        def _check_exists(self) -> bool:
            return super()._check_exists() and all(
                check_integrity(os.path.join(self.raw_folder, gz), md5)
                and _same_content(os.path.join(self.raw_folder, os.path.splitext(gz)[0]),
                                  os.path.join(self.raw_folder, gz))
                for gz, md5 in self.resources)

    return torchvision.datasets.MNIST, Checked


def _same_content(raw: str, gz: str) -> bool:
    """Whether `raw` is what `gz` decompresses to, by the CRC-32 and size in the gzip trailer (RFC 1952)."""
    with open(gz, "rb") as f:
        f.seek(-8, os.SEEK_END)
        crc, size = struct.unpack("<II", f.read(8))
    if os.path.getsize(raw) % 2**32 != size:
        return False
    c = 0
    with open(raw, "rb") as f:
        while chunk := f.read(1 << 22):
            c = zlib.crc32(chunk, c)
    return c == crc


@register_dataset("mnist", smoke=Smoke(write_mnist))
def load_mnist(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
               val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    """MNIST 1x28x28; no augmentation by default (PyTorch's MNIST example trains on the plain images)."""
    # verify_checksum: false is torchvision's own class, which checks only that the idx files exist.
    official, checked = _classes()
    cls = checked if verify_checksum else official
    raw = os.path.join(root, "MNIST", "raw")
    absent = [name for name in RAW_NAMES if not os.path.isfile(os.path.join(raw, name))]
    url = official.mirrors[0]

    def read():
        return tuple(_split(cls(root, train=train)) for train in (True, False))

    def fetch(tmp: str) -> None:  # downloads each .gz (MD5-checked), extracts it, then checks as above
        checked(tmp, train=True, download=True), checked(tmp, train=False, download=True)

    (train_x, train_y), (test_x, test_y) = open_or_download(
        read, root, download=download, present=not absent,
        missing=(f"MNIST not found: looked for {raw}/ ({', '.join(RAW_NAMES)}{missing_part(absent, RAW_NAMES)})."
                 f" Set `dataset.download: true` to fetch it ({SIZE} from {url}), or put the four"
                 f" uncompressed idx files in {raw}/ (with `verify_checksum: true`, also the official"
                 " .gz archives they came from)"),
        corrupt=lambda e: (
            f"MNIST under {raw} is incomplete or does not match the official checksums ({e}): with"
            " `verify_checksum: true` the official .gz archives (torchvision's MD5s) must lie next to the"
            " idx files extracted from them. Re-download it with `dataset.download: true`, or, for a copy"
            " that is not the official release, set `dataset.verify_checksum: false`"),
        fetch=fetch, keep=[os.path.join("MNIST", "raw")], what=f"MNIST ({SIZE} from {url})",
        by_hand=f"download the four .gz files from {url} into {raw}/ and gunzip them there (keep the .gz)")
    return configure(ImageData(train_x, train_y, test_x, test_y, num_classes=10,
                               mean=MNIST_MEAN, std=MNIST_STD), augment, val_split, val_seed)


def _split(ds) -> tuple[torch.Tensor, torch.Tensor]:
    return ds.data[:, None].contiguous(), ds.targets.to(torch.int64)
