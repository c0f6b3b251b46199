"""ImageNet-style ResNets adapted to CIFAR: a 3x3 stride-1 stem, no max-pool, four stages at strides
1, 2, 4, 8 (32x32 input ends at 4x4).

- `ResNet18`, `ResNet50`: the CRD benchmark's (RepDistiller's models/resnetv2.py), base width 64.
- `resnet9x0.5`: RRKD's student (papers/002, "a ResNet-9 encoder with a 256 embedding size"). RRKD's
  notebook builds it with lightly's `ResNetGenerator('resnet-9', width=0.5)`: this same network with one
  BasicBlock per stage and base width int(64 * 0.5) = 32, so stages of 32/64/128/256 channels and a 256-d
  feature. Its teacher, lightly's 'resnet-18', is this `ResNet18`. One quirk of RRKD's code is *not*
  copied: it strips the classifier with `nn.Sequential(*children()[:-1])`, which also drops the stem's
  functional ReLU, so RRKD's distilled encoders ran without a stem ReLU; here the stem always has it.
  It is initialised as CRD's ResNets (Kaiming, fan-out), where lightly keeps PyTorch's defaults.

Stage maps follow CRD's `feat` list: the stem output, then each stage's output; `preact` gives each
stage's last block before its final ReLU. Parameter names are CRD's (and lightly's), so their checkpoints
load after `adapt_state_dict` renames `linear` to `fc`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone, crd_init
from .state_keys import ForeignKeys


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Identity (an empty Sequential, as CRD) or a strided 1x1 conv with BN."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(post-ReLU output, pre-ReLU sum)."""
        out = torch.relu(self.bn1(self.conv1(x)))
        pre = self.bn2(self.conv2(out)) + self.shortcut(x)
        return torch.relu(pre), pre


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _shortcut(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(post-ReLU output, pre-ReLU sum)."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        pre = self.bn3(self.conv3(out)) + self.shortcut(x)
        return torch.relu(pre), pre


class ResNetV2(ForeignKeys, Backbone):
    foreign_heads = ("linear",)

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: list[int], base: int = 64,
                 num_classes: int = 100, in_channels: int = 3):
        super().__init__(num_classes)
        self.conv1 = nn.Conv2d(in_channels, base, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        cin = base
        for s, (n, stride) in enumerate(zip(blocks, (1, 2, 2, 2)), start=1):
            planes = base * 2 ** (s - 1)
            units = []
            for i in range(n):
                units.append(block(cin, planes, stride if i == 0 else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{s}", nn.ModuleList(units))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.make_head()

        crd_init(self)

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.relu(self.bn1(self.conv1(x)))
        maps = [x]  # no pre-activation map for the stem in CRD
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                x, pre = block(x)
            maps.append(pre if preact else x)
        feature = self.pool(x).flatten(1)
        return feature, (maps if with_maps else [])


@MODELS.register("ResNet18")
def resnet18_cifar(num_classes: int = 100, in_channels: int = 3) -> Backbone:
    """CRD ResNet18 for CIFAR: BasicBlock x [2, 2, 2, 2], widths 64-512, 512-d feature."""
    return ResNetV2(BasicBlock, [2, 2, 2, 2], 64, num_classes, in_channels)


@MODELS.register("ResNet50")
def resnet50_cifar(num_classes: int = 100, in_channels: int = 3) -> Backbone:
    """CRD ResNet50 for CIFAR: Bottleneck x [3, 4, 6, 3], 2048-d feature."""
    return ResNetV2(Bottleneck, [3, 4, 6, 3], 64, num_classes, in_channels)


@MODELS.register("resnet9x0.5")
def resnet9_half(num_classes: int = 100, in_channels: int = 3) -> Backbone:
    """RRKD's ResNet-9x0.5 student: BasicBlock x [1, 1, 1, 1], widths 32-256, 256-d feature."""
    return ResNetV2(BasicBlock, [1, 1, 1, 1], 32, num_classes, in_channels)
