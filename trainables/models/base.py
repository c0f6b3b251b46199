"""The one contract every model keeps: pooled feature, logits, and on request the stage maps."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Output:
    feature: torch.Tensor                 # (b, feature_dim): pooled penultimate feature
    logits: torch.Tensor | None           # (b, num_classes), None when the model has no head
    maps: list[torch.Tensor] = field(default_factory=list)  # stage outputs, only when asked


class Backbone(nn.Module):
    """Subclasses implement `forward_features` and set `feature_dim`; the head is `self.fc`.

    `num_classes = 0` builds no head (a teacher whose classifier was removed, a label-free student).
    """

    feature_dim: int

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def make_head(self) -> None:
        self.fc = nn.Linear(self.feature_dim, self.num_classes) if self.num_classes > 0 else None

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, with_maps: bool = False, preact: bool = False) -> Output:
        feature, maps = self.forward_features(x, with_maps, preact)
        logits = self.fc(feature) if self.fc is not None else None
        return Output(feature, logits, maps)


def crd_init(model: nn.Module, linear: str | None = None) -> None:
    """The CRD zoo's initialisation: Kaiming (fan out) convolutions, BatchNorm at 1/0, and for Linear
    layers `normal` (N(0, 0.01), zero bias), `bias` (zero bias only) or nothing, per model as CRD."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:  # VGG's convolutions have one
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear is not None:
            if linear == "normal":
                nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
