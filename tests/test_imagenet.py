"""ImageNet as an ImageFolder of JPEGs: streamed through a DataLoader, with the trainer's interface."""
import numpy as np
import pytest
import torch
from PIL import Image

from trainables.datasets import DatasetMissing, load_dataset
from trainables.trial import fit


def write_imagefolder(root, n_train=4, n_val=2, classes=("n01", "n02", "n03")):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 90, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{c}_{i}.JPEG")
    return root


def test_reads_an_imagefolder_and_streams_batches(tmp_path):
    data = load_dataset("imagenet", str(write_imagefolder(tmp_path)))
    assert data.num_classes == 3 and data.num_train == 12 and len(data.labels("test")) == 6
    assert data.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    x = data.eval_view("test", [0, 5])
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32 and -3 < x.mean() < 3
    batches = [torch.tensor([3, 7, 11, 0]), torch.tensor([1, 2, 4, 5])]
    a = [(i.tolist(), x.clone(), y.tolist()) for i, x, y in data.epoch(batches, torch.Generator().manual_seed(1))]
    b = [(i.tolist(), x.clone(), y.tolist()) for i, x, y in data.epoch(batches, torch.Generator().manual_seed(1))]
    assert [r[2] for r in a] == [[0, 1, 2, 0], [0, 0, 1, 1]]
    assert a[0][1].shape == (4, 3, 224, 224)
    assert all(torch.equal(p[1], q[1]) for p, q in zip(a, b))  # augmentation is a function of the seed
    c = list(data.epoch(batches, torch.Generator().manual_seed(2)))
    assert not torch.equal(a[0][1], c[0][1])
    w1 = [x for _, x, _ in data.epoch(batches, torch.Generator().manual_seed(1), workers=1)]
    w2 = [x for _, x, _ in data.epoch(batches, torch.Generator().manual_seed(1), workers=1)]
    assert torch.equal(w1[1], w2[1]) and w1[1].shape == (4, 3, 224, 224)  # seeded in worker processes too
    assert load_dataset("imagenet", str(tmp_path)).fingerprint() == data.fingerprint()


def test_image_size_sets_every_crop_and_the_models(tmp_path):
    from trainables.models import build_model

    data = load_dataset("imagenet", str(write_imagefolder(tmp_path)), image_size=64, val_split=0.25)
    assert data.image_size == 64 and data.eval_split == "val"  # kept through the validation split
    assert data.eval_view("train", [0]).shape == (1, 3, 64, 64)
    assert next(data.eval_loader("test", 2)).shape == (2, 3, 64, 64)
    (_, x, _), = data.epoch([torch.tensor([0, 1])], torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 64, 64)
    vit = build_model("vit_b_16", data.num_classes, 3, data.image_size)  # 4 x 4 patches
    assert vit(x).logits.shape == (2, 3)


def test_missing_imagenet_says_where_and_how(tmp_path):
    with pytest.raises(DatasetMissing, match=r"looked for .*/train/, .*/val/.*image-net.org"):
        load_dataset("imagenet", str(tmp_path))


def test_validation_split_and_mocov2(tmp_path):
    data = load_dataset("imagenet", str(write_imagefolder(tmp_path)), val_split=0.25, augment="mocov2")
    assert data.num_train == 9 and data.test_y.tolist() == [0, 1, 2] and data.eval_split == "val"
    idx, x, y = next(data.epoch([torch.tensor([0, 1])], torch.Generator().manual_seed(0)))
    assert x.shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="mocov2.*imagenet"):
        load_dataset("digits", "x", augment="mocov2")


def test_a_coss_trial_with_neighbours_on_imagefolder_data(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_SWEEP_CACHE", str(tmp_path / "cache"))
    root = write_imagefolder(tmp_path / "in")
    from trainables.models import build_model
    data = load_dataset("imagenet", str(root))
    torch.manual_seed(0)
    teacher = build_model("resnet18", data.num_classes, 3, 224).state_dict()
    cfg = {"role": "student", "dataset": {"name": "imagenet", "root": str(root)},
           "student": {"model": "mobilenet_v3_large", "options": {}},
           "teacher": {"model": "resnet18", "options": {}, "hash": "t"}, "method": "coss",
           "knobs": {"k": 1, "k_pool": 2, "beta": 1.0},
           "train": {"epochs": 1, "batch_size": 2, "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
                     "milestones": [], "gamma": 0.1},
           "eval": {"knn": {"k": 3, "temperature": 0.07}}, "seed": 0, "resources": {"cpu": 1, "gpu": 0}}
    got = []
    fit(cfg, lambda m, s, f: got.append(m), teacher)
    m = got[-1]
    assert np.isfinite(m["train/loss"]) and 0 <= m["eval/knn_top1"] <= 100
    assert m["train/images_per_s"] * m["train/epoch_s"] == pytest.approx(12 * 2)  # 6 steps x 2 anchors x (1+k)
