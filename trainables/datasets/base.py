"""In-memory image datasets: uint8 tensors, augmented per batch as tensors (on the trial's device).

Small vision sets (digits, CIFAR) fit in memory many times over; holding them as one uint8 tensor
and augmenting whole batches at once replaces a DataLoader of per-image PIL transforms.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import torch


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
        return ImageData(self.train_x.to(device), self.train_y.to(device), self.test_x.to(device),
                         self.test_y.to(device), self.num_classes, self.mean, self.std,
                         self.crop_padding, self.flip)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x.float().div_(255) - mean) / std

    def augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Training view of a uint8 batch: torchvision's RandomCrop(pad, fill 0) + flip, then normalise."""
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
        if self.flip:
            flip = torch.rand(b, generator=gen, device=gen.device).to(x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return self.normalise(x)


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
