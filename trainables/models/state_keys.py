"""Weights saved by other code, read into kd-sweep's models.

The zoo models keep the parameter names of the code they reproduce (RepDistiller for the CIFAR zoo,
torchvision for the ImageNet models), except the classifier, which kd-sweep always calls `fc`. So a
checkpoint from that code loads once its classifier keys are renamed and its wrapper prefixes dropped;
`adapt_state_dict` does that and nothing else (no shape fixing, no guessing).
"""
from __future__ import annotations

import torch

# The query encoder of a MoCo checkpoint: v2 `encoder_q.`, v3 `base_encoder.` (after `module.`).
_ENCODERS = ("encoder_q.", "base_encoder.")


def adapt_state_dict(state: dict[str, torch.Tensor], heads: tuple[str, ...], has_head: bool
                     ) -> dict[str, torch.Tensor]:
    """Strip `module.`; keep only a MoCo query encoder when there is one; rename the classifier
    prefixes `heads` (e.g. "linear", "classifier.1") to `fc`; drop `fc.*` when the model has no head."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for prefix in _ENCODERS:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    out = {}
    for k, v in state.items():
        for head in heads:
            if k.startswith(head + "."):
                k = "fc." + k[len(head) + 1:]
                break
        out[k] = v
    if not has_head:
        out = {k: v for k, v in out.items() if not k.startswith("fc.")}
    return out


class ForeignKeys:
    """Mixin for a Backbone whose original code named its classifier differently."""

    foreign_heads: tuple[str, ...] = ()

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return adapt_state_dict(state, self.foreign_heads, getattr(self, "fc", None) is not None)
