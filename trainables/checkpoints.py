"""Teacher weights from a file: RepDistiller/mdistiller `{'model': ...}`, MoCo-style `{'state_dict': ...}`,
or a plain state dict. Always `weights_only=True`: a checkpoint is data, never code. The one reader of
weight files: the runner's teacher checkpoints and the ImageNet models' `weights=` both come here."""
from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # a type only: the model zoo (imagenet's `weights=`) imports this module
    from .models.base import Backbone

# A file holding both wrappers is read through 'model' first: that is RepDistiller's and mdistiller's
# format, the teacher files sweeps load, and the order the runner always had, so no teacher file that
# loaded before loads differently now.
WRAPPERS = ("model", "state_dict")


class CheckpointError(ValueError):
    """A weight file that cannot be read into the model. A ValueError: the model builders raise it for a
    bad `weights=` file, and their callers treat any option that does not build as a ValueError."""


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    if os.path.isdir(path):
        raise CheckpointError(f"weights file {path} is a folder: give the checkpoint file in it")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise CheckpointError(f"weights file {path} is empty (an interrupted copy?)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a weights-only checkpoint ({first})") from None
    except Exception as e:  # noqa: BLE001 - a text file, a truncated zip...: torch raises many types here
        raise CheckpointError(f"{path} is not a torch checkpoint ({type(e).__name__}: {e})") from None
    for key in WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (expected tensors, or a dict with 'model' or"
                              " 'state_dict')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_into(model: Backbone, state: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """Load strictly (after the model's own renaming of foreign keys, e.g. CRD's `linear` -> `fc`);
    a mismatch names the first offending key. Returns the state as loaded."""
    if hasattr(model, "adapt_state_dict"):
        state = model.adapt_state_dict(state)
    own = model.state_dict()
    # Files from before BatchNorm counted its batches (old torchvision ones) have no counter; it only
    # matters to momentum=None, so the model's own stands in, as BatchNorm itself does for such files.
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    for k, v in own.items():
        if k not in state:
            raise CheckpointError(f"{path}: missing key {k!r} for this model")
        if state[k].shape != v.shape:
            raise CheckpointError(f"{path}: key {k!r} has shape {tuple(state[k].shape)},"
                                  f" the model expects {tuple(v.shape)}")
    extra = [k for k in state if k not in own]
    if extra:
        raise CheckpointError(f"{path}: unexpected key {extra[0]!r} (is this checkpoint for another model?)")
    model.load_state_dict(state)
    return state
