"""`dataset.augment: randaugment` (torchvision's RandAugment per image, on the batch) and the linear probe's
`augment: true` (MoCo's main_lincls view: RandomResizedCrop + flip, fresh every epoch)."""
import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.spec import EvalSpec, LinearProbe
from trainables.datasets import load_dataset
from trainables.datasets.synthetic import write_cifar100
from trainables.datasets.views import rand_augment, resized_crop_flip
from trainables.evaluate import evaluate


# --- RandAugment -----------------------------------------------------------------------------------

def test_rand_augment_changes_images_and_keeps_dtype_and_shape():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = rand_augment(x, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    changed = (a != x).flatten(1).any(1)
    assert changed.float().mean() > 0.75  # 2 ops of 14: both Identity for 1/196 of the images
    assert torch.equal(a, rand_augment(x, torch.Generator().manual_seed(1)))  # a function of the generator
    assert not torch.equal(a, rand_augment(x, torch.Generator().manual_seed(2)))
    # each image draws its own ops: copies of one image come out different
    same = x[:1].expand(32, 3, 32, 32).contiguous()
    out = rand_augment(same, torch.Generator().manual_seed(0))
    assert len({o.numpy().tobytes() for o in out}) > 10
    with pytest.raises(TypeError, match="uint8"):
        rand_augment(x.float(), torch.Generator())


def test_cifar100_randaugment_is_crop_flip_then_randaugment(tmp_path):
    write_cifar100(tmp_path, 64, 10)
    ra = load_dataset("cifar100", str(tmp_path), verify_checksum=False, augment="randaugment")
    cf = load_dataset("cifar100", str(tmp_path), verify_checksum=False, augment="crop_flip")
    assert (ra.crop_padding, ra.flip, ra.randaugment) == (4, True, True) and not cf.randaugment
    x = ra.train_x[:32]
    a = ra.augment(x, torch.Generator().manual_seed(0))
    b = cf.augment(x, torch.Generator().manual_seed(0))
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (32, 3, 32, 32)
    assert not torch.equal(a, b)
    assert torch.equal(a, ra.augment(x, torch.Generator().manual_seed(0)))
    # the un-augmented evaluation view is untouched
    assert torch.equal(ra.eval_view("test", slice(0, 4)), cf.eval_view("test", slice(0, 4)))


def test_randaugment_is_a_known_augment_and_not_for_in_memory_mocov2(tmp_path):
    from trainables.datasets import AUGMENTATIONS

    assert "randaugment" in AUGMENTATIONS
    d = load_dataset("digits", "unused", augment="randaugment")
    out = d.augment(d.train_x[:8], torch.Generator().manual_seed(0))
    assert out.shape == (8, *d.train_x.shape[1:])


# --- RandomResizedCrop + flip, as torchvision draws and resamples it ---------------------------------

def test_resized_crop_flip_is_torchvisions_resized_crop():
    import torchvision.transforms.functional as TF

    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = resized_crop_flip(x, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1))
    assert all(torch.equal(w, i) or torch.equal(w, i.flip(-1)) for w, i in zip(whole, x))
    out = resized_crop_flip(x, torch.Generator().manual_seed(1), scale=(0.25, 0.25), ratio=(1, 1))  # 16 x 16 crops
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for o, img in zip(out, x):  # some 16 x 16 box, resized bilinearly to 32 x 32 (and maybe mirrored), is it
        assert any(torch.equal(TF.resized_crop(img, t, left, 16, 16, [32, 32], antialias=False), v)
                   for t in range(17) for left in range(17) for v in (o, o.flip(-1)))


# --- the linear probe on freshly augmented views -----------------------------------------------------

def write_coloured_imagefolder(root, n_train=8, n_val=4, classes=("n01", "n02", "n03")):
    """An ImageFolder (as tests/test_imagenet.py writes) whose classes differ in colour: learnable."""
    rng = np.random.default_rng(0)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
    for split, n in (("train", n_train), ("val", n_val)):
        for c, colour in zip(classes, colours):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 90, 2)
                img = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{c}_{i}.JPEG")
    return root


