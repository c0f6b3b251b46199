"""CIFAR-10, SVHN and MNIST read from their real on-disk formats; augment overrides, the validation hold-out,
and downloads that leave nothing half-written behind. No network: every download here is simulated."""
import hashlib
import os
import shutil
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision

from trainables.datasets import DatasetMissing, ImageData, load_dataset

from .conftest import REAL_MNIST, needs_real_mnist, write_cifar100
from trainables.datasets.synthetic import write_cifar10, write_mnist, write_svhn

WRITERS = {"cifar10": write_cifar10, "svhn": write_svhn, "mnist": write_mnist, "cifar100": write_cifar100}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a test tried to reach the network")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def test_train_fraction_keeps_a_stratified_seeded_part_of_train_only():
    full = load_dataset("digits", "unused")
    part = load_dataset("digits", "unused", train_fraction=0.2)
    again = load_dataset("digits", "unused", train_fraction=0.2)
    assert len(part.train_y) == round(0.2 * len(full.train_y)) and torch.equal(part.train_y, again.train_y)
    assert torch.equal(part.test_y, full.test_y)  # the test split is untouched
    per_class = torch.bincount(part.train_y, minlength=10)
    expect = torch.bincount(full.train_y, minlength=10).double() * 0.2
    assert ((per_class - expect).abs() <= 1).all()
    assert part.fingerprint() != full.fingerprint()  # never mistaken for a teacher of the full set


