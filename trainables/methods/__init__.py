"""Method registry. Importing a method's module registers it; `build_method` makes one for a trial."""
from __future__ import annotations

import importlib
import pkgutil

from ..registry import METHODS
from .base import Knobs, Method

# Every public module in this package is a method: adding a method needs no edit here. `base` and the
# private modules (`_maps`, `_stage`) are what the methods share.
for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["METHODS", "Knobs", "Method", "method_class", "method_knob_model"]


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def method_knob_model(name: str) -> type[Knobs]:
    return METHODS.get(name).Knobs
