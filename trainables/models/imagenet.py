"""ImageNet models from torchvision, behind kd-sweep's Backbone contract.

Each builder makes the torchvision network with `weights=None` and keeps its modules under torchvision's
names (so torchvision and MoCo checkpoints load), except the classifier, which becomes kd-sweep's `fc`
(absent when `num_classes=0`):
- ResNets: feature = the pooled layer4 output (512 for resnet18/34, 2048 for resnet50); `fc` = Linear.
  Maps: layer1..layer4 outputs; `preact` gives each stage's last block before its final ReLU.
- mobilenet_v2, efficientnet_b0: feature = the pooled 1280-d output of `features`; `fc` = torchvision's
  Linear, with its Dropout(0.2) applied to the feature on the way to `fc` (the feature itself is not
  dropped out).
- mobilenet_v3_large: feature = the pooled 960-d output of `features`, i.e. *before* the classifier's
  hidden Linear(960, 1280) + Hardswish; that hidden layer belongs to the head, so `fc` is torchvision's
  whole classifier (hidden layer, Hardswish, Dropout, Linear) and the parameter count is torchvision's.
  (Methods that need `fc` to be a single Linear, such as srrl's softmax-regression term, refuse this one.)
  Maps of these three: the last output of `features` at strides 4, 8, 16 and 32 of the input (the
  outputs where the resolution changes; the stride-32 one is the map that is pooled). No preact maps:
  `preact` returns the same maps.
- regnet_y_16gf (Miles Table 1's "RegNet-Y": the paper's only named RegNet-Y is DeiT's RegNetY-160 =
  RegNetY-16GF; torchvision has no 4GF one): feature = the pooled 3024-d `trunk_output`; `fc` = Linear.
  Maps: the outputs of trunk_output.block1..block4 (strides 4, 8, 16, 32).
- convnext_tiny: feature = the pooled output of `features` through the classifier's LayerNorm2d (the
  pre-logits feature, 768-d; torchvision's `classifier` is LayerNorm2d, Flatten, Linear: the first two
  stay here as `classifier`, the Linear becomes `fc`). Maps: the outputs of the four stages (strides 4,
  8, 16, 32; before that LayerNorm).
- vit_b_16: feature = the class token after the encoder's final LayerNorm (768-d); `fc` = heads.head.
  Maps: the patch tokens (class token dropped) after encoder layers 3, 6, 9 and 12, laid out as
  (768, H/16, W/16) maps (the last before the final LayerNorm). It takes square inputs whose side is a
  multiple of 16 (its position embedding is sized from the data's image size: 224 for ImageNet, which
  torchvision's weights need).
  These three: no preact maps (`preact` returns the same maps), no dropout before `fc`.

`weights`: None (fresh initialisation), a local file (read as teacher checkpoints are, by
`trainables.checkpoints`: a state dict, or a dict holding one under 'model' or 'state_dict'), or a
torchvision weights name such as "IMAGENET1K_V1" or "DEFAULT", used only if torchvision's file is already
in the local torch hub cache ($TORCH_HOME/hub/checkpoints): nothing is ever downloaded. The body must
match the file exactly; the classifier is loaded when its shape fits, dropped when the model has none,
and otherwise left at its initialisation with a warning (fine-tuning an ImageNet model on other classes).
"""
from __future__ import annotations

import os
import urllib.parse
import warnings
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import load_into, read_state_dict
from ..registry import MODELS
from .base import Backbone, Output
from .state_keys import ForeignKeys


def _torchvision_model(arch: str):
    """torchvision's builder of ARCH. torchvision is imported on first use, not with the model registry:
    it costs every Ray worker and every `kd-sweep` command ~2 s of start-up."""
    import torchvision

    return getattr(torchvision.models, arch)


def _replace_input_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    return new


