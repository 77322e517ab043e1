"""Pixel-level maps where the CAM layer is coarse: SmoothGrad over guided Grad-CAM, and relevance from signed maps.

A 32x32 image seen by a ResNet18's last stage gives a 4x4 CAM: sixteen cells stretched over the image. Guided
Grad-CAM multiplies the CAM by guided backprop, whose input gradients are pixel-sharp but noisy; SmoothGrad
(Smilkov et al. 2017) averages those maps over copies of the image with Gaussian noise added, which removes
most of the speckle. captum's NoiseTunnel does exactly that around captum's GuidedGradCam, so both are used
as they are rather than re-written.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ._gradcam import _check_targets, _num_classes, check_images, explaining, resolve_layer

SMOOTH_SAMPLES = 16  # noisy copies per image; the SmoothGrad paper sees little change beyond 50, most of it by 10-20
# Noise standard deviation as a share of the batch's value range: the paper's useful range is 10-20%.
SMOOTH_NOISE = 0.15
SMOOTH_BATCH = 256  # noisy images per forward/backward pass: the memory bound


def pixel_relevance(attributions: Tensor) -> Tensor:
    """(N, H, W) relevance of signed per-channel attributions (N, C, H, W): the absolute value summed over channels.

    Guided backprop's sign says whether brightening a pixel raises the class score, not whether the pixel matters,
    so the magnitude is what ranks pixels for the deletion, insertion and ROAD curves.
    """
    if attributions.ndim != 4:
        raise ConfigError(f"attributions: expected (N, C, H, W); got shape {tuple(attributions.shape)}.")
    return attributions.detach().float().abs().sum(dim=1)


def smooth_guided_grad_cam(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    layer: str | nn.Module | None = None,
    samples: int = SMOOTH_SAMPLES,
    noise: float = SMOOTH_NOISE,
    batch: int = SMOOTH_BATCH,
    seed: int = 0,
) -> Tensor:
    """SmoothGrad of guided Grad-CAM, (N, C, H, W): the mean of captum's GuidedGradCam over `samples` noisy copies.

    The noise is Gaussian with standard deviation `noise` x (max - min of `x`), drawn from `seed` (the global RNG
    is restored afterwards). At most `batch` noisy images go through the model at once. The model's train/eval
    flags are restored; parameters and their gradients are not touched.
    """
    check_images(x, "x", stacklevel=2)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"samples = {samples!r}: give a whole number of noisy copies >= 1.")
    if not isinstance(noise, (int, float)) or not 0.0 < float(noise) < 1.0:
        raise ConfigError(f"noise = {noise!r}: give the noise as a share of the value range, strictly between 0 and 1.")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch = {batch!r}: give a whole number of images per pass >= 1.")
    from captum.attr import GuidedGradCam, NoiseTunnel

    target_layer = resolve_layer(model, layer)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    t = _check_targets(target, x.shape[0], _num_classes(model, x, device), "target").to(device)
    inp = x.detach().to(device, torch.float32)
    std = float(noise) * float(inp.max() - inp.min()) if inp.numel() else 0.0
    per_pass = max(1, batch // max(1, samples))  # NoiseTunnel batches by noisy copies of the whole input
    out = []
    # torch.manual_seed below reseeds every GPU, so every GPU's state is saved and restored, not only this one's.
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with explaining(model), warnings.catch_warnings(), torch.random.fork_rng(devices=devices):
        warnings.simplefilter("ignore", UserWarning)  # captum announces its ReLU hooks on every call
        torch.manual_seed(seed)
        tunnel = NoiseTunnel(GuidedGradCam(model, target_layer))
        for i in range(0, inp.shape[0], per_pass):
            chunk = inp[i : i + per_pass].clone().requires_grad_(True)
            attr = tunnel.attribute(
                chunk,
                nt_type="smoothgrad",
                nt_samples=samples,
                nt_samples_batch_size=min(samples, batch),
                stdevs=std,
                target=t[i : i + per_pass],
            )
            out.append(attr.detach())
    return torch.cat(out) if out else inp.new_zeros(inp.shape)
