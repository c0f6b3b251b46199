"""RRKD's MNIST encoders (papers/002 §5.1; layer sizes as in the authors' notebook, Ramos-Ramos/rrkd).

Every RRKD MNIST model is an MLP on the flattened image whose hidden layers are Linear -> Dropout(0.5) ->
ReLU, and whose *encoder* ends at a plain Linear: the embedding that RRKD distils has no activation (the
notebook keeps `model[:5]`, i.e. flatten, Linear, Dropout, ReLU, Linear).

| paper name        | builder options                                    | encoder params |
| ----------------- | -------------------------------------------------- | -------------- |
| AE-64 teacher     | hidden=[128], embedding_dim=64                     | 108,736 ("109K") |
| AE-32 student     | hidden=[64], embedding_dim=32                      | 52,320 ("52K")   |
| MLP-1200 teacher  | hidden=[1200], embedding_dim=1200, nonlinear_head  | 2,383,200 (+12,010 head: "2M") |
| MLP-32 student    | hidden=[32], embedding_dim=32, nonlinear_head      | 26,176 (+330 head: "26K") |

The autoencoders' decoders (mirror MLPs ending in Tanh, trained with an MSE reconstruction loss) are not
part of this model: kd-sweep uses the trained encoder (teacher) and distils into a fresh one (student).
The `autoencoder` method builds the notebook's decoder, `model[5:]`: Dropout(0.5) -> ReLU on the code, then
the mirrored Linear -> Dropout -> ReLU layers, a Linear and Tanh (trainables/methods/autoencoder.py).
With `nonlinear_head`, the classifier is RRKD's: Dropout -> ReLU -> Linear on the embedding (the
supervised MLPs are exactly this encoder plus that head); otherwise a plain Linear, as a linear probe.
(The existing `mlp` with hidden=[1200, 1200] / [32, 32] and dropout 0.5 is the same classifier with the
same parameter count, but its feature is the last layer *after* its ReLU; RRKD distils it before.)
Maps: each hidden layer (after its ReLU, or before it with `preact`), then the embedding.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import MODELS
from .base import Backbone


class AEEncoder(Backbone):
    def __init__(self, num_classes: int, in_dim: int, hidden: list[int], embedding_dim: int, dropout: float,
                 nonlinear_head: bool):
        super().__init__(num_classes)
        self.hidden = nn.ModuleList()
        d = in_dim
        for h in hidden:
            self.hidden.append(nn.Linear(d, h))
            d = h
        self.embed = nn.Linear(d, embedding_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.feature_dim = embedding_dim
        self.make_head()
        if nonlinear_head and self.fc is not None:
            self.fc = nn.Sequential(nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.ReLU(), self.fc)

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = x.flatten(1)
        maps = []
        for linear in self.hidden:
            pre = linear(x)
            x = torch.relu(pre)
            maps.append(pre if preact else x)  # taken before dropout, as the mlp's maps
            x = self.dropout(x)
        feature = self.embed(x)
        maps.append(feature)
        return feature, (maps if with_maps else [])


@MODELS.register("ae_encoder")
def ae_encoder(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, hidden: list[int] = (128,),
               embedding_dim: int = 64, dropout: float = 0.5, nonlinear_head: bool = False) -> Backbone:
    """RRKD's MNIST MLP encoder; the defaults are the AE-64 teacher's encoder."""
    if not hidden:
        raise ValueError("ae_encoder needs at least one hidden layer (hidden=[] given)")
    return AEEncoder(num_classes, in_channels * image_size * image_size, list(hidden), embedding_dim, dropout,
                     nonlinear_head)