class TorchvisionBackbone(ForeignKeys, Backbone):
    """Shared by the wrappers: the optional dropout in front of `fc`, and loading `weights`."""

    arch: str
    head_dropout: nn.Module

    def forward(self, x: torch.Tensor, with_maps: bool = False, preact: bool = False) -> Output:
        feature, maps = self.forward_features(x, with_maps, preact)
        logits = self.fc(self.head_dropout(feature)) if self.fc is not None else None
        return Output(feature, logits, maps)

    def load_weights(self, weights: str) -> None:
        path = weights if os.path.isfile(weights) else str(cached_torchvision_weights(self.arch, weights))
        load_into(self, self._fit_head(self.adapt_state_dict(read_state_dict(path)), path), path)

    def _fit_head(self, state: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
        """STATE with this model's own classifier where the file's does not fit (other classes, or a
        MoCo projector): fine-tuning an ImageNet body on another task is the point of `weights=`."""
        head = {k: v for k, v in self.state_dict().items() if k.startswith("fc.")}
        if all(k in state and state[k].shape == v.shape for k, v in head.items()):
            return state
        warnings.warn(f"{path}: the classifier does not fit {self.arch} with {self.num_classes} classes;"
                      " it keeps its fresh initialisation", stacklevel=4)
        return {**{k: v for k, v in state.items() if not k.startswith("fc.")}, **head}


def cached_torchvision_weights(arch: str, name: str) -> Path:
    """The local file of torchvision's weights `name` for `arch`; never downloads."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    try:
        w = enum[name]
    except KeyError:
        known = ", ".join(enum.__members__)
        raise FileNotFoundError(f"weights={name!r} for {arch} is neither a file nor a torchvision weights name"
                                f" ({known})") from None
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(w.url).path)
    if not path.is_file():
        raise FileNotFoundError(
            f"torchvision weights {arch} {w.name} are not in the local torch hub cache: looked for {path}."
            " kd-sweep never downloads weights. Fetch them where there is network access, e.g."
            f" `python -c \"import torchvision; torchvision.models.{arch}(weights='{w.name}')\"` (stores the file"
            f" in $TORCH_HOME/hub/checkpoints), or download {w.url} to {path}; or pass weights=<a local file>.")
    return path


class TorchvisionResNet(TorchvisionBackbone):
    def __init__(self, arch: str, num_classes: int, in_channels: int):
        super().__init__(num_classes)
        self.arch = arch
        tv = _torchvision_model(arch)(weights=None, num_classes=max(num_classes, 1))
        self.conv1 = _replace_input_conv(tv.conv1, in_channels)
        self.bn1, self.relu, self.maxpool = tv.bn1, tv.relu, tv.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        self.avgpool = tv.avgpool
        self.feature_dim = tv.fc.in_features
        self.fc = tv.fc if num_classes > 0 else None
        self.head_dropout = nn.Identity()

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if with_maps and preact:
                for block in stage[:-1]:
                    x = block(x)
                x, pre = _block_with_preact(stage[-1], x)
                maps.append(pre)
            else:
                x = stage(x)
                maps.append(x)
        feature = self.avgpool(x).flatten(1)
        return feature, (maps if with_maps else [])


def _block_with_preact(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision BasicBlock/Bottleneck forward that also returns the sum before the final ReLU."""
    identity = x if block.downsample is None else block.downsample(x)
    out = torch.relu(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):  # a Bottleneck; a BasicBlock has two convolutions
        out = torch.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    pre = out + identity
    return torch.relu(pre), pre


def _stride_taps(features: nn.Sequential) -> list[int]:
    """Indices of the last module at each cumulative stride 4, 8, 16, 32 (a module with a stride-2 conv
    halves the resolution)."""
    stride, last = 1, {}
    for i, m in enumerate(features):
        if any(isinstance(c, nn.Conv2d) and c.stride == (2, 2) for c in m.modules()):
            stride *= 2
        last[stride] = i
    return [last[s] for s in (4, 8, 16, 32)]


class TorchvisionFeatures(TorchvisionBackbone):
    """mobilenet_v2, mobilenet_v3_large, efficientnet_b0: `features`, pooling, classifier."""

    def __init__(self, arch: str, num_classes: int, in_channels: int):
        super().__init__(num_classes)
        self.arch = arch
        tv = _torchvision_model(arch)(weights=None, num_classes=max(num_classes, 1))
        self.features = tv.features
        self.features[0][0] = _replace_input_conv(self.features[0][0], in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.taps = _stride_taps(self.features)
        head = tv.classifier
        if isinstance(head[0], nn.Dropout):  # Dropout -> Linear: fc is the Linear
            self.foreign_heads = ("classifier.1",)
            self.head_dropout = nn.Dropout(head[0].p)  # not in place: the feature stays intact
            self.fc = head[1] if num_classes > 0 else None
            self.feature_dim = head[1].in_features
        else:  # mobilenet_v3: Linear -> Hardswish -> Dropout -> Linear, all of it the head
            self.foreign_heads = ("classifier",)
            self.head_dropout = nn.Identity()
            self.fc = head if num_classes > 0 else None
            self.feature_dim = head[0].in_features

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                maps.append(x)
        feature = self.avgpool(x).flatten(1)
        return feature, (maps if with_maps else [])


class TorchvisionRegNet(TorchvisionBackbone):
    """regnet_y_*: `stem`, `trunk_output` (block1..block4), pooling, `fc`."""

    def __init__(self, arch: str, num_classes: int, in_channels: int):
        super().__init__(num_classes)
        self.arch = arch
        tv = _torchvision_model(arch)(weights=None, num_classes=max(num_classes, 1))
        self.stem = tv.stem
        self.stem[0] = _replace_input_conv(self.stem[0], in_channels)
        self.trunk_output, self.avgpool = tv.trunk_output, tv.avgpool
        self.feature_dim = tv.fc.in_features
        self.fc = tv.fc if num_classes > 0 else None
        self.head_dropout = nn.Identity()

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.stem(x)
        maps = []
        for stage in self.trunk_output:
            x = stage(x)
            maps.append(x)
        feature = self.avgpool(x).flatten(1)
        return feature, (maps if with_maps else [])


class TorchvisionConvNeXt(TorchvisionBackbone):
    """convnext_*: `features` (stem, then stage / downsampling alternating), pooling, LayerNorm2d, `fc`."""

    foreign_heads = ("classifier.2",)

    def __init__(self, arch: str, num_classes: int, in_channels: int):
        super().__init__(num_classes)
        self.arch = arch
        tv = _torchvision_model(arch)(weights=None, num_classes=max(num_classes, 1))
        self.features = tv.features
        self.features[0][0] = _replace_input_conv(self.features[0][0], in_channels)
        self.avgpool = tv.avgpool
        self.classifier = nn.Sequential(tv.classifier[0], tv.classifier[1])  # LayerNorm2d, Flatten: the feature's
        self.taps = list(range(1, len(self.features), 2))  # the stages; even indices are stem / downsampling
        self.feature_dim = tv.classifier[2].in_features
        self.fc = tv.classifier[2] if num_classes > 0 else None
        self.head_dropout = nn.Identity()

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        maps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                maps.append(x)
        feature = self.classifier(self.avgpool(x))
        return feature, (maps if with_maps else [])


class TorchvisionViT(TorchvisionBackbone):
    """vit_*: `conv_proj` (patches), `class_token`, `encoder` (position embedding, layers, LayerNorm), `fc`."""

    foreign_heads = ("heads.head",)

    def __init__(self, arch: str, num_classes: int, in_channels: int, image_size: int):
        super().__init__(num_classes)
        self.arch = arch
        patch = int(arch.rsplit("_", 1)[1])  # vit_b_16: 16-pixel patches
        if image_size % patch:
            raise ValueError(f"{arch} needs an image size that is a multiple of {patch}, got {image_size}")
        tv = _torchvision_model(arch)(weights=None, num_classes=max(num_classes, 1), image_size=image_size)
        self.image_size, self.patch_size, self.hidden_dim = tv.image_size, tv.patch_size, tv.hidden_dim
        self.conv_proj = _replace_input_conv(tv.conv_proj, in_channels)
        self.class_token = tv.class_token
        self.encoder = tv.encoder
        depth = len(self.encoder.layers)
        self.taps = [depth * q // 4 - 1 for q in (1, 2, 3, 4)]  # layers 3, 6, 9, 12 of ViT-B
        self.feature_dim = tv.hidden_dim
        self.fc = tv.heads.head if num_classes > 0 else None
        self.head_dropout = nn.Identity()

    def forward_features(self, x: torch.Tensor, with_maps: bool, preact: bool
                         ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        n, _, h, w = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(f"{self.arch} was built for {self.image_size}x{self.image_size} inputs, got {h}x{w}")
        gh, gw = h // self.patch_size, w // self.patch_size
        x = self.conv_proj(x).reshape(n, self.hidden_dim, gh * gw).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.encoder.dropout(x + self.encoder.pos_embedding)
        maps = []
        for i, layer in enumerate(self.encoder.layers):
            x = layer(x)
            if with_maps and i in self.taps:
                maps.append(x[:, 1:].transpose(1, 2).reshape(n, self.hidden_dim, gh, gw))
        feature = self.encoder.ln(x)[:, 0]
        return feature, maps


def _register(arch: str, cls: type[TorchvisionBackbone]) -> None:
    def builder(num_classes: int = 1000, in_channels: int = 3, weights: str | None = None) -> Backbone:
        model = cls(arch, num_classes, in_channels)
        if weights is not None:
            model.load_weights(weights)
        return model

    builder.__name__ = builder.__qualname__ = arch
    builder.__doc__ = f"torchvision {arch}; `weights`: None, a local file, or a cached torchvision weights name."
    MODELS.register(arch)(builder)


for _arch in ("resnet18", "resnet34", "resnet50"):
    _register(_arch, TorchvisionResNet)
for _arch in ("efficientnet_b0", "mobilenet_v2", "mobilenet_v3_large"):
    _register(_arch, TorchvisionFeatures)
_register("regnet_y_16gf", TorchvisionRegNet)
_register("convnext_tiny", TorchvisionConvNeXt)


def _register_vit(arch: str) -> None:
    """A ViT's position embedding is sized by the input: its builder takes the data's image size."""
    def builder(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224,
                weights: str | None = None) -> Backbone:
        model = TorchvisionViT(arch, num_classes, in_channels, image_size)
        if weights is not None:
            model.load_weights(weights)
        return model

    builder.__name__ = builder.__qualname__ = arch
    builder.__doc__ = (f"torchvision {arch} (square inputs, side a multiple of 16; its weights need 224);"
                       " `weights`: None, a local file, or a cached torchvision weights name.")
    MODELS.register(arch)(builder)


_register_vit("vit_b_16")
