"""Model zoo: importing the modules registers their builders in MODELS."""
from __future__ import annotations

import inspect
from typing import Any

from ..registry import MODELS
from . import cifar_resnet, mlp, wrn, vgg, mobilenetv2, shufflenet, resnetv2, imagenet, ae_encoder  # noqa: F401  (registration side effect)
from .base import Backbone, Output

__all__ = ["Backbone", "Output", "build_model", "model_options"]

# Filled from the dataset, not from the model's option block.
_DATA_ARGS = ("num_classes", "in_channels", "image_size")


def model_options(name: str) -> dict[str, Any]:
    """The builder's tunable options and their defaults (what a config may set under the model)."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {k: p.default for k, p in params.items() if k not in _DATA_ARGS}


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, **options: Any) -> Backbone:
    builder = MODELS.get(name)
    params = inspect.signature(builder).parameters
    allowed = model_options(name)
    for opt in options:
        if opt not in allowed:
            known = ", ".join(allowed) or "none"
            raise ValueError(f"model {name!r} has no option {opt!r} (options: {known})")
    # Resnets are size-agnostic and take no image_size; pass data args only where the builder wants them.
    data = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    kwargs = {k: v for k, v in data.items() if k in params}
    return builder(**kwargs, **options)
