"""ResNet-9: David Page's DAWNBench CIFAR-10 net (the course's "custom ResNet"), 6.57 M parameters."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from vislab.errors import ConfigError
from vislab.models._layers import (
    DEFAULT_GROUPS,
    check_bn_momentum,
    check_common,
    conv_norm_act,
    init_weights,
    make_norm,
    scale_channels,
    set_bn_momentum,
)
from vislab.models._registry import build_model, register_model

PREP_CHANNELS = 64
STAGE_CHANNELS = (128, 256, 512)


class ConvPoolStage(nn.Module):
    """conv 3x3 -> max-pool 2 -> norm -> ReLU, then optionally x + res(x) with two conv-norm-ReLU layers."""

    def __init__(self, in_ch: int, out_ch: int, norm: str, groups: int, residual: bool) -> None:
        super().__init__()
        # Pool before the norm, as in Page's net: the norm then runs on a 4x smaller map.
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
            nn.MaxPool2d(2),
            make_norm(norm, out_ch, groups),
            nn.ReLU(inplace=True),
        )
        self.res: nn.Module | None = None
        if residual:
            self.res = nn.Sequential(
                conv_norm_act(out_ch, out_ch, norm, groups),
                conv_norm_act(out_ch, out_ch, norm, groups),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # (N, C_out, H/2, W/2)
        if self.res is not None:
            x = x + self.res(x)
        return x


class ResNet9(nn.Module):
    """prep 64 -> layer1 128 (+res) -> layer2 256 -> layer3 512 (+res) -> global max-pool -> linear logits."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        norm: str = "batch",
        groups: int = DEFAULT_GROUPS,
        width: float = 1.0,
        logit_scale: float = 1.0,
        bn_momentum: float | None = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        width = check_common(norm, groups, width, num_classes, in_chans)
        bn_momentum = check_bn_momentum(bn_momentum, norm)
        if (
            isinstance(logit_scale, bool)
            or not isinstance(logit_scale, (int, float))
            or not math.isfinite(logit_scale)
            or logit_scale <= 0
        ):
            raise ConfigError(
                f"model.logit_scale: {logit_scale!r} is not valid; it must be a finite number > 0 "
                "(1.0 = plain logits, 0.125 = David Page's setting)."
            )
        # Default 1.0 keeps the course repos' plain logits, so published course results reproduce.
        # Page's 0.125 shrinks the initial logits and hence the softmax gradients, which is what
        # lets his high-LR OneCycle recipe stay stable; recipes that copy it set logit_scale=0.125.
        self.logit_scale = float(logit_scale)

        prep_ch = scale_channels(PREP_CHANNELS, width)
        c1, c2, c3 = (scale_channels(c, width) for c in STAGE_CHANNELS)
        self.prep = conv_norm_act(in_chans, prep_ch, norm, groups)
        self.layer1 = ConvPoolStage(prep_ch, c1, norm, groups, residual=True)
        self.layer2 = ConvPoolStage(c1, c2, norm, groups, residual=False)
        self.layer3 = ConvPoolStage(c2, c3, norm, groups, residual=True)

        self.num_features = c3
        self.gradcam_layer = "layer3"
        self.cam_layers = ("layer1", "layer2", "layer3")  # the last three stages: candidates for a layer sweep of CAMs
        self.pool = nn.AdaptiveMaxPool2d(1)
        # No bias, as in Page's net; the documented 6,573,120 parameters assume it.
        self.fc = nn.Linear(self.num_features, num_classes, bias=False)
        init_weights(self)
        set_bn_momentum(self, bn_momentum)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)  # (N, 64w, H, W)
        x = self.layer1(x)  # (N, 128w, H/2, W/2)
        x = self.layer2(x)  # (N, 256w, H/4, W/4)
        return self.layer3(x)  # (N, 512w, H/8, W/8)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (N, C)
        return self.fc(x) * self.logit_scale  # (N, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def resnet9(**kwargs: Any) -> ResNet9:
    """ResNet-9 (Page's DAWNBench net): 6,573,120 parameters at width 1 and 10 classes."""
    return build_model(ResNet9, kwargs)