def test_cifar10_reads_the_five_batches_in_nchw(tmp_path):
    written = write_cifar10(tmp_path, n_train=53, n_test=17, seed=4)
    d = load_dataset("cifar10", str(tmp_path), verify_checksum=False)
    assert d.train_x.shape == (53, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (17, 3, 32, 32) and d.train_y.dtype == torch.int64 and d.num_classes == 10
    assert d.train_y.tolist() == written["train"][1] and d.test_y.tolist() == written["test"][1]
    for i, c, h, w in ((0, 0, 0, 0), (40, 1, 17, 3), (52, 2, 31, 30)):  # 40, 52: from data_batch_4, _5
        assert d.train_x[i, c, h, w].item() == written["train"][0][i, c * 1024 + h * 32 + w]
    assert d.test_x[5, 2, 9, 11].item() == written["test"][0][5, 2 * 1024 + 9 * 32 + 11]
    assert d.mean == (0.4914, 0.4822, 0.4465) and d.std == (0.2470, 0.2435, 0.2616)
    assert d.crop_padding == 4 and d.flip and d.eval_split == "test"


def test_svhn_reads_mat_files_and_maps_label_10_to_digit_0(tmp_path):
    written = write_svhn(tmp_path, n_train=40, n_test=20, seed=1)
    d = load_dataset("svhn", str(tmp_path), verify_checksum=False)
    assert d.train_x.shape == (40, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (20, 3, 32, 32) and d.train_y.dtype == torch.int64 and d.num_classes == 10
    for split, (x, y) in (("train", written["train"]), ("test", written["test"])):
        got = d.train_y if split == "train" else d.test_y
        assert got.tolist() == [0 if v == 10 else int(v) for v in y]
        assert (y == 10).any() and got.min() == 0 and got.max() == 9
    x = written["train"][0]  # (H, W, C, N) in the file
    for i, c, h, w in ((0, 0, 0, 1), (13, 2, 30, 4), (39, 1, 7, 31)):
        assert d.train_x[i, c, h, w].item() == x[h, w, c, i]
    assert d.mean == (0.4377, 0.4438, 0.4728) and d.std == (0.1980, 0.2010, 0.1970)
    assert d.crop_padding == 4 and not d.flip


@pytest.mark.parametrize("archives", [True, False])
def test_mnist_reads_idx_files(tmp_path, archives):
    written = write_mnist(tmp_path, n_train=30, n_test=12, seed=2, archives=archives)
    d = load_dataset("mnist", str(tmp_path), verify_checksum=False)
    assert d.train_x.shape == (30, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (12, 1, 28, 28) and d.train_y.dtype == torch.int64 and d.num_classes == 10
    assert d.train_y.tolist() == written["train"][1].tolist() and d.test_y.tolist() == written["test"][1].tolist()
    for i, h, w in ((0, 0, 0), (17, 27, 3), (29, 14, 27)):
        assert d.train_x[i, 0, h, w].item() == written["train"][0][i, h, w]
    assert d.test_x[11, 0, 5, 6].item() == written["test"][0][11, 5, 6]
    assert d.mean == (0.1307,) and d.std == (0.3081,) and d.crop_padding == 0 and not d.flip


@pytest.mark.parametrize("name, looked_for", [
    ("cifar10", ["cifar-10-batches-py/", "data_batch_1", "test_batch"]),
    ("svhn", ["train_32x32.mat", "test_32x32.mat"]),
    ("mnist", [os.path.join("MNIST", "raw") + "/", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]),
    ("cifar100", ["cifar-100-python/"]),
])
def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, name, looked_for):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetMissing) as e:
        load_dataset(name, str(root))
    msg = str(e.value)
    for part in looked_for:
        assert f"{root}{os.sep}{part}" in msg or part in msg, part
    assert f"{root}{os.sep}{looked_for[0]}" in msg  # the exact folder or file
    assert "`dataset.download: true`" in msg and " MB" in msg
    assert not root.exists()


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist"])
def test_written_data_fails_the_official_checksums(tmp_path, name):
    WRITERS[name](tmp_path, 10, 10)
    with pytest.raises(DatasetMissing, match="official checksums.*verify_checksum: false"):
        load_dataset(name, str(tmp_path))


def test_mnist_idx_files_alone_are_checked_by_their_content(tmp_path):
    """Extracted idx files with no archive beside them: checked against the MD5 of what the official
    archives hold, so written ones fail and name verify_checksum."""
    write_mnist(tmp_path, 10, 10, archives=False)
    with pytest.raises(DatasetMissing, match=r"train-images-idx3-ubyte differs from the official release's.*"
                                             r"verify_checksum: false"):
        load_dataset("mnist", str(tmp_path))


@needs_real_mnist
def test_the_official_mnist_archives_load_as_they_come_and_equal_torchvisions_reading(tmp_path):
    """The four .gz files alone, in a folder kd-sweep cannot write to: read in memory, MD5-checked; the
    same tensors torchvision reads from the files it extracts."""
    import gzip

    raw = REAL_MNIST / "MNIST" / "raw"
    assert sorted(os.listdir(raw)) == sorted(f"{n}.gz" for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    d = load_dataset("mnist", str(REAL_MNIST))  # verify_checksum: true, the default
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    copy = tmp_path / "MNIST" / "raw"
    copy.mkdir(parents=True)
    for gz in raw.iterdir():
        (copy / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    for train, x, y in ((True, d.train_x, d.train_y), (False, d.test_x, d.test_y)):
        theirs = torchvision.datasets.MNIST(str(tmp_path), train=train)
        assert torch.equal(theirs.data[:, None], x) and torch.equal(theirs.targets, y)
    # The extracted idx files alone pass the same check, by their content.
    assert torch.equal(load_dataset("mnist", str(tmp_path)).train_x, d.train_x)


def _index_of(x: torch.Tensor, originals: dict) -> list[int]:
    return [originals[img.numpy().tobytes()] for img in x]


def test_validation_split_is_stratified_disjoint_seeded_and_sized(tmp_path):
    write_cifar10(tmp_path, n_train=200, n_test=30, seed=5)
    full = load_dataset("cifar10", str(tmp_path), verify_checksum=False)
    originals = {img.numpy().tobytes(): i for i, img in enumerate(full.train_x)}
    assert len(originals) == 200
    a = load_dataset("cifar10", str(tmp_path), verify_checksum=False, val_split=0.25, val_seed=3)
    assert a.eval_split == "val" and a.test_x.shape == (50, 3, 32, 32) and a.train_x.shape == (150, 3, 32, 32)
    assert torch.bincount(a.test_y, minlength=10).tolist() == [5] * 10  # 20 of each class written
    kept, held = _index_of(a.train_x, originals), _index_of(a.test_x, originals)
    assert not set(kept) & set(held) and sorted(kept + held) == list(range(200))
    assert kept == sorted(kept) and held == sorted(held)  # both keep the original order
    assert torch.equal(a.train_y, full.train_y[kept]) and torch.equal(a.test_y, full.train_y[held])
    assert a.fingerprint() != full.fingerprint()
    b = load_dataset("cifar10", str(tmp_path), verify_checksum=False, val_split=0.25, val_seed=3)
    c = load_dataset("cifar10", str(tmp_path), verify_checksum=False, val_split=0.25, val_seed=4)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_x, b.train_x)
    assert set(_index_of(c.test_x, originals)) != set(held)
    assert a.to(torch.device("cpu")).eval_split == "val"


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3, 0.5])
def test_validation_split_of_uneven_classes(fraction):
    """Classes of very different sizes: each gives its share to within one image, the total is round(N * f)."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([3, 7, 10, 13, 26, 41, 58, 77, 90, 111])])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    x = torch.arange(len(y)).view(-1, 1, 1, 1).to(torch.int32)  # each image names its index
    full = ImageData(x, y, x[:2], y[:2], num_classes=10, mean=(0.5,), std=(0.5,))
    d = full.holdout(fraction, seed=7)
    n = len(y)
    assert len(d.test_y) == round(n * fraction) and len(d.train_y) == n - round(n * fraction)
    share = torch.bincount(y, minlength=10).double() * fraction
    assert (torch.bincount(d.test_y, minlength=10) - share).abs().max() < 1
    held, kept = d.test_x.flatten().tolist(), d.train_x.flatten().tolist()
    assert sorted(held + kept) == list(range(n)) and torch.equal(d.test_y, y[held])
    assert d.test_x.flatten().tolist() == full.holdout(fraction, seed=7).test_x.flatten().tolist()


def test_digits_and_cifar100_take_the_new_options(tmp_path):
    d = load_dataset("digits", "unused", augment="crop_flip", val_split=0.2, val_seed=1)
    assert (d.crop_padding, d.flip, d.eval_split) == (1, True, "val") and len(d.test_y) == round(1438 * 0.2)
    write_cifar100(tmp_path, 100, 10)
    c = load_dataset("cifar100", str(tmp_path), verify_checksum=False, augment="flip", val_split=0.5)
    assert (c.crop_padding, c.flip, c.eval_split, len(c.test_y), len(c.train_y)) == (0, True, "val", 50, 50)


@pytest.mark.parametrize("bad", [{"val_split": 0.6}, {"val_split": -0.1}, {"augment": "mixup"}])
def test_bad_options_are_refused_before_reading(tmp_path, bad):
    with pytest.raises(ValueError):
        load_dataset("cifar10", str(tmp_path / "nowhere"), **bad)


@pytest.mark.parametrize("name, augment, expected", [
    ("cifar10", None, (4, True)), ("cifar10", "flip", (0, True)), ("cifar10", "crop", (4, False)),
    ("cifar10", "none", (0, False)), ("cifar100", "flip", (0, True)), ("cifar100", "crop_flip", (4, True)),
    ("svhn", None, (4, False)), ("svhn", "flip", (0, True)), ("svhn", "crop_flip", (4, True)),
    ("mnist", None, (0, False)), ("mnist", "crop", (3, False)), ("mnist", "flip", (0, True)),
])
def test_augment_overrides_the_default_view(tmp_path, name, augment, expected):
    WRITERS[name](tmp_path, 10, 10)
    d = load_dataset(name, str(tmp_path), verify_checksum=False, augment=augment)
    assert (d.crop_padding, d.flip) == expected


def test_flip_only_and_crop_only_views(tmp_path):
    write_cifar10(tmp_path, 10, 10)
    h = torch.arange(32).view(32, 1).expand(32, 32)
    w = torch.arange(32).view(1, 32).expand(32, 32)
    img = torch.stack([h + 100, w + 100, torch.full((32, 32), 7)]).to(torch.uint8)  # pixels name their place
    batch = img.expand(200, 3, 32, 32)
    flip = load_dataset("cifar10", str(tmp_path), verify_checksum=False, augment="flip")
    out = flip.augment(batch, torch.Generator().manual_seed(0))
    same = (out == flip.normalise(img[None])).flatten(1).all(1)
    mirrored = (out == flip.normalise(img.flip(-1)[None])).flatten(1).all(1)
    assert (same | mirrored).all() and 0 < mirrored.sum() < 200
    crop = load_dataset("cifar10", str(tmp_path), verify_checksum=False, augment="crop")
    pix = ((crop.augment(batch, torch.Generator().manual_seed(0)) * torch.tensor(crop.std).view(1, 3, 1, 1)
            + torch.tensor(crop.mean).view(1, 3, 1, 1)) * 255).round().to(torch.int64)
    inside = pix[:, 1, 16, 16:18]  # interior: never padding; a mirror would make columns run backwards
    assert (inside[:, 1] - inside[:, 0] == 1).all()
    assert len(set(pix[:, 0, 16, 16].tolist())) > 5  # the rows move: it does crop


def _failing_download(monkeypatch):
    """torchvision's transfer writes part of the file, then the connection drops."""
    def partial(url, filename, chunk_size=0):
        with open(filename, "wb") as f:
            f.write(b"\x1f\x8b partial")
        raise ConnectionResetError("connection reset by peer (simulated)")
    monkeypatch.setattr(torchvision.datasets.utils, "_urlretrieve", partial)
    monkeypatch.setattr(torchvision.datasets.utils, "_get_redirect_url", lambda url, max_hops=3: url)


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist", "cifar100"])
@pytest.mark.parametrize("root_exists", [True, False])
def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch, name, root_exists):
    _failing_download(monkeypatch)
    root = tmp_path / "data" / "deeper"
    if root_exists:
        root.mkdir(parents=True)
    with pytest.raises(DatasetMissing, match=r"Downloading .* failed \(.*simulated.*nothing was left under"):
        load_dataset(name, str(root), download=True)
    if root_exists:
        assert os.listdir(root) == []
    else:
        assert os.listdir(tmp_path) == []


