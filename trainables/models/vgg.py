"""CIFAR VGGs of the CRD benchmark (RepDistiller's models/vgg.py, the `_bn` variants that its model_dict
names vgg8..vgg19): five conv blocks, max-pooling between them, global average pooling to a 512-d feature
and one Linear classifier (no VGG fully connected layers).

Stage maps follow CRD's `feat` list: block0 after its ReLU, then blocks 1-4 after (or, with `preact`,
before) their last ReLU. As in CRD, the fourth max-pool runs only on 64x64 input (TinyImageNet), so on
32x32 input blocks 3 and 4 both work at 4x4. The convolutions keep their bias next to BatchNorm, as CRD's
do (it counts in the parameter totals). Parameter names are CRD's (`block0`..`block4`), so a RepDistiller
checkpoint loads after `adapt_state_dict` renames its `classifier` to `fc`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone, crd_init
from .state_keys import ForeignKeys

# Channels of the convs in each of the five blocks (CRD's cfg S, A, B, D, E).
_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(cin: int, widths: list[int]) -> nn.Sequential:
    """conv-BN-ReLU repeated, without the last ReLU (the network applies it, keeping the preact map)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers[:-1])


class VGG(ForeignKeys, Backbone):
    foreign_heads = ("classifier",)

    def __init__(self, cfg: list[list[int]], num_classes: int = 100, in_channels: int = 3):
        super().__init__(num_classes)
        cin = in_channels
        for i, widths in enumerate(cfg):
            setattr(self, f"block{i}", _block(cin, widths))
            cin = widths[-1]
        self.maxpool = nn.MaxPool2d(2, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.make_head()

        crd_init(self, linear="normal")

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pool3 = x.shape[2] == 64  # CRD's TinyImageNet switch, kept as it is
        x = torch.relu(self.block0(x))
        maps = [x]  # CRD's block-0 map is always post-ReLU
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4), start=1):
            if i < 4 or pool3:
                x = self.maxpool(x)
            pre = block(x)
            x = torch.relu(pre)
            maps.append(pre if preact else x)
        feature = self.pool(x).flatten(1)
        return feature, (maps if with_maps else [])


def _register(name: str) -> None:
    def builder(num_classes: int = 100, in_channels: int = 3) -> Backbone:
        return VGG(_CFG[name], num_classes, in_channels)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"CRD {name} (with BatchNorm): blocks {_CFG[name]}, 512-d feature."
    MODELS.register(name)(builder)


for _name in _CFG:
    _register(_name)
