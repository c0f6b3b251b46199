"""In-memory image datasets: uint8 tensors, augmented per batch as tensors (on the trial's device).

Small vision sets (digits, CIFAR) fit in memory many times over; holding them as one uint8 tensor
and augmenting whole batches at once replaces a DataLoader of per-image PIL transforms.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch

from .views import rand_augment, resized_crop_flip

# `augment` overrides of a dataset's default training view (None keeps the default).
# randaugment: crop + flip, then torchvision's RandAugment (2 ops, magnitude 9) per image (views.py).
AUGMENTATIONS = ("crop_flip", "crop", "flip", "none", "mocov2", "randaugment")  # mocov2: ImageNet only
MAX_VAL_SPLIT = 0.5  # a larger hold-out would leave less to train on than it tunes for

T = TypeVar("T")


class DatasetMissing(Exception):
    """Raised with a message that says where kd-sweep looked and how to get the data."""


@dataclass
class ImageData:
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0  # random crop with this zero padding; 0 = no crop
    flip: bool = False
    eval_split: str = "test"  # what test_x/test_y hold: "test", or "val" (a part held out of train by `holdout`)
    randaugment: bool = False  # RandAugment after the crop and flip (augment "randaugment")
    rotations: bool = False  # every training image as 4 views, rotated 0/90/180/270 degrees (SSKD)
    # mean and std as tensors, one pair per device: made once, so a step on a GPU copies nothing from the host.
    _stats: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    def fingerprint(self) -> str:
        """Identifies the data itself (not where it lies): a teacher trained on other data is never reused."""
        h = hashlib.sha256()
        for t in (self.train_y, self.test_y, self.train_x[:64], self.train_x[-64:], self.test_x[:64]):
            h.update(t.contiguous().numpy().tobytes())
        h.update(repr((tuple(self.train_x.shape), tuple(self.test_x.shape))).encode())
        return h.hexdigest()[:16]

    def to(self, device: torch.device) -> "ImageData":
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                       test_x=self.test_x.to(device), test_y=self.test_y.to(device))

    def with_augment(self, augment: Optional[str]) -> "ImageData":
        """The same data with another training view: one of AUGMENTATIONS, or None for the dataset's default.

        Cropping keeps the dataset's own padding; a dataset that does not crop by default pads by
        image_size // 8 (4 for 32x32, as CIFAR's RandomCrop(32, padding=4); 3 for 28x28; 1 for 8x8)."""
        if augment is None:
            return self
        check_options(augment, 0.0)
        if augment == "mocov2":
            raise ValueError("augment 'mocov2' (colour jitter, blur, resized crops) is for imagenet; this dataset"
                             " takes crop_flip, crop, flip, randaugment or none")
        pad = self.crop_padding or max(1, self.image_size // 8)
        return replace(self, crop_padding=pad if augment in ("crop_flip", "crop", "randaugment") else 0,
                       flip=augment in ("crop_flip", "flip", "randaugment"), randaugment=augment == "randaugment")

    def with_rotations(self) -> "ImageData":
        """Training batches of 4 views an image (a method that asks, SSKD): each image flipped or not,
        then rotated by 0, 90, 180 and 270 degrees, then each view cropped on its own, as SSKD's
        cifar.py builds its training items (flip, np.rot90, RandomCrop). A batch of b indices gives 4b
        images, the views of one image adjacent (rows 4i..4i+3, rotation 0 first) and b labels."""
        if self.randaugment:
            raise ValueError("rotated views (sskd) take crop_flip, crop, flip or none as augment, not randaugment")
        return replace(self, rotations=True)

    def subset(self, fraction: float, seed: int = 0, split: str = "train") -> "ImageData":
        """Only a stratified, seeded `fraction` of one split (the other untouched)."""
        y = self.labels(split)
        keep = torch.from_numpy(~stratified_mask(y.cpu().numpy(), 1 - fraction, seed)).to(y.device)
        if split == "train":
            return replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep])
        return replace(self, test_x=self.test_x[keep], test_y=self.test_y[keep])

    def split_part(self, fraction: float, seed: int = 42) -> "ImageData":
        """Only the first part of torch's `random_split(train, [fraction, 1 - fraction], seed)` (RRKD's
        notebook trains on that part: 0.9, seed 42); the test split untouched."""
        keep = torch_split_part(self.num_train, fraction, seed).to(self.train_y.device)
        return replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep])

    def normalised_by(self, mean: Sequence[float], std: Sequence[float]) -> "ImageData":
        """Another normalisation (one value for every channel, or one per channel): RRKD's notebook
        normalises every dataset with 0.5 and 0.5 where kd-sweep uses each dataset's statistics."""
        c = self.in_channels
        for name, v in (("mean", mean), ("std", std)):
            if len(v) not in (1, c):
                takes = "1 value" if c == 1 else f"1 value or {c}"
                raise ValueError(f"normalize.{name} takes {takes} for this dataset ({c} channel{'s' * (c > 1)}),"
                                 f" got {len(v)}")
        return replace(self, mean=tuple(mean) * (c // len(mean)), std=tuple(std) * (c // len(std)))

    def holdout(self, fraction: float, seed: int = 0) -> "ImageData":
        """A stratified, seeded part of the training set in place of the test split (eval_split "val").

        round(N * fraction) images are held out, each class giving its share (largest remainder, so
        every class is within one image of N_c * fraction); the kept training part loses them. Both
        parts keep the original order. The same data and seed always give the same split."""
        check_options(None, fraction)
        if fraction == 0:
            return self
        val_t = torch.from_numpy(stratified_mask(self.train_y.cpu().numpy(), fraction, seed)).to(self.train_y.device)
        return replace(self, train_x=self.train_x[~val_t], train_y=self.train_y[~val_t],
                       test_x=self.train_x[val_t], test_y=self.train_y[val_t], eval_split="val")

    # --- what the trainer and the evaluation use: the same interface as FolderData (ImageNet) -------

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    def labels(self, split: str) -> torch.Tensor:
        return self.train_y if split == "train" else self.test_y

    def eval_view(self, split: str, idx) -> torch.Tensor:
        """Normalised, un-augmented images `idx` (indices or a slice) of "train" or "test"."""
        return self.normalise((self.train_x if split == "train" else self.test_x)[idx])

    def eval_loader(self, split: str, batch_size: int = 512) -> Iterator[torch.Tensor]:
        for sl in eval_batches(len(self.labels(split)), batch_size):
            yield self.eval_view(split, sl)

    def probe_loader(self, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """The training images in order, each freshly RandomResizedCrop'd + flipped at its own size and
        normalised: the view a linear probe with `augment: true` trains on (MoCo's main_lincls.py)."""
        gen = torch.Generator(device=self.train_x.device).manual_seed(seed)
        for sl in eval_batches(self.num_train, batch_size):
            yield self.normalise(resized_crop_flip(self.train_x[sl], gen))

    def epoch(self, batches: list[torch.Tensor], gen: torch.Generator, workers: int = 0
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(idx, augmented x, y) for each index batch, in order. In memory: no loader, no workers."""
        for idx in batches:
            yield idx, self.augment(self.train_x[idx], gen), self.train_y[idx]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self._stats:
            self._stats[x.device] = (torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1),
                                     torch.tensor(self.std, device=x.device).view(1, -1, 1, 1))
        mean, std = self._stats[x.device]
        return (x.float().div_(255) - mean) / std

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Training view of a uint8 batch: torchvision's RandomCrop(pad, fill 0) + flip, then RandAugment when
        asked (`randaugment`), then normalise."""
        if self.rotations:
            if self.flip:  # before rotating: the views of an image share its flip
                x = self._flipped(x, gen)
            x = torch.stack([torch.rot90(x, k, (-2, -1)) for k in range(4)], 1).flatten(0, 1)
            return self.normalise(self._cropped(x, gen))
        x = self._cropped(x, gen)
        if self.flip:
            x = self._flipped(x, gen)
        if self.randaugment:
            x = rand_augment(x, gen)
        return self.normalise(x)

    def _cropped(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """torchvision's RandomCrop(size, padding, fill 0) of each image."""
        b, _, h, w = x.shape
        if self.crop_padding:
            p = self.crop_padding
            x = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=gen.device).to(x.device)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=gen, device=gen.device).to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            x = x[torch.arange(b, device=x.device)[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
        return x

    @staticmethod
    def _flipped(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """RandomHorizontalFlip (p 1/2) of each image."""
        flip = torch.rand(x.shape[0], generator=gen, device=gen.device).to(x.device) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


def stratified_mask(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded mask of round(N * fraction) samples, each class giving its share (largest remainder,
    so every class is within one sample of N_c * fraction)."""
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * fraction
    take = np.floor(quota).astype(np.int64)
    rest = int(round(len(y) * fraction)) - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c, k in zip(classes, take):
        mask[rng.permutation(np.flatnonzero(y == c))[:k]] = True
    return mask


def check_options(augment: Optional[str], val_split: float) -> None:
    if augment is not None and augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r} (known: {', '.join(AUGMENTATIONS)}, or null for the"
                         " dataset's default)")
    if not 0.0 <= val_split <= MAX_VAL_SPLIT:
        raise ValueError(f"val_split must be a fraction in [0, {MAX_VAL_SPLIT}], got {val_split}")


def torch_split_part(n: int, fraction: float, seed: int) -> torch.Tensor:
    """The sorted indices of the first part of `torch.utils.data.random_split(range(n), [fraction, 1 -
    fraction], generator=torch.Generator().manual_seed(seed))`: RRKD's GenericDataModule (Ramos-Ramos/rrkd
    rrkd.ipynb, commit aa4298b, cell 18: [0.9, 0.1], seed 42, the first part trained on). torch's own
    function, so the same images as the notebook's for the same torch (random_split is a randperm)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train_split must be a fraction in (0, 1], got {fraction}")
    if fraction == 1:
        return torch.arange(n)
    from torch.utils.data import random_split

    # The notebook passes [0.9, 0.1]; 1 - 0.9 is 0.0999..., whose floor would move one image over.
    part, _ = random_split(range(n), [fraction, round(1 - fraction, 12)], generator=torch.Generator().manual_seed(seed))
    return torch.tensor(sorted(part.indices), dtype=torch.long)


def configure(data: ImageData, augment: Optional[str] = None, val_split: float = 0.0,
              val_seed: int = 0) -> ImageData:
    """What every loader applies last: the `augment` override and the validation hold-out."""
    check_options(augment, val_split)
    return data.with_augment(augment).holdout(val_split, val_seed)


def download_atomically(root: str, fetch: Callable[[str], object], keep: Sequence[str], what: str,
                        by_hand: str) -> None:
    """Runs `fetch(tmp)` (torchvision's download and check) in a temporary folder inside `root` and, once it
    returned, moves the paths `keep` (relative to tmp) into place under `root`, file by file with os.replace.
    On any failure the temporary folder goes (and `root`, if this made it): no partial file is left behind."""
    made = []
    p = root
    while not os.path.exists(p):
        made.append(p)
        p = os.path.dirname(p)
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".kd-sweep-download-", dir=root)
    done = False
    try:
        try:
            fetch(tmp)
            absent = [rel for rel in keep if not os.path.exists(os.path.join(tmp, rel))]
            if absent:
                raise RuntimeError(f"the download did not produce {', '.join(absent)}")
        except Exception as e:
            raise DatasetMissing(
                f"Downloading {what} failed ({type(e).__name__}: {str(e).strip()}); nothing was left under"
                f" {root}. Check the network (or proxy) and retry, or {by_hand}") from e
        for rel in keep:
            _move_into_place(os.path.join(tmp, rel), os.path.join(root, rel))
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            for folder in made:  # deepest first; stops at the first one that is not empty
                try:
                    os.rmdir(folder)
                except OSError:
                    break


def _move_into_place(src: str, dst: str) -> None:
    if os.path.isdir(src) and os.path.isdir(dst):
        for name in sorted(os.listdir(src)):
            _move_into_place(os.path.join(src, name), os.path.join(dst, name))
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.replace(src, dst)


def missing_part(absent: Sequence[str], expected: Sequence[str]) -> str:
    """The '; missing: a, b' part of a message: empty unless only some of the expected files are absent."""
    return f"; missing: {', '.join(absent)}" if absent and len(absent) < len(expected) else ""


def open_or_download(read: Callable[[], T], root: str, *, download: bool, present: bool, missing: str,
                     corrupt: Callable[[Exception], str], fetch: Callable[[str], object],
                     keep: Sequence[str], what: str, by_hand: str) -> T:
    """`read()` the data in place (torchvision raises RuntimeError for absent or corrupt files); with
    `download`, fetch it first when that fails, through `download_atomically`."""
    if not present and not download:
        raise DatasetMissing(missing)
    try:
        return read()
    except RuntimeError as e:
        if not download:
            raise DatasetMissing(corrupt(e)) from None
    download_atomically(root, fetch, keep, what, by_hand)
    try:
        return read()
    except RuntimeError as e:
        raise DatasetMissing(corrupt(e)) from None


def train_batches(n: int, batch_size: int, gen: torch.Generator, drop_last: bool = True
                  ) -> Iterator[torch.Tensor]:
    """Index batches of one shuffled epoch; the generator makes the order a function of the seed."""
    order = torch.randperm(n, generator=gen, device=gen.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]


def eval_batches(n: int, batch_size: int) -> Iterator[slice]:
    for i in range(0, n, batch_size):
        yield slice(i, min(i + batch_size, n))
