"""Fully connected nets on flattened images: tiny students/teachers for fast sweeps (e.g. 8x8 digits)."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone


class MLP(Backbone):
    def __init__(self, num_classes: int, in_dim: int, hidden: list[int], dropout: float, batchnorm: bool):
        super().__init__(num_classes)
        if not hidden:
            raise ValueError("mlp needs at least one hidden layer (hidden=[] given)")
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        d = in_dim
        for h in hidden:
            self.linears.append(nn.Linear(d, h))
            self.norms.append(nn.BatchNorm1d(h) if batchnorm else nn.Identity())
            d = h
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.feature_dim = d
        self.make_head()

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = x.flatten(1)
        maps = []
        for linear, norm in zip(self.linears, self.norms):
            pre = norm(linear(x))
            x = torch.relu(pre)
            # Maps are taken before dropout so distillation targets do not depend on the dropout mask.
            maps.append(pre if preact else x)
            x = self.dropout(x)
        return x, (maps if with_maps else [])


@MODELS.register("mlp")
def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 8,
        hidden: list[int] = (256,), dropout: float = 0.0, batchnorm: bool = False) -> Backbone:
    return MLP(num_classes, in_channels * image_size * image_size, list(hidden), dropout, batchnorm)
