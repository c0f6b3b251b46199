"""MobileNetV2 of the CRD benchmark (RepDistiller's models/mobilenetv2.py, `mobile_half`: expansion 6,
width multiplier 0.5), registered as `MobileNetV2` as the KD papers' tables call it.

CIFAR layout: a stride-2 stem, so 32x32 input is 16x16 after it and 2x2 before pooling. The last 1x1 conv
keeps 1280 channels for width <= 1 (as CRD), so the feature is 1280-d. Unlike torchvision, a block with
expansion 1 still has its 1x1 expansion conv (as CRD).

Stage maps follow CRD's `feat` list: the stem output and the outputs of blocks 1, 2, 4 and 6 (strides 2,
2, 4, 8, 16 of the input for 32x32). The bottleneck outputs are linear (no ReLU), so CRD has no separate
preact maps: `preact` returns the same maps. Parameter names are CRD's, so a RepDistiller checkpoint
loads after `adapt_state_dict` renames its `classifier.0` to `fc`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone, crd_init
from .state_keys import ForeignKeys

# (expansion, channels, blocks, first stride) per stage; expansion None = the network's T.
_STAGES = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
           (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1)]
_TAPS = (1, 2, 4, 6)  # stages whose output is a map (CRD's f1..f4)


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(ForeignKeys, Backbone):
    foreign_heads = ("classifier.0",)

    def __init__(self, expansion: int = 6, width: float = 0.5, num_classes: int = 100, in_channels: int = 3):
        super().__init__(num_classes)
        cin = int(32 * width)
        self.conv1 = _conv_bn_relu(in_channels, cin, 3, 2)
        stages = []
        for t, c, n, s in _STAGES:
            cout = int(c * width)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, expansion if t is None else t))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(stages)
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = _conv_bn_relu(cin, last, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)  # CRD: AvgPool2d(2, ceil_mode=True), the same on 32x32 input
        self.feature_dim = last
        self.make_head()

        crd_init(self, linear="normal")

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.conv1(x)
        maps = [x]
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in _TAPS:
                maps.append(x)
        feature = self.pool(self.conv2(x)).flatten(1)
        return feature, (maps if with_maps else [])


@MODELS.register("MobileNetV2")
def mobilenetv2(num_classes: int = 100, in_channels: int = 3) -> Backbone:
    """CRD's `mobile_half`: MobileNetV2 with expansion 6 and width 0.5, 1280-d feature."""
    return MobileNetV2(6, 0.5, num_classes, in_channels)
