"""RRKD's sweep files run the authors' protocol (github.com/Ramos-Ramos/rrkd, rrkd.ipynb at commit aa4298b):
the notebook's 90% training split, SVHN unflipped, SPKD on the pooled embedding, LPKD as LitLPDistiller
runs it, momentum 0.9 for the supervised MNIST student, and each published column scored as the notebook
scores it."""
from pathlib import Path

import pytest
import torch
from torch.utils.data import random_split

from orchestrator.spec import load_sweep
from trainables.datasets import load_dataset
from trainables.datasets.base import torch_split_part
from trainables.datasets.synthetic import write_svhn

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
TABLE3 = ["rrkd_table3_cifar10", "rrkd_table3_cifar100", "rrkd_table3_svhn"]
MNIST = ["rrkd_tables12_mnist_ssl", "rrkd_tables12_mnist_supervised", "rrkd_table5_anchors"]


def sweep(name: str):
    return load_sweep(SWEEPS / f"{name}.yaml")


# --- the notebook's training split (cell 18, GenericDataModule.setup) --------------------------------

@pytest.mark.parametrize("n, kept", [(73257, 65932), (50000, 45000), (60000, 54000), (11, 10)])
def test_torch_split_part_is_the_notebooks_random_split(n, kept):
    got = torch_split_part(n, 0.9, 42)
    ds_train, _ = random_split(range(n), [0.9, 0.1], generator=torch.Generator().manual_seed(42))  # cell 18
    assert len(got) == kept == len(ds_train)
    assert got.tolist() == sorted(ds_train.indices)
    assert torch.equal(torch_split_part(n, 0.9, 42), got)  # seeded
    assert not torch.equal(torch_split_part(n, 0.9, 43), got)
    assert torch.equal(torch_split_part(n, 1.0, 42), torch.arange(n))
    with pytest.raises(ValueError):
        torch_split_part(n, 0.0, 42)


def test_train_split_keeps_those_images_and_the_whole_test_split(tmp_path):
    write_svhn(tmp_path, n_train=50, n_test=20, seed=3)
    full = load_dataset("svhn", str(tmp_path), verify_checksum=False)
    part = load_dataset("svhn", str(tmp_path), verify_checksum=False, train_split=0.9)
    keep = torch_split_part(50, 0.9, 42)
    assert part.num_train == 45 == len(keep)
    assert torch.equal(part.train_x, full.train_x[keep]) and torch.equal(part.train_y, full.train_y[keep])
    assert torch.equal(part.test_x, full.test_x) and torch.equal(part.test_y, full.test_y)
    other = load_dataset("svhn", str(tmp_path), verify_checksum=False, train_split=0.9, train_split_seed=0)
    assert not torch.equal(other.train_y, part.train_y) or not torch.equal(other.train_x, part.train_x)
    unflipped = load_dataset("svhn", str(tmp_path), verify_checksum=False, train_split=0.9, augment="none")
    assert (unflipped.crop_padding, unflipped.flip, unflipped.num_train) == (0, False, 45)


def test_the_notebooks_normalisation_replaces_the_datasets_statistics(tmp_path):
    write_svhn(tmp_path, n_train=10, n_test=10)
    d = load_dataset("svhn", str(tmp_path), verify_checksum=False, normalize={"mean": [0.5], "std": [0.5]})
    assert d.mean == (0.5, 0.5, 0.5) and d.std == (0.5, 0.5, 0.5)
    x = d.train_x[:2]
    assert torch.allclose(d.eval_view("train", slice(0, 2)), x.float() / 255 * 2 - 1)  # Normalize(0.5, 0.5)
    with pytest.raises(ValueError, match=r"normalize.mean takes 1 value or 3 for this dataset \(3 channels\), got 2"):
        load_dataset("svhn", str(tmp_path), verify_checksum=False, normalize={"mean": [0.5, 0.5], "std": [0.5]})


def test_svhn_without_augmentation(tmp_path):
    write_svhn(tmp_path, n_train=10, n_test=10)
    d = load_dataset("svhn", str(tmp_path), verify_checksum=False, augment="none", train_fraction=0.9)
    assert (d.crop_padding, d.flip) == (0, False) and d.num_train == 9
    x = d.train_x[:4]
    assert torch.equal(d.augment(x, torch.Generator().manual_seed(0)), d.normalise(x))  # the plain images


# --- the sweep files ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TABLE3 + MNIST)
def test_every_rrkd_sweep_trains_on_the_notebooks_90_percent_normalised_as_it(name):
    ds = sweep(name).dataset
    assert (ds.train_fraction, ds.train_split, ds.train_split_seed) == (1.0, 0.9, 42)
    assert ds.normalize.model_dump() == {"mean": [0.5], "std": [0.5]}


