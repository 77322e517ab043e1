"""Batched Grad-CAM (one forward, one gradient pass per target set) with hooks that are always released."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models import get_target_layer

LAYER_LIST_DEPTH = 2  # module names listed in the "unknown layer" message: up to this many dots deep
# A float batch with no negative value and a maximum above this is taken for raw 0-255 pixels. Normalized
# images, (x / 255 - mean) / std, reach at most (1 - mean) / std: about 2.1 for CIFAR-10 and above 10 only
# for a channel whose std is below 0.1; and a batch of them has negative values unless every pixel is at
# least its channel's mean. So the rule cannot fire on normalized CIFAR images. Images scaled to [0, 1]
# but not standardized are not flagged: a batch of bright normalized images (white sky, snow) can lie in
# [0, 1] too, and a model does not record the normalization it was trained with.
RAW_PIXEL_MAX = 10.0
NORMALIZE_HINT = (
    "float images normalized as in training, (x / 255 - mean) / std per channel, e.g. "
    "vislab.augment.normalize(images, dataset.mean, dataset.std) or LoadedRun.normalize(images)"
)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile keeps the real modules under _orig_mod


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None) -> nn.Module:
    """The module whose output Grad-CAM explains: `layer` by dotted name or module, else the model's default."""
    model = _unwrap(model)
    if layer is None:
        return get_target_layer(model)
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ConfigError(
                f"layer: the module given ({type(layer).__name__}) is not part of {type(model).__name__}."
            )
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n and n.count(".") < LAYER_LIST_DEPTH]
        default = getattr(model, "gradcam_layer", None)
        raise ConfigError(
            f"layer = {layer!r} is not a submodule of {type(model).__name__}; give a dotted module name such as "
            f"{', '.join(names)} (default: {default!r})."
        ) from None


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with autograd on for the block; every submodule's train/eval flag is restored afterwards.

    Gradients are taken with `torch.autograd.grad` w.r.t. activations only, so parameters' `.grad`
    and `requires_grad` are never touched; eval mode keeps BatchNorm statistics unchanged.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield model
    finally:
        for m, training in modes:
            m.training = training


@contextmanager
def capture_output(module: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Record `module`'s forward output under key "out"; the forward hook is removed even on error."""
    store: dict[str, Tensor] = {}

    def hook(_mod: nn.Module, _inp: tuple, out: Tensor) -> None:
        store["out"] = out

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def check_images(x: Tensor, name: str = "x", *, stacklevel: int = 2) -> Tensor:
    """Refuse what cannot be a normalized image batch (N, C, H, W); warn on floats that look like raw pixels.

    Integer and bool tensors (e.g. uint8 straight from a data set) are refused: the model would be fed
    pixel values 0..255 where it was trained on normalized ones, and Grad-CAM would explain that input.
    """
    if not isinstance(x, Tensor):
        raise ConfigError(f"{name}: got a {type(x).__name__}; expected a torch.Tensor of {NORMALIZE_HINT}.")
    if x.ndim != 4:
        raise ConfigError(
            f"{name} must be a batch of normalized images shaped (N, C, H, W); got shape {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise ConfigError(
            f"{name}: got a {x.dtype} tensor of shape {tuple(x.shape)}, i.e. raw pixel values; expected {NORMALIZE_HINT}."
        )
    if x.numel():
        lo, hi = (float(v) for v in torch.aminmax(x.detach().float()))
        if lo >= 0.0 and hi > RAW_PIXEL_MAX:
            warnings.warn(
                f"{name}: every value lies in [{lo:g}, {hi:g}] and none is negative, which looks like raw 0-255 pixel "
                f"values, not normalized images; the maps of such an input differ from those of the right one. "
                f"Give {NORMALIZE_HINT}.",
                UserWarning,
                stacklevel=stacklevel + 1,
            )
    return x


def _check_targets(targets: Tensor, n: int, num_classes: int, name: str) -> Tensor:
    targets = torch.as_tensor(targets).long().flatten().clone()  # a normal tensor even if made under inference_mode
    if targets.numel() != n:
        raise ConfigError(
            f"{name}: {targets.numel()} target classes given for a batch of {n} images; give one per image."
        )
    if n and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ConfigError(f"{name}: target classes must lie in [0, {num_classes}); got {targets.tolist()}.")
    return targets


@dataclass
class CamResult:
    """Grad-CAM maps per target set (each (N, H, W), raw non-negative values) and the batch's logits."""

    maps: dict[str, Tensor]
    logits: Tensor  # (N, num_classes) float32
    grid: tuple[int, int]  # (h, w) of the layer's output: the maps' native resolution


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
    """
    check_images(x, "x", stacklevel=2)
    return _grad_cam_targets(model, x, targets, layer=layer, upsample=upsample)


def _grad_cam_targets(
    model: nn.Module, x: Tensor, targets: Mapping[str, Tensor], *, layer: str | nn.Module | None, upsample: bool
) -> CamResult:
    if not targets:
        raise ConfigError("targets: give at least one set of target classes.")
    target_layer = resolve_layer(model, layer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    with explaining(model), capture_output(target_layer) as store:
        # A leaf input that requires grad keeps a graph to the layer even when every parameter is frozen.
        inp = x.detach().to(device, torch.float32).clone().requires_grad_(True)
        logits = model(inp).float()  # (N, num_classes)
        act = store.get("out")
        if not isinstance(act, Tensor) or act.ndim != 4:
            kind = type(act).__name__ if not isinstance(act, Tensor) else f"a {act.ndim}-d tensor"
            raise ConfigError(
                f"layer: Grad-CAM needs a layer whose output is a (N, C, h, w) feature map; {type(target_layer).__name__} returned {kind}."
            )
        names = list(targets)
        maps: dict[str, Tensor] = {}
        for i, name in enumerate(names):
            t = _check_targets(targets[name], x.shape[0], logits.shape[1], f"targets[{name!r}]").to(logits.device)
            score = logits.gather(1, t[:, None]).sum()  # images are independent in eval mode: one sum, one pass
            (grads,) = torch.autograd.grad(score, act, retain_graph=i < len(names) - 1)
            weights = grads.float().mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
            cam = F.relu((weights * act.detach().float()).sum(dim=1))  # (N, h, w)
            if upsample:
                cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[
                    :, 0
                ]  # (N, H, W)
            maps[name] = cam.detach()
    return CamResult(maps=maps, logits=logits.detach(), grid=(int(act.shape[2]), int(act.shape[3])))


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
    return _grad_cam_targets(model, x, {"target": target}, layer=layer, upsample=upsample).maps["target"]


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
