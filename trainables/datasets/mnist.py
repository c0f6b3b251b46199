"""MNIST from the files of the official release under MNIST/raw/, read as they come: the four `.gz`
archives (what a mirror serves and torchvision downloads), or the idx files extracted from them.

The archives are read in memory, so a read-only copy (a shared data folder) needs no extraction, and
`verify_checksum` checks each file read against the release's MD5: the archive's (torchvision's
`MNIST.resources`) or, for an extracted idx file, that of its content (measured on the official files).
"""
from __future__ import annotations

import gzip
import hashlib
import os

import torch

from .base import ImageData, configure, missing_part, open_or_download
from .registration import Smoke, register_dataset
from .synthetic import write_mnist

# The normalisation of PyTorch's own MNIST example (pytorch/examples, mnist/main.py).
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
SIZE = "12 MB"
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# name -> (MD5 of name.gz, MD5 of the idx file it holds), of the official release.
OFFICIAL = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}
RAW_NAMES = list(OFFICIAL)
IDX_TYPES = {0x08: torch.uint8}  # the idx type byte of every MNIST file: unsigned bytes


class CorruptFile(RuntimeError):
    """A file that is not what the release holds (open_or_download reads RuntimeError as corrupt)."""


def read_idx(blob: bytes, name: str) -> torch.Tensor:
    """An idx file (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte, the number of
    dimensions, each dimension as a big-endian int32, then the values."""
    if len(blob) < 4 or blob[:2] != b"\0\0" or blob[2] not in IDX_TYPES:
        raise CorruptFile(f"{name} is not an idx file of unsigned bytes")
    ndim = blob[3]
    dims = [int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = 1
    for d in dims:
        count *= d
    if len(blob) - start != count:
        raise CorruptFile(f"{name} holds {len(blob) - start} values where its header says {count}")
    return torch.frombuffer(bytearray(blob[start:]), dtype=IDX_TYPES[blob[2]]).reshape(dims)


def _read(raw: str, name: str, verify: bool) -> torch.Tensor:
    """NAME's values, from name.gz when it is there, else from the extracted idx file."""
    archive = os.path.join(raw, f"{name}.gz")
    packed = os.path.isfile(archive)
    path = archive if packed else os.path.join(raw, name)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise CorruptFile(f"neither {name}.gz nor {name} is there") from None
    if verify and hashlib.md5(blob).hexdigest() != OFFICIAL[name][0 if packed else 1]:
        raise CorruptFile(f"{os.path.basename(path)} differs from the official release's (MD5)")
    if packed:
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError) as e:
            raise CorruptFile(f"{name}.gz cannot be decompressed ({e})") from None
    return read_idx(blob, name)


def _fetch(tmp: str) -> None:
    """The four archives, each checked against its MD5; kept compressed, as the reader reads them."""
    from torchvision.datasets.utils import download_url

    raw = os.path.join(tmp, "MNIST", "raw")
    for name, (md5, _) in OFFICIAL.items():
        for i, mirror in enumerate(MIRRORS):
            try:
                download_url(f"{mirror}{name}.gz", raw, f"{name}.gz", md5)
                break
            except Exception:  # noqa: BLE001 - a mirror that fails: the next one, then the last one's error
                if i == len(MIRRORS) - 1:
                    raise


@register_dataset("mnist", smoke=Smoke(write_mnist))
def load_mnist(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
               val_split: float = 0.0, val_seed: int = 0) -> ImageData:
    """MNIST 1x28x28; no augmentation by default (PyTorch's MNIST example trains on the plain images)."""
    raw = os.path.join(root, "MNIST", "raw")
    absent = [n for n in RAW_NAMES if not any(os.path.isfile(os.path.join(raw, f)) for f in (f"{n}.gz", n))]

    def read():
        out = []
        for prefix in ("train", "t10k"):
            images = _read(raw, f"{prefix}-images-idx3-ubyte", verify_checksum)
            labels = _read(raw, f"{prefix}-labels-idx1-ubyte", verify_checksum)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise CorruptFile(f"{prefix}: {tuple(images.shape)} images against {tuple(labels.shape)} labels")
            out.append((images[:, None].contiguous(), labels.to(torch.int64)))
        return tuple(out)

    (train_x, train_y), (test_x, test_y) = open_or_download(
        read, root, download=download, present=not absent,
        missing=(f"MNIST not found: looked for {raw}/ ({', '.join(f'{n}[.gz]' for n in RAW_NAMES)}"
                 f"{missing_part(absent, RAW_NAMES)}). Set `dataset.download: true` to fetch it ({SIZE} from"
                 f" {MIRRORS[0]}), or put the release's four .gz files (or the idx files extracted from them)"
                 f" in {raw}/"),
        corrupt=lambda e: (
            f"MNIST under {raw} does not match the official checksums ({e}). Re-download it with"
            " `dataset.download: true`, or, for a copy that is not the official release, set"
            " `dataset.verify_checksum: false`"),
        fetch=_fetch, keep=[os.path.join("MNIST", "raw")], what=f"MNIST ({SIZE} from {MIRRORS[0]})",
        by_hand=f"download the four .gz files from {MIRRORS[0]} into {raw}/")
    return configure(ImageData(train_x, train_y, test_x, test_y, num_classes=10,
                               mean=MNIST_MEAN, std=MNIST_STD), augment, val_split, val_seed)
