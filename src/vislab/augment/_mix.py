"""MixUp and CutMix as pure functions of a whole normalized batch, on the batch's device.

MixUp (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018) and CutMix (Yun et al.,
"CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features", ICCV 2019), with
one lam per batch drawn from Beta(alpha, alpha) and the box of CutMix placed and clipped as timm's `Mixup`
does. Image i is paired with image N - 1 - i: the batch reversed, as timm pairs them (the loader has already
shuffled the batch, so this is a random pairing without a second permutation). Both return
(x_mixed, y_a, y_b, lam) with lam a 0-dim float32 tensor on x's device, read back by nobody on the way:
the loss is lam * CE(out, y_a) + (1 - lam) * CE(out, y_b).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError, DataError

# Marsaglia-Tsang gamma candidates per draw: each is accepted with probability > 0.95 for any alpha, so the
# chance that all are rejected (the last one is then kept, slightly off the distribution) is below 1e-40.
_GAMMA_TRIES = 32


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"alpha = {alpha!r} is not a Beta(alpha, alpha) parameter; use a finite number > 0.")
    return float(alpha)


def _log_uniform(shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    # log of a uniform on (0, 1]: torch.rand is on [0, 1), and log(0) would turn lam into 0 / 0.
    return torch.log1p(-torch.rand(shape, generator=generator, device=device))


def _log_gamma_sample(alpha: float, shape: tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    """log of Gamma(alpha, 1) samples of `shape` (float32), drawn with `generator` only: no host sync."""
    # torch's own samplers (torch.distributions.Beta, torch._standard_gamma) take no generator. Marsaglia &
    # Tsang (2000) for alpha >= 1; below 1, Gamma(alpha) = Gamma(alpha + 1) * U ** (1 / alpha), kept in logs
    # so that small alphas (samples far below float32's smallest number) do not underflow to 0 / 0.
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    z = torch.randn((*shape, _GAMMA_TRIES), generator=generator, device=device)
    log_u = _log_uniform((*shape, _GAMMA_TRIES), generator, device)
    v = (1.0 + c * z) ** 3
    log_v = v.clamp(min=1e-30).log()
    ok = (v > 0) & (log_u < 0.5 * z * z + d - d * v + d * log_v)
    ok[..., -1] = True
    first = ok.to(torch.int8).argmax(dim=-1, keepdim=True)  # the first accepted candidate
    log_g = (math.log(d) + log_v).gather(-1, first).squeeze(-1)
    if boost:
        log_g = log_g + _log_uniform(shape, generator, device) / alpha
    return log_g


def sample_beta(alpha: float, shape: tuple[int, ...], generator: torch.Generator | None, device=None) -> Tensor:
    """Beta(alpha, alpha) samples of `shape` (float32) from `generator`, on its device (or `device`)."""
    alpha = _check_alpha(alpha)
    device = generator.device if generator is not None else (device or torch.device("cpu"))
    log_x = _log_gamma_sample(alpha, shape, generator, device)
    log_y = _log_gamma_sample(alpha, shape, generator, device)
    return torch.sigmoid(log_x - log_y)  # X / (X + Y) without forming X or Y


def _check(x: Tensor, y: Tensor) -> None:
    if x.ndim != 4:
        raise DataError(f"x must be a batch of images shaped (N, C, H, W); got shape {tuple(x.shape)}.")
    if y.shape[:1] != x.shape[:1]:
        raise DataError(f"y must hold one label (row) per image, {x.shape[0]}; got shape {tuple(y.shape)}.")


def mixup(
    x: Tensor, y: Tensor, alpha: float, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """lam * x + (1 - lam) * x reversed, lam ~ Beta(alpha, alpha) once per batch: (x_mixed, y, y reversed, lam)."""
    _check(x, y)
    lam = sample_beta(alpha, (), generator, x.device).to(x.device)
    # In float32 (a no-op for float32 x): mixed in bf16, the pixels' weight would be lam rounded, not lam.
    mixed = torch.lerp(x.flip(0).to(torch.float32), x.to(torch.float32), lam)  # lam * x + (1 - lam) * x reversed
    return mixed.to(x.dtype), y, y.flip(0), lam


def cutmix_box(h: int, w: int, lam: Tensor, cy: Tensor, cx: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """timm's box for area fraction 1 - lam centred on pixel (cy, cx), clipped: (y0, y1, x0, x1), 0-dim int64."""
    ratio = (1.0 - lam).clamp(min=0.0).sqrt()
    half_h = (h * ratio).floor().to(torch.int64) // 2  # int(H * sqrt(1 - lam)) // 2 on each side of the centre
    half_w = (w * ratio).floor().to(torch.int64) // 2
    return (cy - half_h).clamp(0, h), (cy + half_h).clamp(0, h), (cx - half_w).clamp(0, w), (cx + half_w).clamp(0, w)


def cutmix(
    x: Tensor, y: Tensor, alpha: float, generator: torch.Generator | None, *, return_box: bool = False
) -> tuple[Tensor, ...]:
    """Paste one box of x reversed into every image: (x_mixed, y, y reversed, lam) [+ (y0, y1, x0, x1)].

    lam ~ Beta(alpha, alpha) sets the box's area to (1 - lam) H W; its centre is uniform over the pixels and
    the box is clipped to the image, and lam is then recomputed as 1 - (clipped area) / (H W), the share of
    each image that is still its own (timm's correct_lam).
    """
    _check(x, y)
    _, _, h, w = x.shape
    lam = sample_beta(alpha, (), generator, x.device)
    device = lam.device
    cy = torch.randint(0, h, (), generator=generator, device=device)
    cx = torch.randint(0, w, (), generator=generator, device=device)
    y0, y1, x0, x1 = (t.to(x.device) for t in cutmix_box(h, w, lam, cy, cx))
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    inside = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]  # (H, W)
    mixed = torch.where(inside, x.flip(0), x)
    lam = 1.0 - ((y1 - y0) * (x1 - x0)).to(torch.float32) / (h * w)
    out = (mixed, y, y.flip(0), lam)
    return (*out, torch.stack([y0, y1, x0, x1])) if return_box else out
