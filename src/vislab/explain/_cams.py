"""Class activation maps, Grad-CAM and six relatives, for several target sets and layers from one forward pass.

Every method weighs the channels of a layer's output A (N, K, h, w) and sums them into one map per image at the
layer's grid (h, w): the gradient methods from g = d logit_target / d A (the class score before the softmax),
Score-CAM from the model's confidence in the image masked by each channel, EigenCAM from the activations alone.
Maps are non-negative and not normalized, so their scale can be compared across images, as Grad-CAM's.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models import get_target_layer

CAM_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam")
GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")  # need d logit / d A
# Masked images per forward pass of Score-CAM: the memory bound. A pass holds score_batch masked copies of the
# input (score_batch x C x H x W floats) and the model's activations for them, whatever the batch size and the
# layer's channel count; a batch of N images at a layer of K channels takes ceil(N * K / score_batch) passes.
SCORECAM_BATCH = 256
XGRADCAM_EPS = 1e-8  # keeps XGrad-CAM's division by a channel's activation sum finite; torchcam's value

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


def check_method(method: str) -> str:
    if not isinstance(method, str) or method not in CAM_METHODS:
        raise ConfigError(f"method = {method!r} is not a CAM method; choose one of {', '.join(CAM_METHODS)}.")
    return method


def resolve_layer(model: nn.Module, layer: str | nn.Module | None = None) -> nn.Module:
    """The module whose output a CAM explains: `layer` by dotted name or module, else the model's default."""
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
def capture_outputs(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Record each module's forward output under its key; every forward hook is removed even on error."""
    store: dict[str, Tensor] = {}
    handles = []
    try:
        for key, module in modules.items():

            def hook(_mod: nn.Module, _inp: tuple, out: Tensor, key: str = key) -> None:
                store[key] = out

            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_output(module: nn.Module) -> Iterator[dict[str, Tensor]]:
    """Record `module`'s forward output under key "out"; the forward hook is removed even on error."""
    with capture_outputs({"out": module}) as store:
        yield store


def check_images(x: Tensor, name: str = "x", *, stacklevel: int = 2) -> Tensor:
    """Refuse what cannot be a normalized image batch (N, C, H, W); warn on floats that look like raw pixels.

    Integer and bool tensors (e.g. uint8 straight from a data set) are refused: the model would be fed
    pixel values 0..255 where it was trained on normalized ones, and the CAM would explain that input.
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


def _check_score_batch(score_batch: int) -> int:
    if isinstance(score_batch, bool) or not isinstance(score_batch, int) or score_batch < 1:
        raise ConfigError(f"score_batch = {score_batch!r}: give a whole number of masked images per pass >= 1.")
    return score_batch


def _check_names(values: Sequence[str], field: str, example: str) -> list[str]:
    # A bare string is a sequence of characters: refuse it rather than sweep over "l", "a", "y", ...
    if (
        isinstance(values, str)
        or not isinstance(values, Sequence)
        or not values
        or not all(isinstance(v, str) for v in values)
    ):
        raise ConfigError(f"{field} = {values!r}: give a non-empty list of names, e.g. {example}.")
    return list(dict.fromkeys(values))  # duplicates dropped, order kept


@dataclass
class CamResult:
    """CAM maps per target set (each (N, H, W), raw non-negative values) and the batch's logits."""

    maps: dict[str, Tensor]
    logits: Tensor  # (N, num_classes) float32
    grid: tuple[int, int]  # (h, w) of the layer's output: the maps' native resolution


def _gradient_map(method: str, act: Tensor, grad: Tensor) -> Tensor:
    """The map (N, h, w) of a gradient method from a layer's output `act` and d logit / d act, both (N, K, h, w).

    Not yet clipped at zero: the caller applies the ReLU. Pure function of its inputs, in fp32.
    """
    act, grad = act.detach().float(), grad.detach().float()
    if method == "gradcam":  # Selvaraju et al. 2017: channel weight = spatial mean of the gradient
        weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    elif method == "gradcam++":
        # Chattopadhay et al. 2018, eq. 19: the closed form for an exponential class score, where the second and
        # third derivatives are powers of the first. alpha = g^2 / (2 g^2 + sum_ab A_ab * g^3), 0 where the
        # denominator is 0 (g = 0 there, so the pixel adds nothing either way).
        g2 = grad.pow(2)
        denom = 2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g2 * grad
        alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), 0.0)
        weights = (alpha * F.relu(grad)).sum(dim=(2, 3), keepdim=True)  # (N, K, 1, 1)
    elif method == "xgradcam":  # Fu et al. 2020: the gradient averaged with the activation as weight
        weights = (grad * act).sum(dim=(2, 3), keepdim=True) / (act.sum(dim=(2, 3), keepdim=True) + XGRADCAM_EPS)
    elif method == "layercam":  # Jiang et al. 2021: positive gradients weigh each location separately
        return (F.relu(grad) * act).sum(dim=1)
    elif method == "hirescam":  # Draelos & Carin 2020: the gradient times the activation, no spatial averaging
        return (grad * act).sum(dim=1)
    else:
        raise ValueError(f"{method!r} is not one of the gradient methods {GRADIENT_METHODS}")
    return (weights * act).sum(dim=1)  # (N, h, w)


