"""Building blocks shared by the vislab models: the norm factory, channel scaling and option checks."""

from __future__ import annotations

import math

from torch import nn

from vislab.errors import ConfigError

NORMS = ("batch", "group", "layer")
DEFAULT_GROUPS = 32


def check_norm(norm: object, groups: object) -> None:
    """Validate `norm` and `groups` once, before any layer is built, so the error names the field."""
    if norm not in NORMS:
        raise ConfigError(
            f"model.norm: {norm!r} is not a known normalisation; allowed values are "
            f"{', '.join(repr(n) for n in NORMS)} ('layer' is GroupNorm with one group)."
        )
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ConfigError(
            f"model.groups: {groups!r} is not a valid number of GroupNorm groups; "
            "it must be a positive integer (it is clamped per layer to a divisor of the channel count)."
        )


def check_width(width: object) -> float:
    """Return `width` as a float, or raise if it is not a finite positive number."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ConfigError(
            f"model.width: {width!r} is not a valid channel multiplier; it must be a finite number > 0 "
            "(1.0 gives the reference widths, 0.25 a quarter of the channels)."
        )
    return float(width)


def check_positive_int(field: str, value: object) -> int:
    """Return `value` if it is a positive int (bools excluded), else raise naming `model.<field>`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.{field}: {value!r} is not valid; it must be a positive integer.")
    return value


def check_positive_number(field: str, value: object) -> float:
    """Return `value` as a float if it is a finite number > 0 (bools excluded), else raise naming `model.<field>`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"model.{field}: {value!r} is not valid; it must be a finite number > 0.")
    return float(value)


def check_bn_momentum(bn_momentum: object, norm: str) -> float | None:
    """Return `bn_momentum` (None: torch's 0.1) if it is a number in (0, 1] and the model uses BatchNorm, else raise."""
    if bn_momentum is None:
        return None
    if (
        isinstance(bn_momentum, bool)
        or not isinstance(bn_momentum, (int, float))
        or not 0 < bn_momentum <= 1  # also rejects NaN
    ):
        raise ConfigError(
            f"model.bn_momentum: {bn_momentum!r} is not valid; it must be a number in (0, 1], the weight of each "
            "batch in BatchNorm's running statistics (torch's convention; its default is 0.1)."
        )
    if norm != "batch":
        # Silently ignoring it would let a recipe believe it tuned something.
        raise ConfigError(
            f"model.bn_momentum: {bn_momentum!r} only applies to model.norm=batch (this model uses {norm!r}, "
            "which keeps no running statistics); leave it unset."
        )
    return float(bn_momentum)


def scale_channels(channels: int, width: float) -> int:
    """Channels of a layer after the width multiplier; never below one."""
    return max(1, round(channels * width))


def group_count(channels: int, groups: int) -> int:
    """The largest divisor of `channels` that is at most `groups`.

    Clamping instead of failing lets one config (groups=32) work at every width:
    a 48-channel layer gets 24 groups, an 8-channel one 8.
    """
    for g in range(min(groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1  # unreachable: 1 divides everything


def make_norm(norm: str, channels: int, groups: int = DEFAULT_GROUPS, *, eps: float = 1e-5) -> nn.Module:
    """A 2-d normalisation layer over `channels`; every kind has one weight and bias per channel."""
    if norm == "batch":
        return nn.BatchNorm2d(channels, eps=eps)
    if norm == "group":
        return nn.GroupNorm(group_count(channels, groups), channels, eps=eps)
    if norm == "layer":
        # One group normalises over (C, H, W) per sample: the course repos' "layer norm" for conv nets.
        return nn.GroupNorm(1, channels, eps=eps)
    check_norm(norm, groups)  # raises with the allowed values
    raise AssertionError("unreachable")


def conv_norm_act(in_ch: int, out_ch: int, norm: str, groups: int, *, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias: the norm's shift replaces it) -> norm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        make_norm(norm, out_ch, groups),
        nn.ReLU(inplace=True),
    )


def set_bn_momentum(model: nn.Module, bn_momentum: float | None) -> None:
    """Give every BatchNorm layer of `model` this momentum (None keeps torch's 0.1); for a model's own constructor."""
    if bn_momentum is None:
        return
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # the only BatchNorm make_norm builds
            m.momentum = bn_momentum


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, as torchvision and timm do), unit-scale norms, default linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def check_common(norm: object, groups: object, width: object, num_classes: object, in_chans: object) -> float:
    """Validate the options every architecture takes; returns `width` as a float."""
    check_norm(norm, groups)
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_chans", in_chans)
    return check_width(width)
