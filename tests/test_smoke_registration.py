"""`--smoke` reads what is particular to a dataset from its registration and what is particular to a method
from the method: a dataset in a new module is found and its smoke writer used, a method's own smoke knobs
are applied, and a dataset --smoke cannot get data for is a one-line error, never a KeyError."""
import sys
import textwrap

import pytest
import yaml
from pydantic import Field
from typer.testing import CliRunner

import trainables.datasets as datasets
from orchestrator.cli import app
from orchestrator.smoke import smoke_root, smoke_sweep
from orchestrator.spec import SpecError, load_sweep
from trainables.datasets import DATASETS, DatasetMissing, load_dataset, registration, smoke_of
from trainables.methods import METHODS, Knobs, Method

from .conftest import SWEEPS

TOY_MODULE = '''
"""A dataset in its own module, as a new one would be: the loader and its registration, nothing else."""
import os

import numpy as np
import torch

from trainables.datasets.base import DatasetMissing, ImageData
from trainables.datasets.registration import Smoke, register_dataset


def write_toy(root, n_train, n_test):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        np.savez(os.path.join(root, f"{split}.npz"), x=rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8),
                 y=np.arange(n) % 4)


@register_dataset("toyset", smoke=Smoke(write_toy, written=(40, 20), images=(24, 12), batch_size=8))
def load_toy(root, download=False, verify_checksum=True, augment=None, val_split=0.0, val_seed=0):
    if not os.path.isfile(os.path.join(root, "train.npz")):
        raise DatasetMissing(f"toyset not found under {root}")
    tr, te = (np.load(os.path.join(root, f"{s}.npz")) for s in ("train", "test"))
    return ImageData(torch.from_numpy(tr["x"]), torch.from_numpy(tr["y"]).long(), torch.from_numpy(te["x"]),
                     torch.from_numpy(te["y"]).long(), num_classes=4, mean=(0.5,), std=(0.25,))
'''


def sweep_file(tmp_path, dataset: dict, **extra) -> str:
    raw = {"name": "toy", "dataset": dataset,
           "pairs": [{"teacher": {"model": "mlp", "hidden": [16]}, "student": {"model": "mlp", "hidden": [8]}}],
           "method": "coss", "knobs": {"beta": 1.0}, "seeds": [0, 1],
           "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "milestones": []},
           "eval": {"knn": {"k": 5}}, "resources": {"cpu": 1, "gpu": 0}, **extra}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture
def registries(monkeypatch):
    """Datasets, modules and methods a test registers are gone after it."""
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    monkeypatch.setattr(registration, "_SMOKE", dict(registration._SMOKE))
    monkeypatch.setattr(registration, "_IMAGE_FILES", set(registration._IMAGE_FILES))
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    yield
    sys.modules.pop("trainables.datasets.toyset", None)
    vars(datasets).pop("toyset", None)


def test_a_dataset_in_a_new_module_is_found_and_its_smoke_writer_used(tmp_path, monkeypatch, registries):
    extra = tmp_path / "more_datasets"
    extra.mkdir()
    (extra / "toyset.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.setattr(datasets, "__path__", [*datasets.__path__, str(extra)])
    assert "toyset" not in DATASETS
    datasets.import_dataset_modules()  # what importing the package does: no edit anywhere names the module
    assert "toyset" in DATASETS and smoke_of("toyset").written == (40, 20)

    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path / "cache"))
    sweep = load_sweep(sweep_file(tmp_path, {"name": "toyset", "root": str(tmp_path / "nowhere")}))
    smoke, where = smoke_sweep(sweep, str(tmp_path))
    root = smoke_root("toyset")
    assert smoke.dataset.root == str(root)
    assert where == f"a generated toyset (random pixels, real on-disk format) under {root}"
    assert (smoke.dataset.max_train, smoke.dataset.max_test, smoke.train.batch_size) == (24, 12, 8)
    assert smoke.knobs["k_pool"] == 24 // 4  # CoSS's pool from the dataset's own smoke image count
    data = load_dataset("toyset", smoke.dataset.root, **smoke.dataset.loader_args())
    assert (data.num_train, len(data.test_y)) == (24, 12)  # of the 40/20 its writer wrote


