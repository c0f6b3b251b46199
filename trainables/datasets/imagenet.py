"""ImageNet as an ImageFolder root (`train/` and `val/`, one folder per class): too large to hold in
memory, so images stream from disk through a DataLoader whose workers decode and augment them.

It keeps the interface the trainer uses for in-memory data (`epoch`, `eval_loader`, `eval_view`,
`labels`, `num_train`), so methods and evaluation need no ImageNet-specific code.
"""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch

from .base import DatasetMissing, check_options, stratified_mask
from .registration import Smoke, register_dataset
from .synthetic import write_imagefolder

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224


def train_transform(augment: str | None, size: int = SIZE):
    """`crop_flip` (default): RandomResizedCrop + flip (torchvision/Miles recipe). `mocov2`: MoCo v2's
    augmentation, which CoSS trains with (crop scale (0.2, 1), colour jitter 0.4/0.4/0.4/0.1 p 0.8,
    greyscale p 0.2, Gaussian blur sigma in [0.1, 2] p 0.5, flip). `randaugment`: RandomResizedCrop + flip,
    then torchvision's RandAugment (2 ops, magnitude 9)."""
    import torchvision.transforms as T  # here, not at the top: ~2 s that only folder datasets need

    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    if augment == "mocov2":
        return T.Compose([
            T.RandomResizedCrop(size, scale=(0.2, 1.0)),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
            T.RandomHorizontalFlip(), *norm])
    if augment == "none":
        return eval_transform(size)
    if augment in (None, "crop_flip"):
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
    if augment == "randaugment":
        return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.RandAugment(), *norm])
    if augment == "crop":
        return T.Compose([T.RandomResizedCrop(size), *norm])
    return T.Compose([T.Resize(_resize(size)), T.CenterCrop(size), T.RandomHorizontalFlip(), *norm])  # flip


def _resize(size: int) -> int:
    return round(size * 256 / 224)  # the 256 -> 224 centre crop, at any size


