"""The loaders read the real on-disk formats; batch augmentation matches RandomCrop(pad) + flip."""
import pickle

import pytest
import torch

from trainables.datasets import DatasetMissing, load_dataset

from .conftest import write_cifar100


def test_cifar100_reads_torchvision_pickles_in_nchw(tmp_path):
    write_cifar100(tmp_path, n_train=20, n_test=10, seed=3)
    with open(tmp_path / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f)
    d = load_dataset("cifar100", str(tmp_path), verify_checksum=False)
    assert d.train_x.shape == (20, 3, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (10, 3, 32, 32) and d.num_classes == 100
    assert d.train_y.tolist() == raw["fine_labels"]
    # A CIFAR row is 1024 red, 1024 green, 1024 blue values, each 32x32 row-major.
    i, c, h, w = 7, 2, 5, 30
    assert d.train_x[i, c, h, w].item() == raw["data"][i, c * 1024 + h * 32 + w]
    assert d.crop_padding == 4 and d.flip and d.mean == (0.5071, 0.4867, 0.4408)


def test_cifar100_missing_and_unofficial_data_say_what_to_do(tmp_path):
    with pytest.raises(DatasetMissing, match=r"looked for .*cifar-100-python/.*download: true"):
        load_dataset("cifar100", str(tmp_path / "nowhere"))
    write_cifar100(tmp_path, 10, 10)
    with pytest.raises(DatasetMissing, match="official checksums.*verify_checksum: false"):
        load_dataset("cifar100", str(tmp_path))  # written pixels do not match the release's MD5s


def test_digits_is_a_fixed_stratified_split():
    a, b = load_dataset("digits", "unused"), load_dataset("digits", "unused")
    assert a.train_x.shape == (1438, 1, 8, 8) and a.test_x.shape == (359, 1, 8, 8)
    assert torch.equal(a.test_y, b.test_y) and torch.equal(a.test_x, b.test_x)
    assert torch.bincount(a.test_y).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    assert a.train_x.max() == 255 and a.fingerprint() == b.fingerprint()


def test_fingerprint_tells_datasets_apart(tmp_path):
    write_cifar100(tmp_path / "a", 16, 8, seed=0)
    write_cifar100(tmp_path / "b", 16, 8, seed=1)
    fa = load_dataset("cifar100", str(tmp_path / "a"), verify_checksum=False).fingerprint()
    fb = load_dataset("cifar100", str(tmp_path / "b"), verify_checksum=False).fingerprint()
    assert fa != fb


def test_batch_crop_and_flip_match_torchvision_semantics(tmp_path):
    """Each output is a 32x32 window of the zero-padded image at an offset uniform in 0..8, mirrored
    with probability 1/2: what RandomCrop(32, padding=4) + RandomHorizontalFlip do per image."""
    write_cifar100(tmp_path, 4, 4)
    d = load_dataset("cifar100", str(tmp_path), verify_checksum=False)
    h = torch.arange(32).view(32, 1).expand(32, 32)
    w = torch.arange(32).view(1, 32).expand(32, 32)
    img = torch.stack([h + 100, w + 100, torch.full((32, 32), 7)]).to(torch.uint8)  # pixels name their place
    n = 4000
    gen = torch.Generator().manual_seed(0)
    out = d.augment(img.expand(n, 3, 32, 32), gen)
    mean = torch.tensor(d.mean).view(1, 3, 1, 1)
    std = torch.tensor(d.std).view(1, 3, 1, 1)
    pix = ((out * std + mean) * 255).round().to(torch.int64)
    padded = torch.nn.functional.pad(img.to(torch.int64), (4, 4, 4, 4))
    offsets, flips = [], 0
    for k in range(0, n, 97):  # exact check on a sample of outputs
        o = pix[k]
        found = None
        for flip in (False, True):
            for dy in range(9):
                for dx in range(9):
                    win = padded[:, dy:dy + 32, dx:dx + 32]
                    if torch.equal(win.flip(-1) if flip else win, o):
                        found = (dy, dx, flip)
        assert found is not None, k
        offsets.append(found[:2])
        flips += found[2]
    # Distribution over all outputs, from the top-left interior pixel: offsets uniform, flips 1/2.
    rows = pix[:, 0, 16, 16] - 100 - 16 + 4  # dy
    counts = torch.bincount(rows, minlength=9).double()
    assert counts.numel() == 9 and (counts / n - 1 / 9).abs().max() < 0.02
    frac = (pix[:, 1, 16, 17] < pix[:, 1, 16, 16]).double().mean().item()  # columns run backwards
    assert abs(frac - 0.5) < 0.03
    assert len(set(offsets)) > 20 and 0 < flips < len(offsets)
