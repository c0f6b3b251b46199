"""ShuffleNet V1 and V2 of the CRD benchmark (RepDistiller's models/ShuffleNetv1.py, ShuffleNetv2.py).

CIFAR layout: a 1x1 stem at full resolution and three stages that each halve it (32 -> 16 -> 8 -> 4).
- `ShuffleV1`: groups 3, stage widths 240/480/960, 4/8/4 blocks; 960-d feature.
- `ShuffleV2`: net size 1 (116/232/464 channels, 3/7/3 basic blocks after each down-sampling block), then
  a 1x1 conv to 1024 channels; 1024-d feature.
Stage maps follow CRD's `feat` list: the stem output, then each stage's output; `preact` gives the last
block's pre-ReLU tensor as CRD does. For V2 that is CRD's `cat([x1, bn3(conv3(.))])`, taken before the
channel shuffle, so its channels are in a different order from the post map's.
Both keep PyTorch's default initialisation, as CRD does. Parameter names are CRD's (`conv1`, `bn1`,
`layer1`..`layer3`), so a RepDistiller checkpoint loads after `adapt_state_dict` renames `linear` to `fc`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone
from .state_keys import ForeignKeys


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g*c, H, W] -> interleave the g groups' channels."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnitV1(nn.Module):
    """Grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1; stride 2 concatenates an avg-pooled input."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = cout // 4
        # The first unit reads the 24-channel stem: too few channels to group (as CRD).
        self.g1 = 1 if cin == 24 else groups
        self.groups = groups
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = _shuffle(torch.relu(self.bn1(self.conv1(x))), self.g1)
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        pre = torch.cat([out, self.pool(x)], 1) if self.stride == 2 else out + x
        return torch.relu(pre), pre


class ShuffleNetV1(ForeignKeys, Backbone):
    foreign_heads = ("linear",)

    def __init__(self, widths: list[int], blocks: list[int], groups: int, num_classes: int = 100,
                 in_channels: int = 3):
        super().__init__(num_classes)
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for s, (width, n) in enumerate(zip(widths, blocks), start=1):
            # The stride-2 unit concatenates its input, so its branch makes only width - cin channels.
            setattr(self, f"layer{s}", nn.ModuleList(
                ShuffleUnitV1(cin if i == 0 else width, width - cin if i == 0 else width, 2 if i == 0 else 1, groups)
                for i in range(n)))
            cin = width
        self.pool = nn.AdaptiveAvgPool2d(1)  # CRD: avg_pool2d(4), the same on 32x32 input
        self.feature_dim = cin
        self.make_head()

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.relu(self.bn1(self.conv1(x)))
        maps = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            for unit in stage:
                x, pre = unit(x)
            maps.append(pre if preact else x)
        feature = self.pool(x).flatten(1)
        return feature, (maps if with_maps else [])


class ShuffleUnitV2(nn.Module):
    """Split the channels in half; 1x1 -> depthwise 3x3 -> 1x1 on one half; concatenate; shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels // 2
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x2)))))
        branch = self.bn3(self.conv3(out))
        pre = torch.cat([x1, branch], 1)
        return _shuffle(torch.cat([x1, torch.relu(branch)], 1), 2), pre


class DownUnitV2(nn.Module):
    """Two stride-2 branches (depthwise -> 1x1, and 1x1 -> depthwise -> 1x1), concatenated and shuffled."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.conv1 = nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = torch.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(torch.relu(self.bn3(self.conv3(x)))))
        right = torch.relu(self.bn5(self.conv5(right)))
        return _shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(ForeignKeys, Backbone):
    foreign_heads = ("linear",)

    def __init__(self, widths: list[int], blocks: list[int], last: int, num_classes: int = 100,
                 in_channels: int = 3):
        super().__init__(num_classes)
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for s, (width, n) in enumerate(zip(widths, blocks), start=1):
            # CRD's layer: the down-sampling unit first, then n basic units.
            units = [DownUnitV2(cin, width), *(ShuffleUnitV2(width) for _ in range(n))]
            setattr(self, f"layer{s}", nn.ModuleList(units))
            cin = width
        self.conv2 = nn.Conv2d(cin, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.pool = nn.AdaptiveAvgPool2d(1)  # CRD: avg_pool2d(4), the same on 32x32 input
        self.feature_dim = last
        self.make_head()

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = torch.relu(self.bn1(self.conv1(x)))
        maps = [x]
        for stage in (self.layer1, self.layer2, self.layer3):
            x = stage[0](x)
            for unit in stage[1:]:
                x, pre = unit(x)
            maps.append(pre if preact else x)
        feature = self.pool(torch.relu(self.bn2(self.conv2(x)))).flatten(1)
        return feature, (maps if with_maps else [])


@MODELS.register("ShuffleV1")
def shufflev1(num_classes: int = 100, in_channels: int = 3) -> Backbone:
    """CRD ShuffleV1: groups 3, widths 240/480/960, 4/8/4 units; 960-d feature."""
    return ShuffleNetV1([240, 480, 960], [4, 8, 4], 3, num_classes, in_channels)


@MODELS.register("ShuffleV2")
def shufflev2(num_classes: int = 100, in_channels: int = 3) -> Backbone:
    """CRD ShuffleV2 (net size 1): widths 116/232/464, 3/7/3 units, 1x1 conv to 1024; 1024-d feature."""
    return ShuffleNetV2([116, 232, 464], [3, 7, 3], 1024, num_classes, in_channels)
