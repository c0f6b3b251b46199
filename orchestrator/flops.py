"""Arithmetic a training step costs and what this machine does per second: the bench's share of peak,
and the dry run's estimate for cells no earlier run has timed."""
from __future__ import annotations

import time

import torch


def training_flops(student: tuple[str, dict], teacher: tuple[str, dict] | None, num_classes: int,
                   channels: int, size: int, device: str = "cpu") -> float:
    """FLOPs per training image of the backbones: the teacher's forward, the student's forward and
    backward (torch's FLOP counter; a method's own modules, projectors and the like, are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainables.models import build_model

    s = build_model(student[0], num_classes, channels, size, **student[1]).to(device).train()
    t = build_model(teacher[0], num_classes, channels, size, **teacher[1]).to(device).eval() if teacher else None
    x = torch.randn(2, channels, size, size, device=device)  # 2: BatchNorm in training mode needs a batch
    with FlopCounterMode(display=False) as fc:
        if t is not None:
            with torch.no_grad():
                t(x)
        s(x).feature.sum().backward()
    return fc.get_total_flops() / 2


def matmul_peak(device: str, n: int = 2048, reps: int = 10, tries: int = 5) -> float:
    """FLOP/s of an n x n fp32 matmul: the best of `tries` timings (a peak, not an average)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = 0.0
    for _ in range(tries):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best