def _eigen_map(act: Tensor) -> Tensor:
    """EigenCAM's map (N, h, w) of a layer output (N, K, h, w): each image's activations projected on their first
    principal component (Muhammad & Yeasin 2020), signed to correlate positively with the channel sum.

    Per image the (h * w, K) activations are centred per channel, the first right singular vector taken, and the
    centred activations projected on it. An SVD's sign is arbitrary, so the map is flipped where it anti-correlates
    with the summed activations. Not yet clipped at zero.
    """
    act = act.detach().float()
    n, _, h, w = act.shape
    flat = act.flatten(2).transpose(1, 2)  # (N, h*w, K)
    centred = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (N, min(h*w, K), K)
    proj = (centred @ vh[:, 0, :, None])[..., 0]  # (N, h*w)
    total = flat.sum(dim=2)  # (N, h*w): the channel sum
    corr = (proj * (total - total.mean(dim=1, keepdim=True))).sum(dim=1)  # proj is centred already
    sign = torch.where(corr < 0, -1.0, 1.0)
    return (proj * sign[:, None]).reshape(n, h, w)


def _score_weights(
    model: nn.Module, x: Tensor, act: Tensor, targets: Mapping[str, Tensor], score_batch: int
) -> dict[str, Tensor]:
    """Score-CAM's channel weights (N, K) per target set: p(target | x * mask_k), the softmax over classes.

    mask_k is channel k upsampled bilinearly to the input size and min-max normalized to [0, 1], per image (Wang et
    al. 2020, as the authors' code). The (image, channel) pairs go through the model at most `score_batch` at a time,
    each mask built for its chunk only; one pass serves every target set. A channel constant over the image has no
    mask (0 / 0): its weight is 0 and it costs no forward, as in the authors' code.
    """
    act = act.detach().float()
    n, k = act.shape[:2]
    weights = {name: act.new_zeros(n, k) for name in targets}
    flat = act.flatten(2)
    # Decided on the layer grid, where a constant channel is exactly constant; upsampling it can leave rounding
    # noise that the normalization would blow up to a random [0, 1] mask.
    pairs = (flat.amax(dim=2) > flat.amin(dim=2)).nonzero()  # (P, 2): image, channel
    with torch.no_grad():
        for chunk in pairs.split(score_batch):
            img, ch = chunk[:, 0], chunk[:, 1]
            up = F.interpolate(act[img, ch][:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
            lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            mask = (up - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))  # (B, 1, H, W) in [0, 1]
            probs = model(x[img] * mask).float().softmax(dim=1)  # (B, num_classes)
            for name, t in targets.items():
                weights[name][img, ch] = probs.gather(1, t[img][:, None])[:, 0]
    return weights


def _feature_map(act: object, module: nn.Module, key: str) -> Tensor:
    if not isinstance(act, Tensor) or act.ndim != 4:
        kind = type(act).__name__ if not isinstance(act, Tensor) else f"a {act.ndim}-d tensor"
        raise ConfigError(
            f"layer = {key!r}: a CAM needs a layer whose output is a (N, C, h, w) feature map; {type(module).__name__} returned {kind}."
        )
    return act


def _cams(
    model: nn.Module,
    x: Tensor,
    targets: Mapping[str, Tensor],
    methods: Sequence[str],
    layers: Mapping[str, nn.Module],
    *,
    upsample: bool,
    score_batch: int,
) -> dict[tuple[str, str], CamResult]:
    """Every method at every layer from one forward with a hook on each layer (see cam_grid)."""
    if not targets:
        raise ConfigError("targets: give at least one set of target classes.")
    score_batch = _check_score_batch(score_batch)
    methods = [check_method(m) for m in methods]
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    need_grad = any(m in GRADIENT_METHODS for m in methods)
    names = list(targets)
    with explaining(model):
        # A leaf input that requires grad keeps a graph to the layers even when every parameter is frozen.
        inp = x.detach().to(device, torch.float32).clone().requires_grad_(need_grad)
        with capture_outputs(layers) as store, torch.set_grad_enabled(need_grad):
            logits = model(inp).float()  # (N, num_classes)
        # The hooks are gone from here on: Score-CAM's masked passes below must not overwrite the activations.
        acts = {key: _feature_map(store.get(key), module, key) for key, module in layers.items()}
        t = {
            name: _check_targets(targets[name], x.shape[0], logits.shape[1], f"targets[{name!r}]").to(logits.device)
            for name in names
        }
        raw: dict[tuple[str, str], dict[str, Tensor]] = {}  # (method, layer) -> target set -> map before the ReLU
        if need_grad:
            keys = list(acts)
            for i, name in enumerate(names):
                score = logits.gather(1, t[name][:, None]).sum()  # images are independent in eval mode: one pass
                grads = torch.autograd.grad(score, [acts[k] for k in keys], retain_graph=i < len(names) - 1)
                for key, grad in zip(keys, grads):
                    for method in methods:
                        if method in GRADIENT_METHODS:
                            raw.setdefault((method, key), {})[name] = _gradient_map(method, acts[key], grad)
        for key, act in acts.items():
            if "eigencam" in methods:
                eigen = _eigen_map(act)
                raw[("eigencam", key)] = {name: eigen.clone() for name in names}  # class-agnostic: one map for all
            if "scorecam" in methods:
                weights = _score_weights(model, inp.detach(), act, t, score_batch)
                a = act.detach().float()
                raw[("scorecam", key)] = {name: (w[:, :, None, None] * a).sum(dim=1) for name, w in weights.items()}
    out: dict[tuple[str, str], CamResult] = {}
    for method in methods:
        for key, act in acts.items():
            maps = {}
            for name in names:
                heat = F.relu(raw[(method, key)][name])  # (N, h, w)
                if upsample:
                    heat = F.interpolate(heat[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
                maps[name] = heat.detach()  # (N, H, W) with upsample
            out[(method, key)] = CamResult(
                maps=maps, logits=logits.detach(), grid=(int(act.shape[2]), int(act.shape[3]))
            )
    return out


def cam_targets(
    model: nn.Module,
    x: Tensor,
    targets: Mapping[str, Tensor],
    *,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    upsample: bool = True,
    score_batch: int = SCORECAM_BATCH,
) -> CamResult:
    """CAMs of one batch of normalized float images for several target sets (e.g. predicted and actual class).

    `method` is one of CAM_METHODS; with A (N, K, h, w) the output of `layer` (default: the model's gradcam_layer)
    and g = d logit_c / d A for target class c (the score before the softmax):

    - gradcam: ReLU(sum_k mean_ij(g_k) A_k)
    - gradcam++: weights sum_ij alpha * ReLU(g), alpha = g^2 / (2 g^2 + sum_ij(A) g^3), then as gradcam
    - xgradcam: weights sum_ij A_k g_k / sum_ij A_k, then as gradcam
    - layercam: ReLU(sum_k ReLU(g_k) * A_k); hirescam: ReLU(sum_k g_k * A_k), both per location
    - scorecam: weights p(c | x * mask_k), the softmax over classes, mask_k = A_k upsampled and min-max scaled to
      [0, 1] (a channel constant over the image has no mask and weight 0); at most `score_batch` masked images go
      through the model per pass (the memory bound)
    - eigencam: the activations projected on their first principal component; class-agnostic, so every
      target set gets the same map

    The gradient methods take one forward and one gradient pass per target set; Score-CAM one forward plus
    its masked passes, shared by all target sets; EigenCAM one forward. Maps are at the layer's grid (`grid`)
    and, with `upsample`, resized bilinearly to the input's (H, W). Runs in fp32, eval mode; the model's modes,
    parameters and gradients are left as they were, and the hooks are removed even on error. uint8/integer `x`
    is refused, and float `x` that looks like raw 0-255 pixels warns (see check_images).
    """
    check_images(x, "x", stacklevel=2)
    return _cam_targets(model, x, targets, method=method, layer=layer, upsample=upsample, score_batch=score_batch)


def _cam_targets(
    model: nn.Module,
    x: Tensor,
    targets: Mapping[str, Tensor],
    *,
    method: str,
    layer: str | nn.Module | None,
    upsample: bool,
    score_batch: int = SCORECAM_BATCH,
) -> CamResult:
    method = check_method(method)
    module = resolve_layer(model, layer)
    key = next((n for n, m in _unwrap(model).named_modules() if m is module), "layer")  # names the layer in errors
    res = _cams(model, x, targets, [method], {key: module}, upsample=upsample, score_batch=score_batch)
    return res[(method, key)]


def cam(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    method: str = "gradcam",
    layer: str | nn.Module | None = None,
    upsample: bool = True,
    score_batch: int = SCORECAM_BATCH,
) -> Tensor:
    """CAM maps (N, H, W) of normalized float images `x` for one target class per image (see cam_targets)."""
    check_images(x, "x", stacklevel=2)
    res = _cam_targets(
        model, x, {"target": target}, method=method, layer=layer, upsample=upsample, score_batch=score_batch
    )
    return res.maps["target"]


def cam_grid(
    model: nn.Module,
    x: Tensor,
    targets: Mapping[str, Tensor],
    *,
    methods: Sequence[str],
    layers: Sequence[str],
    upsample: bool = True,
    score_batch: int = SCORECAM_BATCH,
) -> dict[tuple[str, str], CamResult]:
    """Every method at every layer, keyed (method, layer name): the layer-by-method sweep (see cam_targets).

    One forward with a hook on every layer gives all activations; the gradient methods share one gradient pass
    per target set w.r.t. all layers at once; EigenCAM needs no gradient; Score-CAM runs its own masked passes
    per layer. Each result equals cam_targets for that method and layer.
    """
    check_images(x, "x", stacklevel=2)
    methods = [check_method(m) for m in _check_names(methods, "methods", "vislab.explain.CAM_METHODS")]
    layers = _check_names(layers, "layers", "vislab.models.get_cam_layers(model)")
    modules = {name: resolve_layer(model, name) for name in layers}
    return _cams(model, x, targets, methods, modules, upsample=upsample, score_batch=score_batch)
