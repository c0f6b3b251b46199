"""How a dataset module registers itself: `@register_dataset(name, smoke=Smoke(...))` on its loader.

The package imports each of its public modules (__init__), so a new dataset is one file: its loader,
registered with what `kd-sweep run --smoke` needs of it. `orchestrator/smoke.py` reads these facts and
names no dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, TypeVar

from ..registry import DATASETS

L = TypeVar("L", bound=Callable)


@dataclass(frozen=True)
class Smoke:
    """What `kd-sweep run --smoke` uses of a dataset when it trains at toy size."""
    # Writes a small copy in the real on-disk format (random pixels) under a root: write(root, n_train,
    # n_test). Used when the real data is not on this machine; None: the data cannot be missing (bundled
    # with a library), or there is no writer yet, and --smoke then says so.
    write: Optional[Callable[[Path, int, int], object]] = None
    written: tuple[int, int] = (200, 100)  # train and test images the writer writes
    images: tuple[int, int] = (128, 64)    # train and test images a smoke run uses (max_train, max_test)
    batch_size: int = 32                   # the largest batch a smoke run trains with
    image_size: Optional[int] = None       # the crop side, for data read from image files; None: leave it


_SMOKE: dict[str, Smoke] = {}
_IMAGE_FILES: set[str] = set()


def register_dataset(name: str, smoke: Smoke = Smoke(), image_files: bool = False) -> Callable[[L], L]:
    """Registers the decorated loader in DATASETS under NAME, and SMOKE as its smoke facts. IMAGE_FILES: the
    loader reads image files of their own sizes (an ImageNet folder) rather than arrays in memory, so a
    sweep may set its crop side (`image_size`) and MoCo v2's augmentation, and not `train_split` or
    `normalize` (the in-memory loaders' options)."""
    def deco(load: L) -> L:
        DATASETS.register(name)(load)
        _SMOKE[name] = smoke
        if image_files:
            _IMAGE_FILES.add(name)
        return load

    return deco


def image_file_datasets() -> list[str]:
    """The registered datasets read from image files (`register_dataset(..., image_files=True)`)."""
    return sorted(_IMAGE_FILES)


def smoke_of(name: str) -> Smoke:
    """The smoke facts of dataset NAME; a loader put straight into DATASETS gets the defaults (no writer)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(DATASETS.names())})")
    return _SMOKE.get(name, Smoke())