def test_svhn_is_not_flipped_and_cifar_is():
    assert sweep("rrkd_table3_svhn").dataset.augment == "none"
    assert sweep("rrkd_table3_cifar10").dataset.augment == sweep("rrkd_table3_cifar100").dataset.augment == "flip"


@pytest.mark.parametrize("name", TABLE3)
def test_table3_methods_as_the_notebook_runs_them(name):
    s = sweep(name)
    sp = s.knobs_for("sp", {"method": "sp"})
    assert sp["at"] == "pooled" and sp["weight"] == 1.0 and sp["lambda_ce"] == 1.0
    lpkd = s.knobs_for("lpkd", {"method": "lpkd"})
    assert (lpkd["weight"], lpkd["soft_weight"], lpkd["T"], lpkd["sigma2"], lpkd["reduction"]) == (1.5, 2.0, 1.0, 1.0, "sum")
    rrkd = s.knobs_for("rrkd", {"method": "rrkd"})
    assert rrkd["anchors"] == "in_batch" and rrkd["lambda_ce"] == 1.0
    # students: SGD lr 0.1, momentum 0.9, no decay; the teacher: momentum 0 (LitModel's default)
    assert (s.train.lr, s.train.momentum, s.train.weight_decay, s.train.milestones) == (0.1, 0.9, 0.0, [])
    assert (s.teacher_schedule.lr, s.teacher_schedule.momentum, s.teacher_schedule.weight_decay) == (0.1, 0.0, 0.0)
    assert s.train.epochs == s.teacher_schedule.epochs == (20 if "svhn" in name else 50)
    assert s.train.batch_size == s.teacher_schedule.batch_size == 128


@pytest.mark.parametrize("name", ["rrkd_table3_cifar10", "rrkd_table3_cifar100", "rrkd_table3_svhn",
                                  "rrkd_tables12_mnist_ssl", "rrkd_tables12_mnist_supervised", "rrkd_table5_anchors"])
def test_scored_by_classifier_and_by_the_notebooks_logistic_regression(name):
    s = sweep(name)
    assert "linear" in s.eval.protocols()
    if name in TABLE3 or name == "rrkd_tables12_mnist_supervised":  # teacher/SPKD/LPKD/baselines: classifier
        assert "classifier" in s.eval.protocols()
    # quick_sk_probe: sklearn's LogisticRegression(max_iter=5000), C at its default 1
    assert (s.eval.linear.solver, s.eval.linear.C, s.eval.linear.max_iter) == ("lbfgs", 1.0, 5000)
    assert not any("SGD for 100 epochs" in d for d in s.paper.deviations)


def test_supervised_mnist_trains_the_baseline_as_the_notebook_does():
    """LitDistiller's momentum 0.9 for the distilled student, LitModel's 0 for the teacher and for the
    baseline (the Scratch column), in the trial configs the sweep really makes."""
    from orchestrator.trials import student_trials

    s = sweep("rrkd_tables12_mnist_supervised")
    trials = student_trials(s, {"name": "mnist", "root": "/data"}, {0: "t"})
    momentum = {(c["role"], c["seed"]): c["train"]["momentum"] for c in trials}
    assert momentum == {**{("student", k): 0.9 for k in s.seeds}, **{("scratch", k): 0.0 for k in s.seeds}}
    assert s.teacher_schedule.momentum == 0.0
    assert not any("momentum" in d for d in s.paper.deviations)
    # A sweep without scratch_train trains its scratch students on `train`, with the hashes it had.
    plain = sweep("rrkd_tables12_mnist_ssl")
    assert plain.scratch_train is None and "scratch_train" not in plain.model_dump()


def test_mnist_autoencoders_are_the_notebooks():
    from trainables.methods import method_class

    knobs = method_class("autoencoder").Knobs()  # the teacher's objective runs its defaults
    assert knobs.output == "tanh" and knobs.code_activation and knobs.dropout == 0.5
    for name in ("rrkd_tables12_mnist_ssl", "rrkd_table5_anchors"):
        s = sweep(name)
        assert s.teacher_method == "autoencoder"
        assert (s.teacher_schedule.lr, s.teacher_schedule.momentum, s.teacher_schedule.epochs) == (0.1, 0.9, 20)


@pytest.mark.parametrize("name", ["rrkd_table3_cifar10", "rrkd_table3_cifar100", "rrkd_table3_svhn",
                                  "rrkd_tables12_mnist_supervised"])
def test_rrkd_with_labels_leaves_its_head_untrained_as_the_notebook(name):
    """LitDistiller builds the head itself and optimises `student.parameters()` only (cell 13)."""
    from trainables.methods import method_class

    knobs = method_class("rrkd").Knobs.model_validate(sweep(name).knobs_for("rrkd", {"method": "rrkd"}))
    assert knobs.train_head is False and knobs.lambda_ce == 1.0