def eval_transform(size: int = SIZE):
    import torchvision.transforms as T

    return T.Compose([T.Resize(_resize(size)), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


class _Split(torch.utils.data.Dataset):
    def __init__(self, samples: list[tuple[str, int]], transform):
        from torchvision.datasets.folder import default_loader

        self.samples, self.transform, self.load = samples, transform, default_loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, y = self.samples[i]
        return self.transform(self.load(path)), y


@dataclass
class FolderData:
    train_samples: list[tuple[str, int]]
    test_samples: list[tuple[str, int]]
    num_classes: int
    augment: str | None = None
    eval_split: str = "test"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    in_channels: int = 3
    image_size: int = SIZE
    workers: int = 0  # decoding processes; the trainer sets it from the trial's CPU share

    def __post_init__(self):
        self.train_y = torch.tensor([y for _, y in self.train_samples], dtype=torch.int64)
        self.test_y = torch.tensor([y for _, y in self.test_samples], dtype=torch.int64)

    @property
    def num_train(self) -> int:
        return len(self.train_samples)

    def subset(self, fraction: float, seed: int = 0, split: str = "train") -> "FolderData":
        kept, _ = _holdout(self._samples(split), 1 - fraction, seed)
        return replace(self, **{"train_samples" if split == "train" else "test_samples": kept})

    def to(self, device: torch.device) -> "FolderData":
        self.device = torch.device(device)
        return self  # images stay on disk; batches move to the device as they are used

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for samples in (self.train_samples, self.test_samples):
            for path, y in samples:
                h.update(f"{os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}:{y};".encode())
        return h.hexdigest()[:16]

    def labels(self, split: str) -> torch.Tensor:
        return self.train_y if split == "train" else self.test_y

    def _samples(self, split: str) -> list[tuple[str, int]]:
        return self.train_samples if split == "train" else self.test_samples

    def eval_view(self, split: str, idx) -> torch.Tensor:
        samples = self._samples(split)
        picked = samples[idx] if isinstance(idx, slice) else [samples[int(i)] for i in idx]
        ds = _Split(picked, eval_transform(self.image_size))
        return torch.stack([ds[i][0] for i in range(len(ds))])

    def _loader(self, ds, workers: int, **kw) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(ds, num_workers=workers, pin_memory=self.device.type == "cuda",
                                           persistent_workers=False, **kw)

    def eval_loader(self, split: str, batch_size: int = 256) -> Iterator[torch.Tensor]:
        for x, _ in self._loader(_Split(self._samples(split), eval_transform(self.image_size)), self.workers,
                                 batch_size=batch_size):
            yield x

    def probe_loader(self, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """The training images in order, each freshly RandomResizedCrop'd + flipped at `image_size` and
        normalised, decoded by `workers` processes and seeded by `seed`: the view a linear probe with
        `augment: true` trains on (MoCo's main_lincls.py: RandomResizedCrop(224) + RandomHorizontalFlip)."""
        ds = _Split(self.train_samples, train_transform("crop_flip", self.image_size))
        order = [list(range(i, min(i + batch_size, len(ds)))) for i in range(0, len(ds), batch_size)]
        if self.workers == 0:
            for _, x, _ in self._epoch_in_process(order, order, ds, seed):
                yield x
            return
        loader = self._loader(ds, self.workers, batch_sampler=order, generator=torch.Generator().manual_seed(seed),
                              worker_init_fn=_seed_worker)
        for x, _ in loader:
            yield x

    def epoch(self, batches: list[torch.Tensor], gen: torch.Generator, workers: int = 0
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The given index batches, decoded and augmented by `workers` processes; the augmentation's
        randomness is seeded from `gen`, so an epoch is a function of the trial's seed and epoch."""
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device).item())
        order = [b.cpu().tolist() for b in batches]
        ds = _Split(self.train_samples, train_transform(self.augment, self.image_size))
        if workers == 0:
            yield from self._epoch_in_process(batches, order, ds, seed)
            return
        loader = self._loader(ds, workers, batch_sampler=order, generator=torch.Generator().manual_seed(seed),
                              worker_init_fn=_seed_worker)
        for idx, (x, y) in zip(batches, loader):
            yield idx, x, y

    @staticmethod
    def _epoch_in_process(batches, order, ds, seed):
        # The transforms draw from torch's and Python's global generators: give them a stream of their
        # own, so neither they nor the training step (dropout...) shift the other's random numbers.
        stream = _Stream(seed)
        for idx, b in zip(batches, order):
            with stream:
                items = [ds[i] for i in b]
            yield idx, torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


class _Stream:
    """A private (torch, random) generator state, swapped in for the duration of a `with`."""

    def __init__(self, seed: int):
        outer = torch.get_rng_state(), random.getstate()
        torch.manual_seed(seed)
        random.seed(seed)
        self.state = torch.get_rng_state(), random.getstate()
        torch.set_rng_state(outer[0])
        random.setstate(outer[1])

    def __enter__(self):
        self.outer = torch.get_rng_state(), random.getstate()
        torch.set_rng_state(self.state[0])
        random.setstate(self.state[1])

    def __exit__(self, *exc):
        self.state = torch.get_rng_state(), random.getstate()
        torch.set_rng_state(self.outer[0])
        random.setstate(self.outer[1])


def _seed_worker(_: int) -> None:
    # torchvision's transforms draw from torch's and Python's generators; the loader seeds torch's.
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _holdout(samples: list[tuple[str, int]], fraction: float, seed: int):
    val = stratified_mask(np.array([c for _, c in samples]), fraction, seed)
    return [s for s, v in zip(samples, val) if not v], [s for s, v in zip(samples, val) if v]


# --smoke: ImageNet-sized models need fewer images and small batches (two trials at batch 256 outgrow a 24 GB
# machine), and at 224 pixels they outgrow it two trials at a time even so: 64 still runs every layer
# (ViT-B/16: 4 x 4 patches) at a twelfth of the memory and time.
@register_dataset("imagenet", smoke=Smoke(write_imagefolder, written=(24, 12), images=(12, 6), batch_size=4,
                                          image_size=64), image_files=True)
def load_imagenet(root: str, download: bool = False, verify_checksum: bool = True, augment: str | None = None,
                  val_split: float = 0.0, val_seed: int = 0, image_size: int = SIZE) -> FolderData:
    """`image_size`: the side of the training and evaluation crops (224, ImageNet's; smaller for quick
    runs, e.g. `--smoke`)."""
    check_options(augment, val_split)
    missing = [d for d in ("train", "val") if not os.path.isdir(os.path.join(root, d))]
    if missing:
        raise DatasetMissing(
            f"ImageNet not found: looked for {', '.join(os.path.join(root, d) + '/' for d in missing)} (an"
            " ImageFolder layout: one folder per class of JPEGs in each). kd-sweep never downloads ImageNet:"
            " get ILSVRC-2012 from image-net.org, extract train/ and val/ (val sorted into class folders)"
            f" under {root}")
    if download:
        raise DatasetMissing("ImageNet cannot be downloaded by kd-sweep: set `dataset.download: false`")
    import torchvision

    train = torchvision.datasets.ImageFolder(os.path.join(root, "train"))
    val = torchvision.datasets.ImageFolder(os.path.join(root, "val"))
    if train.classes != val.classes:
        raise DatasetMissing(f"ImageNet under {root}: train/ and val/ hold different class folders")
    data = FolderData(list(train.samples), list(val.samples), len(train.classes), augment, image_size=image_size)
    if val_split > 0:
        kept, held = _holdout(data.train_samples, val_split, val_seed)
        data = FolderData(kept, held, data.num_classes, augment, eval_split="val", image_size=image_size)
    return data