def test_linear_probe_augment_is_off_by_default_and_kept_out_of_the_trial_config():
    assert LinearProbe().augment is False and "augment" not in LinearProbe().model_dump()  # earlier hashes hold
    assert LinearProbe(augment=True).model_dump()["augment"] is True
    # inside a sweep too (its resume key is a digest of the whole dump)
    assert "augment" not in EvalSpec(linear=LinearProbe()).model_dump(mode="json")["linear"]
    assert EvalSpec(linear=LinearProbe(augment=True)).model_dump(mode="json")["linear"]["augment"] is True
    assert LinearProbe.model_validate(LinearProbe(augment=True).model_dump()).augment is True


def test_augmented_probe_sees_new_views_every_epoch_and_learns(tmp_path, monkeypatch):
    from trainables.datasets.imagenet import FolderData
    from trainables.models import build_model

    data = load_dataset("imagenet", str(write_coloured_imagefolder(tmp_path)), image_size=32)
    torch.manual_seed(0)
    model = build_model("resnet18", data.num_classes, 3, data.image_size)
    # the view itself: the training images in order, fresh crops for a new seed, the same for the same seed
    a, b, c = (torch.cat(list(data.probe_loader(5, s))) for s in (0, 0, 1))
    assert a.shape == (24, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    data.workers = 1
    assert torch.equal(torch.cat(list(data.probe_loader(5, 0))), torch.cat(list(data.probe_loader(5, 0))))
    data.workers = 0

    seen = []
    real = FolderData.probe_loader

    def spy(self, batch_size, seed):
        batches = list(real(self, batch_size, seed))
        seen.append(torch.cat(batches))
        return iter(batches)

    monkeypatch.setattr(FolderData, "probe_loader", spy)
    probe = {**LinearProbe(epochs=6, batch_size=8, lr=0.1, weight_decay=0.0, milestones=[]).model_dump(),
             "augment": True}
    out = evaluate(model, data, {"linear": probe}, seed=0)
    assert len(seen) == 6  # one pass of fresh views per probe epoch
    assert all(not torch.equal(seen[i], seen[j]) for i in range(6) for j in range(i))
    assert out["eval/linear_top1"] >= 75.0  # chance is 33%: it learns from the augmented views
    assert out["eval/linear_top1_best"] >= out["eval/linear_top1"] and 0 <= out["eval/linear_top5"] <= 100

    seen.clear()  # off: no augmented pass, the same probe scores as before the option existed
    plain = evaluate(model, data, {"linear": {**probe, "augment": False}}, seed=0)
    assert seen == [] and plain.keys() == out.keys()
    assert plain == evaluate(model, data, {"linear": LinearProbe(epochs=6, batch_size=8, lr=0.1, weight_decay=0.0,
                                                                 milestones=[]).model_dump()}, seed=0)


def test_augmented_probe_on_in_memory_data(tmp_path):
    """digits (8 x 8, in memory): fresh RandomResizedCrop + flip views on the batch, and the probe still learns."""
    from trainables.models import build_model

    data = load_dataset("digits", "unused")
    torch.manual_seed(0)
    model = build_model("mlp", data.num_classes, data.in_channels, data.image_size, hidden=[64])
    views = [torch.cat(list(data.probe_loader(256, s))) for s in (0, 1)]
    assert views[0].shape == (data.num_train, *data.train_x.shape[1:]) and not torch.equal(*views)
    probe = LinearProbe(epochs=20, batch_size=64, lr=0.1, milestones=[], augment=True).model_dump()
    out = evaluate(model, data, {"linear": probe, "knn": {"k": 10, "temperature": 0.07}}, seed=0)
    assert out["eval/linear_top1"] > 50.0 and "eval/knn_top1" in out  # chance is 10%
