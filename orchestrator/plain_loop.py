"""The training loop a KD researcher writes by hand, as the yardstick of `kd-sweep bench`.

What it times follows RepDistiller's `train_student.py`: torchvision's CIFAR-100 dataset with PIL
transforms in a DataLoader, fp32, the teacher in eval mode under no_grad, the student's forward, the
loss, zero_grad / backward / step, and the loss read back with `.item()` every step (RepDistiller's
AverageMeter does, and on a GPU that is a synchronisation per step). The loss is CoSS (Singh & Wang,
Eq. 3 with lambda 1: cosine per sample plus cosine per feature dimension), which the bench gives
kd-sweep's trainable too. The networks are kd-sweep's own CIFAR ResNets (CRD's architectures), so the
two loops differ only in the loop.

    python -m orchestrator.plain_loop ROOT --steps 30 [--device cuda --workers 8]

ROOT holds `cifar-100-python/` (the real release, or one written by trainables.datasets.synthetic).
Prints `plain loop: N images/s`, over the steps after the first WARMUP.

`--task mnist-rrkd` times the other kind of trial a laptop runs: RRKD's MNIST MLPs (AE-64 encoder ->
AE-32, papers/002 Tables 1 and 5), whose steps take about a millisecond, so that any per-step cost of
the loop shows. The MNIST files are read once into a uint8 tensor (MNIST/raw/, .gz or extracted) and
batched by a DataLoader over a TensorDataset, normalised per batch as the notebook's Normalize(0.5, 0.5);
the loss is RRKD's with in-batch anchors (cosine distance of the relative representations), SGD lr 0.1,
momentum 0.9, batch 128, as the sweep files.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

WARMUP = 5  # steps left out of the rate: the first batches pay for allocation and worker start-up
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def coss_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    per_sample = (F.normalize(s, dim=1) * F.normalize(t, dim=1)).sum(1).mean()
    per_dimension = (F.normalize(s, dim=0) * F.normalize(t, dim=0)).sum(0).mean()
    return -(per_sample + per_dimension)


def timed_rate(loader, step, steps: int, sync=lambda: None) -> float:
    """Images/s of `step(images) -> batch size` over LOADER's batches, the first WARMUP steps untimed."""
    done, seen, start = 0, 0, 0.0
    while done < steps:
        for images, _ in loader:
            n = step(images)
            done += 1
            if done == WARMUP:
                sync()
                start = time.perf_counter()
            elif done > WARMUP:
                seen += n
            if done >= steps:
                break
    sync()
    return seen / (time.perf_counter() - start)


def cifar100_train(root: str):
    """torchvision's CIFAR-100 with the CRD/RepDistiller augmentation. Its integrity check compares
    MD5s with the real release's, which generated test data cannot match: the files are read as they are."""
    import torchvision
    import torchvision.transforms as T

    class CIFAR100(torchvision.datasets.CIFAR100):
        meta = {**torchvision.datasets.CIFAR100.meta, "md5": None}

        def _check_integrity(self) -> bool:
            return True

    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    return CIFAR100(root, train=True, transform=transform, download=False)


def images_per_s(root: str, teacher: str, student: str, steps: int, batch: int, device: str, workers: int) -> float:
    from trainables.models import build_model

    model_t = build_model(teacher, 100, 3, 32).to(device).eval()
    model_s = build_model(student, 100, 3, 32).to(device).train()
    loader = torch.utils.data.DataLoader(cifar100_train(root), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=device == "cuda")
    optimizer = torch.optim.SGD(model_s.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step(images: torch.Tensor) -> int:
        images = images.float().to(device, non_blocking=True)
        with torch.no_grad():
            feat_t = model_t(images).feature
        loss = coss_loss(model_s(images).feature, feat_t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        return images.shape[0]

    return timed_rate(loader, step, steps, sync)


def rrkd_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    rel_s = F.normalize(s, dim=1) @ F.normalize(s, dim=1).T
    rel_t = F.normalize(t, dim=1) @ F.normalize(t, dim=1).T
    cos = (F.normalize(rel_s, dim=1) * F.normalize(rel_t, dim=1)).sum(1)
    return -torch.log((cos + 1) / 2 + 1e-8).mean()


def mnist_train(root: str) -> torch.utils.data.TensorDataset:
    import gzip
    import os

    from trainables.datasets.mnist import read_idx

    def read(name: str) -> torch.Tensor:
        path = os.path.join(root, "MNIST", "raw", name)
        if os.path.isfile(path + ".gz"):
            with gzip.open(path + ".gz", "rb") as f:
                return read_idx(f.read(), name)
        with open(path, "rb") as f:
            return read_idx(f.read(), name)

    return torch.utils.data.TensorDataset(read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte").long())


def mnist_rrkd_images_per_s(root: str, steps: int, batch: int, device: str, workers: int) -> float:
    from trainables.models import build_model

    model_t = build_model("ae_encoder", 10, 1, 28, hidden=[128], embedding_dim=64).to(device).eval()
    model_s = build_model("ae_encoder", 10, 1, 28, hidden=[64], embedding_dim=32).to(device).train()
    loader = torch.utils.data.DataLoader(mnist_train(root), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True)
    optimizer = torch.optim.SGD(model_s.parameters(), lr=0.1, momentum=0.9)

    def step(images: torch.Tensor) -> int:
        x = (images.to(device).float().div_(255).sub_(0.5).div_(0.5)).unsqueeze(1)
        with torch.no_grad():
            feat_t = model_t(x).feature
        loss = rrkd_loss(model_s(x).feature, feat_t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        return x.shape[0]

    return timed_rate(loader, step, steps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.plain_loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--steps", type=int, default=30, help=f"steps in all, the first {WARMUP} untimed")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--teacher", default="resnet32x4")
    ap.add_argument("--student", default="resnet8x4")
    ap.add_argument("--task", choices=["cifar100-coss", "mnist-rrkd"], default="cifar100-coss")
    ap.add_argument("--threads", type=int, default=None, help="torch's intra-op threads (default: torch's own)")
    a = ap.parse_args(argv)
    if a.steps <= WARMUP:
        ap.error(f"--steps must be more than the {WARMUP} warm-up steps")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.task == "mnist-rrkd":
        rate = mnist_rrkd_images_per_s(a.root, a.steps, a.batch, a.device, a.workers)
        print(f"plain loop: {rate:.1f} images/s (mnist ae_encoder-128->ae_encoder-64, RRKD, batch {a.batch}, {a.device},"
              f" threads {torch.get_num_threads()})")
        return
    rate = images_per_s(a.root, a.teacher, a.student, a.steps, a.batch, a.device, a.workers)
    print(f"plain loop: {rate:.1f} images/s ({a.teacher}->{a.student}, batch {a.batch}, {a.device})")


if __name__ == "__main__":
    main()
