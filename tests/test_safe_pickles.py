"""A dataset is data: a CIFAR batch that carries code is refused without running it, whatever
`verify_checksum` says, in the loader and in `kd-sweep run`'s pre-flight."""
import pickle

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from trainables.datasets import DatasetMissing, load_dataset
from trainables.datasets.pickles import UnsafePickle, load_data_pickle
from trainables.datasets.synthetic import write_cifar10

from .conftest import write_cifar100


class Marker:
    """Unpickling this calls open(path, "w"): the file appearing is proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def poison(batch, marker):
    with open(batch, "rb") as f:
        entry = pickle.load(f)
    entry["labels"] = [Marker(marker), *entry["labels"][1:]]
    with open(batch, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def test_the_plain_batches_of_every_protocol_read_as_pickle_reads_them(tmp_path):
    write_cifar10(tmp_path, 20, 10)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        expected = pickle.load(f)
    for protocol in (2, 4, 5):  # the releases are Python 2 pickles; the tests write newer ones
        with open(path, "wb") as f:
            pickle.dump(expected, f, protocol=protocol)
        got = load_data_pickle(str(path))
        assert got["labels"] == expected["labels"] and (got["data"] == expected["data"]).all()
        assert got["data"].dtype == expected["data"].dtype and got["data"].shape == expected["data"].shape


def test_a_batch_that_carries_code_is_refused_and_the_code_never_runs(tmp_path):
    write_cifar10(tmp_path, 20, 10)
    marker = tmp_path / "ran"
    poison(tmp_path / "cifar-10-batches-py" / "data_batch_1", marker)
    with pytest.raises(UnsafePickle, match=r"io\.open.*refused without running it"):
        load_data_pickle(str(tmp_path / "cifar-10-batches-py" / "data_batch_1"))
    with pytest.raises(DatasetMissing, match="refused without running it"):
        load_dataset("cifar10", str(tmp_path), verify_checksum=False)
    assert not marker.exists()


def test_run_on_a_poisoned_cifar100_stops_with_one_line_before_anything_starts(tmp_path):
    write_cifar100(tmp_path / "data", 20, 10)
    marker = tmp_path / "ran"
    path = tmp_path / "data" / "cifar-100-python" / "train"
    with open(path, "rb") as f:
        entry = pickle.load(f)
    entry["fine_labels"] = [Marker(marker), *entry["fine_labels"][1:]]
    with open(path, "wb") as f:
        pickle.dump(entry, f)
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\ndataset: {{name: cifar100, root: {tmp_path / 'data'}, verify_checksum: false}}\n"
                     "pairs: [{teacher: resnet8, student: resnet8}]\nmethod: kd\n")
    res = CliRunner().invoke(app, ["run", str(sweep), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    assert res.exit_code == 2 and "refused without running it" in res.output, res.output
    assert not marker.exists()
