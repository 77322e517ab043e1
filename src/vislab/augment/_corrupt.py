"""CIFAR-10-C-style corruptions of whole uint8 batches, on the batch's device.

The definitions and the five severities of each follow Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations" (ICLR 2019), as their CIFAR-10-C generator
(hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py) applies them to 32x32 images: the same
parameters, clipping to [0, 1] and truncation to uint8 as `np.uint8(...)` does there. Written by hand
in batched torch because the usual package (imagecorruptions) breaks on current scikit-image and pulls
in the non-headless OpenCV, and a per-image NumPy loop would take longer than the model's forward pass.
JPEG re-compression is the exception: it goes image by image through OpenCV's libjpeg.

Random corruptions draw from a `torch.Generator` on the batch's device, so a seed gives the same
corrupted test set every time (not the published one: its NumPy draws are not reproducible here;
`vislab robust --cifar10c DIR` reads the published files instead).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)

# Parameters per severity 1..5, from make_cifar_c.py.
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)  # additive N(0, std) on [0, 1] pixels
SHOT_NOISE_PHOTONS = (500, 250, 100, 75, 50)  # Poisson(x * c) / c
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)  # fraction of values set to 0 or 1 (salt and pepper, half each)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # pixels; skimage.filters.gaussian (truncate 4, edge mode nearest)
DEFOCUS_BLUR_DISK = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # (disk radius, alias blur sigma)
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)  # (x - mean) * c + mean, per image and channel
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to V in HSV
SATURATE = ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2))  # S * a + b in HSV
JPEG_QUALITY = (80, 65, 58, 50, 40)  # libjpeg quality
PIXELATE_FACTOR = (0.95, 0.9, 0.85, 0.75, 0.65)  # box-downscale to int(size * c), box-upscale back


def _float(x: Tensor) -> Tensor:
    return x.float() / 255.0


def _uint8(x: Tensor) -> Tensor:
    # Clip, scale and truncate (not round), as np.uint8(np.clip(x, 0, 1) * 255) does in the generator.
    return (x.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    f = _float(x)
    noise = torch.randn(f.shape, generator=generator, device=f.device, dtype=f.dtype)
    return _uint8(f + noise * GAUSSIAN_NOISE_STD[severity - 1])


def shot_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    c = SHOT_NOISE_PHOTONS[severity - 1]
    return _uint8(torch.poisson(_float(x) * c, generator=generator) / c)


def impulse_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    # skimage's random_noise(mode="s&p"): each value independently flipped with probability `amount`,
    # to 1 or to 0 with equal odds.
    amount = IMPULSE_NOISE_AMOUNT[severity - 1]
    f = _float(x)
    u = torch.rand(f.shape, generator=generator, device=f.device)
    f = torch.where(u < amount / 2, torch.ones_like(f), f)
    f = torch.where((u >= amount / 2) & (u < amount), torch.zeros_like(f), f)
    return _uint8(f)


def _conv(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Every channel of (N, C, H, W) filtered by the same 2-D kernel (odd sides), same size out."""
    kh, kw = kernel.shape
    c = x.shape[1]
    weight = kernel.to(x.device, x.dtype).expand(c, 1, kh, kw)
    rh, rw = kh // 2, kw // 2
    if mode == "reflect" and max(rh, rw) >= min(x.shape[-2:]):
        mode = "replicate"  # reflection needs a pad smaller than the image; tiny images fall back to the edge
    return F.conv2d(F.pad(x, (rw, rw, rh, rh), mode=mode), weight, groups=c)


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage's 1-D Gaussian (what skimage.filters.gaussian uses): radius int(truncate * sigma + 0.5)."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    k = gaussian_kernel(GAUSSIAN_BLUR_SIGMA[severity - 1])
    # Separable: rows then columns (skimage's default edge mode is "nearest", torch's "replicate").
    return _uint8(_conv(_conv(_float(x), k[None, :], "replicate"), k[:, None], "replicate"))


@cache
def defocus_kernel(radius: float, alias_blur: float) -> Tensor:
    """The generator's `disk`: a 17x17 aliased disk, normalised, anti-aliased by a 3x3 Gaussian (OpenCV)."""
    import cv2

    t = np.arange(-8, 9)
    xx, yy = np.meshgrid(t, t)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    k = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias_blur)
    # Crop the all-zero border (the disk is at most 2 pixels in radius): the same filter, cheaper, and
    # usable on images smaller than 17 pixels.
    rows, cols = np.nonzero(k)
    r = int(max(abs(rows - 8).max(), abs(cols - 8).max()))
    return torch.from_numpy(np.ascontiguousarray(k[8 - r : 9 + r, 8 - r : 9 + r]))


def defocus_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    # cv2.filter2D's default border is BORDER_REFLECT_101, torch's "reflect".
    return _uint8(_conv(_float(x), defocus_kernel(*DEFOCUS_BLUR_DISK[severity - 1]), "reflect"))


