"""Reading the CIFAR releases' pickles without running code from them.

A pickle may name any importable callable, and unpickling calls it: a doctored `data_batch_1` would
run on the driver (and under `--dry-run`) the moment torchvision's reader opened it. A dataset is data,
so the batches are read with an unpickler that resolves only what the format holds: plain containers,
strings, numbers, and numpy arrays (rebuilt through numpy's own array constructors, nothing else).
"""
from __future__ import annotations

import io
import pickle

import numpy as np

# (module, name) pairs a numpy array's pickle refers to, across numpy 1 and 2 and pickle protocols 2-5.
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


# Protocol 2 written by Python 3 spells bytes as _codecs.encode(str, "latin1"): harmless, and a re-pack of
# the release may be written that way.
_CODECS = ("_codecs", "encode")


class UnsafePickle(RuntimeError):
    """The file names something a CIFAR batch never holds (a RuntimeError: the loaders' "corrupt" path)."""


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY:
            return getattr(np, name) if module == "numpy" else _numpy_attr(module, name)
        if (module, name) == _CODECS:
            import codecs

            return codecs.encode
        raise UnsafePickle(f"it refers to {module}.{name}, which a data batch never holds: refused without"
                           " running it")


def _numpy_attr(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


def load_data_pickle(path: str) -> dict:
    """A CIFAR batch file (python version) as a dict with str keys; only data types are resolved. The
    releases were written by Python 2: bytes are read as latin-1 strings, as torchvision reads them."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        out = _DataOnly(io.BytesIO(raw), encoding="latin1").load()
    except UnsafePickle as e:
        raise UnsafePickle(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - truncated or not a pickle: the same "corrupt" answer
        raise RuntimeError(f"{path} is not a readable batch ({type(e).__name__}: {e})") from None
    if not isinstance(out, dict):
        raise RuntimeError(f"{path} does not hold a batch (a dict), but a {type(out).__name__}")
    return out
