"""ResNet-18/34 for 32x32 images: a 3x3 stride-1 stem and no max-pool (the CIFAR variant of He et al. 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vislab.errors import ConfigError
from vislab.models._layers import (
    DEFAULT_GROUPS,
    check_bn_momentum,
    check_common,
    init_weights,
    make_norm,
    scale_channels,
    set_bn_momentum,
)
from vislab.models._registry import build_model, register_model

STAGE_CHANNELS = (64, 128, 256, 512)
STEM_CHANNELS = 64


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers plus a shortcut (1x1 conv + norm when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm(norm, out_ch, groups)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, out_ch, groups)
        self.act2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                make_norm(norm, out_ch, groups),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem -> four BasicBlock stages (strides 1, 2, 2, last_stride) -> global average pool -> linear logits."""

    def __init__(
        self,
        layers: Sequence[int],
        *,
        num_classes: int = 10,
        norm: str = "batch",
        groups: int = DEFAULT_GROUPS,
        width: float = 1.0,
        last_stride: int = 2,
        bn_momentum: float | None = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        width = check_common(norm, groups, width, num_classes, in_chans)
        bn_momentum = check_bn_momentum(bn_momentum, norm)
        if isinstance(last_stride, bool) or not isinstance(last_stride, int) or last_stride not in (1, 2):
            raise ConfigError(
                f"model.last_stride: {last_stride!r} is not allowed; use 2 (a 4x4 final map at 32x32 input) "
                "or 1 (an 8x8 map, sharper Grad-CAM)."
            )

        stem_ch = scale_channels(STEM_CHANNELS, width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, stem_ch, kernel_size=3, stride=1, padding=1, bias=False),
            make_norm(norm, stem_ch, groups),
            nn.ReLU(inplace=True),
        )
        in_ch = stem_ch
        strides = (1, 2, 2, last_stride)
        for i, (blocks, channels, stride) in enumerate(zip(layers, STAGE_CHANNELS, strides), start=1):
            out_ch = scale_channels(channels, width)
            stage = [BasicBlock(in_ch, out_ch, stride, norm, groups)]
            stage += [BasicBlock(out_ch, out_ch, 1, norm, groups) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            in_ch = out_ch

        self.num_features = in_ch
        self.gradcam_layer = "layer4"
        self.cam_layers = ("layer2", "layer3", "layer4")  # the last three stages: candidates for a layer sweep of CAMs
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)
        init_weights(self)
        set_bn_momentum(self, bn_momentum)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (N, 64w, H, W)
        x = self.layer1(x)
        x = self.layer2(x)  # (N, 128w, H/2, W/2)
        x = self.layer3(x)  # (N, 256w, H/4, W/4)
        return self.layer4(x)  # (N, 512w, H/8, W/8) with last_stride=2

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (N, C)
        return self.fc(x)  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18, CIFAR stem: 11,173,962 parameters at width 1 and 10 classes."""
    return build_model(ResNet, kwargs, layers=(2, 2, 2, 2))


@register_model
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34, CIFAR stem: 21,282,122 parameters at width 1 and 10 classes."""
    return build_model(ResNet, kwargs, layers=(3, 4, 6, 3))