def contrast(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    f = _float(x)
    mean = f.mean(dim=(2, 3), keepdim=True)
    return _uint8((f - mean) * CONTRAST_FACTOR[severity - 1] + mean)


# Brightness and saturation change one HSV coordinate. In HSV every channel is v * (1 - s * g(h)) with
# g(h) in [0, 1] (0 for the largest channel), so the round trip through HSV reduces to closed forms:
# a new V scales all three channels by v'/v, and a new S moves each channel's distance below the
# largest by s'/s. Same result as converting (within float rounding), about ten times faster.


def brightness(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    f = _float(x)
    v = f.amax(1, keepdim=True)
    v_new = (v + BRIGHTNESS_SHIFT[severity - 1]).clamp(0, 1)
    # A black pixel (v = 0) has no hue or saturation: it becomes grey at the new value.
    return _uint8(torch.where(v > 0, f * (v_new / v.clamp_min(1e-12)), v_new.expand_as(f)))


def saturate(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    a, b = SATURATE[severity - 1]
    f = _float(x)
    v, low = f.amax(1, keepdim=True), f.amin(1, keepdim=True)
    s = torch.where(v > 0, (v - low) / v.clamp_min(1e-12), torch.zeros_like(v))
    s_new = (s * a + b).clamp(0, 1)
    scaled = v - (s_new / s.clamp_min(1e-12)) * (v - f)
    # A grey pixel has hue 0 (red) by the HSV convention, so a saturation added to it tints it red, as in the generator.
    grey = torch.cat([v, v * (1 - s_new), v * (1 - s_new)], 1)
    return _uint8(torch.where(s > 0, scaled, grey))


def jpeg_encode(image_hwc: np.ndarray, quality: int) -> bytes:
    """One RGB uint8 (H, W, 3) image as JPEG bytes at libjpeg `quality` (OpenCV, 4:2:0 like PIL's default)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", image_hwc[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def jpeg_compression(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    import cv2

    quality = JPEG_QUALITY[severity - 1]
    imgs = x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    out = np.empty_like(imgs)
    for i, img in enumerate(imgs):
        data = np.frombuffer(jpeg_encode(img, quality), np.uint8)
        out[i] = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(x.device)


@cache
def box_resample_matrix(src: int, dst: int) -> Tensor:
    """(dst, src) weights of PIL's BOX resampling along one axis (Image.resize(..., Image.BOX)).

    PIL samples its filter at the source pixel centres within the support around each output centre:
    the box's support is half the scale (at least half a pixel), and the weights are normalised.
    """
    scale = src / dst
    support = 0.5 * max(scale, 1.0)
    w = torch.zeros(dst, src, dtype=torch.float64)
    for i in range(dst):
        center = (i + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), src)
        for j in range(lo, hi):
            u = (j - center + 0.5) / max(scale, 1.0)
            w[i, j] = 1.0 if -0.5 < u <= 0.5 else 0.0
        w[i] /= w[i].sum()
    return w.float()


def pixelate(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    c = PIXELATE_FACTOR[severity - 1]
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    dh, dw = box_resample_matrix(h, sh).to(x.device), box_resample_matrix(w, sw).to(x.device)
    uh, uw = box_resample_matrix(sh, h).to(x.device), box_resample_matrix(sw, w).to(x.device)
    f = x.float()
    small = dh @ f @ dw.T  # (N, C, sh, sw)
    # PIL rounds to uint8 after each resize.
    small = small.round().clamp(0, 255)
    return (uh @ small @ uw.T).round().clamp(0, 255).to(torch.uint8)


Corruption = Callable[[Tensor, int, "torch.Generator | None"], Tensor]

# The CIFAR-10-C file names (<name>.npy), in the paper's grouping: noise, blur, digital.
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
}


def check_corruptions(names: list[str] | tuple[str, ...]) -> list[str]:
    bad = [n for n in names if n not in CORRUPTIONS]
    if bad or not names:
        raise ConfigError(
            f"corruptions = {', '.join(bad) or '(none)'}: not a corruption vislab computes; choose from "
            f"{', '.join(CORRUPTIONS)}."
        )
    return list(names)


def check_severities(severities: list[int] | tuple[int, ...]) -> list[int]:
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ConfigError(
            f"severities = {', '.join(map(str, bad)) or '(none)'}: severities are whole numbers 1 to 5 (CIFAR-10-C's)."
        )
    return sorted(set(severities))


def corrupt(x: Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """uint8 (N, C, H, W) -> the same images with corruption `name` at `severity` (1..5), uint8, same device."""
    check_corruptions([name])
    check_severities([severity])
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"uint8 RGB images (N, 3, H, W) expected, got {x.dtype} {tuple(x.shape)}")
    return CORRUPTIONS[name](x, severity, generator)


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """A fixed seed per (corruption, severity): the draws do not depend on which others were computed."""
    return (seed * 1_000_003 + sum(ord(c) * 31**i for i, c in enumerate(name)) * 7 + severity) % (2**63 - 1)


__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "box_resample_matrix",
    "check_corruptions",
    "check_severities",
    "corrupt",
    "corruption_seed",
    "defocus_kernel",
    "gaussian_kernel",
    "jpeg_encode",
]
