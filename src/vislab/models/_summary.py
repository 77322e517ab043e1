"""Model introspection: parameter counts, a torchinfo table, the default Grad-CAM layer and the CAM sweep layers."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn
from torchinfo import summary

from vislab.errors import ConfigError


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps the model; its submodules live under `_orig_mod`.
    return getattr(model, "_orig_mod", model)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in _unwrap(model).parameters() if p.requires_grad or not trainable_only)


def get_target_layer(model: nn.Module) -> nn.Module:
    """The module named by `model.gradcam_layer`: the last conv stage, whose output Grad-CAM explains."""
    model = _unwrap(model)
    name = getattr(model, "gradcam_layer", None)
    if not isinstance(name, str):
        raise ConfigError(
            f"model.gradcam_layer: {type(model).__name__} has no `gradcam_layer` attribute naming its last "
            "conv stage; set it to a dotted module name (e.g. 'layer4') or pass the target layer explicitly."
        )
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        raise ConfigError(
            f"model.gradcam_layer: {type(model).__name__}.gradcam_layer is {name!r}, which is not a "
            f"submodule of the model ({err})."
        ) from err


def get_cam_layers(model: nn.Module) -> tuple[str, ...]:
    """Dotted names of the layers a CAM sweep compares, `model.cam_layers` (the last three stages, coarsest last);
    a model without the attribute gives its `gradcam_layer` alone. Each name is checked to be a submodule."""
    model = _unwrap(model)
    names = getattr(model, "cam_layers", None)
    if names is None:
        get_target_layer(model)  # a model with neither attribute gets that function's error
        return (model.gradcam_layer,)
    if isinstance(names, str) or not all(isinstance(n, str) for n in names) or not names:
        raise ConfigError(
            f"model.cam_layers: {type(model).__name__}.cam_layers is {names!r}; set it to a tuple of dotted module "
            "names such as ('layer2', 'layer3', 'layer4')."
        )
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError as err:
            raise ConfigError(
                f"model.cam_layers: {type(model).__name__}.cam_layers names {name!r}, which is not a submodule of the "
                f"model ({err})."
            ) from err
    return tuple(names)


# torchinfo 1.8 prints its count unit as an enum ("Total mult-adds (Units.MEGABYTES): 555.43"), which reads
# as a size in bytes (TylerYep/torchinfo#350); the line is rewritten from the raw count instead.
_MULT_ADDS_LINE = re.compile(r"^Total mult-adds.*$", re.MULTILINE)
_COUNT_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def format_mult_adds(count: int | float) -> str:
    """A multiply-add count in thousands / millions / billions / trillions: 555_430_000 -> "555.43 M"."""
    for scale, prefix in _COUNT_PREFIXES:
        if count >= scale:
            return f"{count / scale:.2f} {prefix}"
    return f"{int(count)}"


def model_summary(
    model: nn.Module,
    input_size: Sequence[int] = (1, 3, 32, 32),
    *,
    depth: int = 3,
    device: str | torch.device | None = None,
) -> str:
    """A torchinfo table (layer, output shape, parameters) from one forward pass at `input_size`.

    `device=None` runs on the device the model already lives on; torchinfo moves the model
    to any other device given, so passing "cpu" for a CUDA model leaves it on the CPU.
    The model runs in eval mode (restored afterwards), so BatchNorm statistics are untouched.
    The footer counts multiply-adds of one forward pass at `input_size` as "Total mult-adds: 555.43 M".
    """
    if device is None:
        param = next(_unwrap(model).parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    stats = summary(
        _unwrap(model),
        input_size=tuple(input_size),
        depth=depth,
        device=device,
        col_names=("output_size", "num_params"),
        mode="eval",
        row_settings=("var_names",),
        verbose=0,
    )
    line = f"Total mult-adds: {format_mult_adds(stats.total_mult_adds)}"
    return _MULT_ADDS_LINE.sub(lambda _m: line, str(stats), count=1)
