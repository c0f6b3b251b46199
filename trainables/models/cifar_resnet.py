"""CIFAR ResNets of the CRD benchmark (RepDistiller's models/resnet.py): BasicBlock, depth 6n+2.

Parameter counts match the published CRD zoo, so teachers and students are comparable to its tables.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone, crd_init


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (post-ReLU output, pre-ReLU sum); the pre-activation feeds distillers that want it
        (CRD's `is_preact`) while the network itself always continues from the ReLU'd tensor."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        pre = out + (x if self.downsample is None else self.downsample(x))
        return torch.relu(pre), pre


class CifarResNet(Backbone):
    def __init__(self, depth: int, widths: list[int], num_classes: int = 100, in_channels: int = 3):
        super().__init__(num_classes)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        # CRD's attribute names (layer1..3, conv1/bn1/conv2/bn2/downsample), so the CRD zoo's
        # teacher files load key for key.
        for j, (cout, stride) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
            setattr(self, f"layer{j}", nn.ModuleList(blocks))
        # Adaptive rather than CRD's AvgPool2d(8): identical on 32x32 input, still valid on other sizes.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[-1]
        self.make_head()
        self.stages = [self.layer1, self.layer2, self.layer3]

        crd_init(self)

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.relu(self.bn1(self.conv1(x)))
        maps = [x]  # the stem has no pre-activation map in CRD either
        for stage in self.stages:
            for block in stage:
                x, pre = block(x)
            maps.append(pre if preact else x)
        feature = self.pool(x).flatten(1)
        return feature, (maps if with_maps else [])


_SMALL = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]


def _register(name: str, depth: int, widths: list[int]) -> None:
    def builder(num_classes: int = 100, in_channels: int = 3) -> Backbone:
        return CifarResNet(depth, widths, num_classes, in_channels)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"CRD {name}: depth {depth}, widths {widths}."
    MODELS.register(name)(builder)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register(f"resnet{_depth}", _depth, _SMALL)
_register("resnet8x4", 8, _WIDE)
_register("resnet32x4", 32, _WIDE)