def _serving(monkeypatch, source):
    """A download that hands out the files under `source`, by their name."""
    def serve(url, filename, chunk_size=0):
        shutil.copyfile(source / os.path.basename(url), filename)
    monkeypatch.setattr(torchvision.datasets.utils, "_urlretrieve", serve)
    monkeypatch.setattr(torchvision.datasets.utils, "_get_redirect_url", lambda url, max_hops=3: url)


def test_svhn_download_moves_checked_files_into_place(tmp_path, monkeypatch):
    source = tmp_path / "source"
    written = write_svhn(source, 20, 10)
    split_list = {k: [url, name, _md5(source / name) if (source / name).exists() else md5]
                  for k, (url, name, md5) in torchvision.datasets.SVHN.split_list.items()}
    monkeypatch.setattr(torchvision.datasets.SVHN, "split_list", split_list)  # "official" = what we wrote
    _serving(monkeypatch, source)
    root = tmp_path / "data"
    d = load_dataset("svhn", str(root), download=True)
    assert sorted(os.listdir(root)) == ["test_32x32.mat", "train_32x32.mat"]
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_y.tolist() == [v % 10 for v in written["test"][1]]


def test_mnist_download_fetches_the_archives_and_reads_them_checked(tmp_path, monkeypatch):
    from trainables.datasets import mnist

    source = tmp_path / "source"
    written = write_mnist(source, 20, 10)
    raw_source = source / "MNIST" / "raw"
    official = {name: (_md5(raw_source / f"{name}.gz"), _md5(raw_source / name)) for name in mnist.OFFICIAL}
    monkeypatch.setattr(mnist, "OFFICIAL", official)  # "official" = what we wrote
    _serving(monkeypatch, raw_source)
    root = tmp_path / "data"
    d = load_dataset("mnist", str(root), download=True)  # verify_checksum: the archives' MD5
    assert os.listdir(root) == ["MNIST"] and os.listdir(root / "MNIST") == ["raw"]
    assert sorted(os.listdir(root / "MNIST" / "raw")) == sorted(f"{n}.gz" for n in official)
    assert d.train_y.tolist() == written["train"][1].tolist()
    # An archive that is not the official one fails the check.
    blob = bytearray((root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").read_bytes())
    blob[100] ^= 1
    (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").write_bytes(bytes(blob))
    with pytest.raises(DatasetMissing, match="t10k-images-idx3-ubyte.gz differs from the official release's"):
        load_dataset("mnist", str(root))
