"""Batch augmentations of in-memory uint8 images, on the batch's device, each image drawing its own
parameters from the trial's generator (so an epoch is a function of the seed):

- `rand_augment`: torchvision's RandAugment (Cubuk et al. 2020) with its defaults: 2 ops a image, each
  one of torchvision's 14 (Identity, ShearX/Y, TranslateX/Y, Rotate, Brightness, Color, Contrast,
  Sharpness, Posterize, Solarize, AutoContrast, Equalize) drawn uniformly, at magnitude 9 of 31 bins,
  the signed ones negated with probability 1/2, nearest interpolation, fill 0. The ops are torchvision's
  own (`_apply_op`), applied to the images of the batch that drew the same op and sign.
- `resized_crop_flip`: torchvision's RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bilinear) back to the
  image's size + horizontal flip with probability 1/2: the view MoCo's linear classification trains on.
"""
from __future__ import annotations

import math

import torch

RA_NUM_OPS, RA_MAGNITUDE, RA_BINS = 2, 9, 31  # torchvision's RandAugment() defaults


def _draw(shape, gen: torch.Generator, device: torch.device, high: int | None = None) -> torch.Tensor:
    if high is None:
        return torch.rand(shape, generator=gen, device=gen.device).to(device)
    return torch.randint(0, high, shape, generator=gen, device=gen.device).to(device)


def rand_augment(x: torch.Tensor, gen: torch.Generator, num_ops: int = RA_NUM_OPS, magnitude: int = RA_MAGNITUDE,
                 num_bins: int = RA_BINS) -> torch.Tensor:
    """RandAugment of a uint8 batch (b, C, H, W), each image its own ops; returns uint8 of the same shape."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.autoaugment import RandAugment, _apply_op

    if x.dtype != torch.uint8:
        raise TypeError(f"rand_augment takes uint8 images, got {x.dtype}")
    b, _, h, w = x.shape
    space = RandAugment(num_ops, magnitude, num_bins)._augmentation_space(num_bins, (h, w))
    names = list(space)
    for _ in range(num_ops):
        ops = _draw((b,), gen, torch.device("cpu"), len(names))
        negate = _draw((b,), gen, torch.device("cpu"), 2).bool()
        out = x.clone()
        for op in ops.unique().tolist():
            magnitudes, signed = space[names[op]]
            m = float(magnitudes[magnitude].item()) if magnitudes.ndim > 0 else 0.0
            groups = [(ops == op) & negate, (ops == op) & ~negate] if signed else [ops == op]
            for sign, picked in zip((-1.0, 1.0), groups):
                idx = picked.nonzero().squeeze(1).to(x.device)
                if len(idx):
                    out[idx] = _apply_op(x[idx], names[op], sign * m if signed else m,
                                         interpolation=InterpolationMode.NEAREST, fill=None)
        x = out
    return x


def resized_crop_flip(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """RandomResizedCrop(H x W) + RandomHorizontalFlip of a uint8 batch (b, C, H, W), per image, as torchvision
    draws them (10 tries of area and log-uniform aspect ratio, else the centre crop of the whole image at the
    nearest allowed ratio); bilinear resampling back to H x W. Returns uint8 of the same shape."""
    b, _, h, w = x.shape
    dev = x.device
    tries = 10
    area = h * w * (scale[0] + (scale[1] - scale[0]) * _draw((b, tries), gen, dev))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _draw((b, tries), gen, dev)
    ar = torch.exp(log_r)
    cw = torch.sqrt(area * ar).round()
    ch = torch.sqrt(area / ar).round()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.float().argmax(1)
    rows = torch.arange(b, device=dev)
    cw, ch, found = cw[rows, first], ch[rows, first], ok.any(1)
    # torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio, centred
    in_ratio = w / h
    fw, fh = (w, round(w / ratio[0])) if in_ratio < ratio[0] else (round(h * ratio[1]), h) if in_ratio > ratio[1] \
        else (w, h)
    cw = torch.where(found, cw, torch.full_like(cw, fw))
    ch = torch.where(found, ch, torch.full_like(ch, fh))
    u, v = _draw((b,), gen, dev), _draw((b,), gen, dev)
    top = torch.where(found, torch.floor(u * (h - ch + 1)), torch.full_like(ch, (h - fh) // 2))
    left = torch.where(found, torch.floor(v * (w - cw + 1)), torch.full_like(cw, (w - fw) // 2))
    flip = _draw((b,), gen, dev) < 0.5
    # Output pixel centre t in [-1, 1] (align_corners=False) -> source x = left + (t + 1) / 2 * cw, normalised.
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = torch.where(flip, -cw / w, cw / w)
    theta[:, 0, 2] = (2 * left + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * top + ch) / h - 1
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    # torchvision crops, then resizes: the samples stop at the crop's edge pixels, not at the image's.
    lo = torch.stack([(2 * left + 1) / w - 1, (2 * top + 1) / h - 1], 1)[:, None, None, :]
    hi = torch.stack([(2 * (left + cw) - 1) / w - 1, (2 * (top + ch) - 1) / h - 1], 1)[:, None, None, :]
    grid = torch.minimum(torch.maximum(grid, lo), hi)
    out = torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)
