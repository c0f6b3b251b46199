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
    step, seen, start = 0, 0, 0.0
    while step < steps:
        for images, _ in loader:
            images = images.float().to(device, non_blocking=True)
            with torch.no_grad():
                feat_t = model_t(images).feature
            loss = coss_loss(model_s(images).feature, feat_t)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()
            step += 1
            if step == WARMUP:
                sync()
                start = time.perf_counter()
            elif step > WARMUP:
                seen += images.shape[0]
            if step >= steps:
                break
    sync()
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.plain_loop", description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--steps", type=int, default=30, help=f"steps in all, the first {WARMUP} untimed")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--teacher", default="resnet32x4")
    ap.add_argument("--student", default="resnet8x4")
    a = ap.parse_args(argv)
    if a.steps <= WARMUP:
        ap.error(f"--steps must be more than the {WARMUP} warm-up steps")
    rate = images_per_s(a.root, a.teacher, a.student, a.steps, a.batch, a.device, a.workers)
    print(f"plain loop: {rate:.1f} images/s ({a.teacher}->{a.student}, batch {a.batch}, {a.device})")


if __name__ == "__main__":
    main()
