"""Grad-CAM (one forward, one gradient pass per target set) and captum's guided Grad-CAM; hooks always released.

The CAM machinery lives in _cams; its helpers are re-exported here for the modules that import them from here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ._cams import (
    NORMALIZE_HINT,
    RAW_PIXEL_MAX,
    CamResult,
    _cam_targets,
    _check_targets,
    _unwrap,
    capture_output,
    check_images,
    explaining,
    resolve_layer,
)

__all__ = [
    "NORMALIZE_HINT",
    "RAW_PIXEL_MAX",
    "CamResult",
    "capture_output",
    "check_images",
    "explaining",
    "grad_cam",
    "grad_cam_targets",
    "guided_grad_cam",
    "resolve_layer",
]


def grad_cam_targets(
    model: nn.Module,
    x: Tensor,
    targets: Mapping[str, Tensor],
    *,
    layer: str | nn.Module | None = None,
    upsample: bool = True,
) -> CamResult:
    """Grad-CAM of one batch of normalized float images for several target sets (e.g. predicted and actual
    class) from one forward.

    For target class c: weights = spatial mean of d logit_c / d A over the layer output A (N, K, h, w),
    map = ReLU(sum_k weights_k * A_k). With `upsample`, maps are resized bilinearly to the input's
    (H, W). Runs in fp32, eval mode; the model's modes, parameters and gradients are left as they were.
    uint8/integer `x` is refused, and float `x` that looks like raw 0-255 pixels warns (see check_images).
    The same as cam_targets(..., method="gradcam").
    """
    check_images(x, "x", stacklevel=2)
    return _cam_targets(model, x, targets, method="gradcam", layer=layer, upsample=upsample)


def grad_cam(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    layer: str | nn.Module | None = None,
    upsample: bool = True,
) -> Tensor:
    """Grad-CAM maps (N, H, W) of normalized float images `x` for one target class per image (see grad_cam_targets)."""
    check_images(x, "x", stacklevel=2)
    res = _cam_targets(model, x, {"target": target}, method="gradcam", layer=layer, upsample=upsample)
    return res.maps["target"]


def guided_grad_cam(model: nn.Module, x: Tensor, target: Tensor, *, layer: str | nn.Module | None = None) -> Tensor:
    """captum's GuidedGradCam: guided backprop times Grad-CAM, (N, C, H, W); modes restored afterwards.

    captum hooks every ReLU for the duration of the call and removes the hooks itself. `x` as for grad_cam.
    """
    check_images(x, "x", stacklevel=2)
    from captum.attr import GuidedGradCam

    target_layer = resolve_layer(model, layer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    t = _check_targets(target, x.shape[0], _num_classes(model, x, device), "target").to(device)
    with explaining(model), warnings.catch_warnings():
        # captum announces its ReLU hooks and the input's requires_grad on every call: expected here.
        warnings.simplefilter("ignore", UserWarning)
        inp = x.detach().to(device, torch.float32).clone().requires_grad_(True)
        out = GuidedGradCam(model, target_layer).attribute(inp, target=t)
    return out.detach()


def _num_classes(model: nn.Module, x: Tensor, device: torch.device) -> int:
    fc = getattr(_unwrap(model), "fc", None)
    if isinstance(fc, nn.Linear):
        return fc.out_features
    with explaining(model), torch.no_grad():
        return int(model(x[:1].to(device, torch.float32)).shape[1])
