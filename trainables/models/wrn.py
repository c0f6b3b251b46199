"""Wide ResNets of the CRD benchmark (RepDistiller's models/wrn.py): pre-activation blocks, depth 6n+4.

Stage maps follow CRD's `feat` list: the stem conv output, then each stage's output. A pre-activation
network never applies ReLU to a stage output, so the "post" maps are the raw residual sums; the `preact`
maps are those sums through the BatchNorm that opens the next stage (CRD's `is_preact` branch). Each
BatchNorm runs once per forward, unlike CRD, which runs the next stage's BN a second time for the map.
Dropout (CRD's `dropRate`) is 0 in every zoo entry and is left out. Parameter names are CRD's, so a
RepDistiller checkpoint loads after `adapt_state_dict` (its classifier is already called `fc`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone, crd_init
from .state_keys import ForeignKeys


class WideBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv with an identity shortcut, or a 1x1 conv on the activated input."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        # CRD's parameter names, camelCase included, so its checkpoints load.
        self.convShortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        """`normed` is `bn1(x)` when the caller already computed it (to keep it as a preact map)."""
        act = torch.relu(self.bn1(x) if normed is None else normed)
        out = self.conv2(torch.relu(self.bn2(self.conv1(act))))
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class WideStage(nn.Module):
    """CRD's NetworkBlock: n blocks under `layer`, the first one changing width and stride."""

    def __init__(self, n: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.ModuleList(WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                   for i in range(n))


class WideResNet(ForeignKeys, Backbone):
    def __init__(self, depth: int, widen: int, num_classes: int = 100, in_channels: int = 3):
        super().__init__(num_classes)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], 1)
        self.block2 = WideStage(n, widths[1], widths[2], 2)
        self.block3 = WideStage(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[-1])  # the final pre-activation, before pooling
        self.pool = nn.AdaptiveAvgPool2d(1)   # CRD: AvgPool2d(8), the same on 32x32 input
        self.feature_dim = widths[-1]
        self.make_head()

        crd_init(self, linear="bias")

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.conv1(x)
        maps = [x]  # CRD keeps the stem map as it is, preact or not
        stages = [self.block1.layer, self.block2.layer, self.block3.layer]
        normed = None
        for i, blocks in enumerate(stages):
            x = blocks[0](x, normed)
            for block in blocks[1:]:
                x = block(x)
            # The BN that opens the next stage (or the final one) gives the preact map.
            normed = (stages[i + 1][0].bn1 if i + 1 < len(stages) else self.bn1)(x)
            maps.append(normed if preact else x)
        feature = self.pool(torch.relu(normed)).flatten(1)
        return feature, (maps if with_maps else [])


def _register(depth: int, widen: int) -> None:
    name = f"wrn_{depth}_{widen}"

    def builder(num_classes: int = 100, in_channels: int = 3) -> Backbone:
        return WideResNet(depth, widen, num_classes, in_channels)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"CRD {name}: WRN depth {depth}, widen factor {widen}."
    MODELS.register(name)(builder)


for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _register(_depth, _widen)