def test_a_dataset_without_a_smoke_writer_is_a_clear_error(tmp_path, monkeypatch, registries):
    @DATASETS.register("bare")  # straight into the registry: the default smoke facts, no writer
    def load_bare(root, **_):
        raise DatasetMissing(f"bare not found under {root}")

    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path / "cache"))
    sweep = load_sweep(sweep_file(tmp_path, {"name": "bare", "root": str(tmp_path / "nowhere")}))
    with pytest.raises(SpecError) as e:
        smoke_sweep(sweep, str(tmp_path))
    assert e.value.field == "dataset" and "bare not found under" in str(e.value)
    assert "registers no smoke data writer" in str(e.value)
    assert not (tmp_path / "cache").exists()


def test_an_unknown_dataset_under_smoke_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", sweep_file(tmp_path, {"name": "nosuch"}), "--smoke"])
    assert res.exit_code == 2 and "unknown dataset 'nosuch' (known: cifar10, cifar100, digits" in res.output
    with pytest.raises(ValueError, match="unknown dataset 'nosuch'"):
        smoke_of("nosuch")


def test_smoke_applies_each_methods_own_knobs(tmp_path, registries):
    class WarmupKnobs(Knobs):
        warmup_epochs: int = Field(10, ge=0)
        weight: float = 1.0

    @METHODS.register("warmup")
    class Warmup(Method):  # a method smoke.py has never heard of
        Knobs = WarmupKnobs
        smoke_limits = {"warmup_epochs": 2}

    cells = [{"method": "warmup", "warmup_epochs": 5}, {"method": "warmup", "warmup_epochs": 1},
             {"method": "coss", "k": 20}]
    sweep = load_sweep(sweep_file(tmp_path, {"name": "digits"}, knobs={"coss": {"beta": 1.0, "k_pool": 31}},
                                  cells=cells))
    smoke, _ = smoke_sweep(sweep, str(tmp_path))
    assert smoke.knobs["warmup"] == {"warmup_epochs": 2}  # the default 10, held to the method's limit
    assert smoke.knobs["coss"] == {"beta": 1.0, "k_pool": 31}  # 31 is within 128 // 4
    assert smoke.cells == [{"method": "warmup", "warmup_epochs": 2}, {"method": "warmup", "warmup_epochs": 1},
                           {"method": "coss", "k": 20}]
    assert Method.smoke_knobs({"scale": 2.0}, 10) == {}  # the base: a smoke run keeps the sweep's knobs


def test_imagenet_declares_its_own_smoke_size(tmp_path, monkeypatch):
    """The sizes smoke.py once held for ImageNet, now ImageNet's own; CoSS's k held to its pool of 12 // 4."""
    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path / "cache"))
    smoke, _ = smoke_sweep(load_sweep(SWEEPS / "coss_imagenet.yaml"), str(SWEEPS))
    ds = smoke.dataset
    assert (ds.max_train, ds.max_test, ds.image_size, smoke.train.batch_size) == (12, 6, 64, 4)
    assert (smoke.knobs["k"], smoke.knobs["k_pool"]) == (3, 3)


def test_a_dataset_registered_as_image_files_takes_their_options_without_an_edit_to_the_spec(tmp_path, registries):
    """The sweep file's image-file options (crop side, MoCo v2's augmentation) follow the registration,
    not a dataset name written in the spec; in-memory datasets still refuse them, naming who takes them."""
    @registration.register_dataset("folders", image_files=True)
    def load_folders(root, download=False, verify_checksum=True, augment=None, val_split=0.0, val_seed=0,
                     image_size=224):
        raise DatasetMissing("never loaded here")

    sweep = load_sweep(sweep_file(tmp_path, {"name": "folders", "image_size": 96, "augment": "mocov2"}))
    assert sweep.dataset.image_size == 96 and sweep.dataset.augment == "mocov2"
    with pytest.raises(SpecError, match="train_split and normalize are for in-memory datasets; folders takes"):
        load_sweep(sweep_file(tmp_path, {"name": "folders", "train_split": 0.9}))
    with pytest.raises(SpecError, match=r"image_size is for datasets read from image files \(folders, imagenet\)"):
        load_sweep(sweep_file(tmp_path, {"name": "cifar100", "image_size": 96}))
