"""TrivialAugment (wide) over whole image batches on the batch's device: one random op and strength per image.

Müller & Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art Data Augmentation" (ICCV 2021): each
image gets one operation drawn uniformly from TRIVIAL_OPS and one strength drawn uniformly from that
operation's range, the "wide" ranges as torchvision's TrivialAugmentWide lists them (31 strength bins,
signed operations negated with probability 1/2), except that translation scales with the image (up to
32 px at 32x32, the whole side in general). Each operation is defined as the paper's reference code
computes it with PIL (ImageOps / ImageEnhance, NEAREST resampling, black fill), which the tests compare
against; torchvision's tensor ops differ from PIL by a pixel unit here and there (its grayscale truncates).

Batched: the images are grouped by operation (one host sync per batch, to read the group sizes); the
five geometric operations share one grid_sample with a matrix per image, the colour operations blend
each image with its own degenerate image by its own factor, equalize builds every channel's histogram
at once. uint8 in, uint8 out; float input is taken as pixel units 0..255 and rounded first (posterize,
solarize and equalize are defined on whole pixel values), and keeps its dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError

TRIVIAL_OPS = (
    "identity",
    "shear_x",  # x_in = x + m * y (y from the top edge); m in [-0.99, 0.99]
    "shear_y",  # y_in = y + m * x (x from the left edge)
    "translate_x",  # content moves m whole pixels right (left if negative); |m| <= W
    "translate_y",  # ... down; |m| <= H
    "rotate",  # m degrees counter-clockwise about the centre; |m| <= 135
    "brightness",  # blend with black by factor 1 + m, m in [-0.99, 0.99]
    "color",  # blend with the image's grayscale (saturation)
    "contrast",  # blend with the image's mean gray
    "sharpness",  # blend with the image smoothed by PIL's SMOOTH kernel (borders kept)
    "posterize",  # keep the m high bits, m in 2..8
    "solarize",  # invert values >= m, m in [0, 255]
    "autocontrast",  # stretch each channel to 0..255
    "equalize",  # equalize each channel's histogram (PIL's)
)
NUM_BINS = 31  # strengths per op: torchvision's num_magnitude_bins
SIGNED = (False, True, True, True, True, True, True, True, True, True, False, False, False, False)
_OP = {name: i for i, name in enumerate(TRIVIAL_OPS)}
_AFFINE_FIRST, _AFFINE_LAST = _OP["shear_x"], _OP["rotate"]  # consecutive: one slice of the sorted batch

# PIL's RGB -> L: (R * 19595 + G * 38470 + B * 7471 + 0x8000) >> 16, ITU-R 601-2 luma in 16-bit fixed point.
_LUMA = (19595, 38470, 7471)
# PIL's ImageFilter.SMOOTH, ((1, 1, 1), (1, 5, 1), (1, 1, 1)) / 13: the degenerate image of ImageEnhance.Sharpness.
_SMOOTH_SCALE = 13.0


def _check_batch(x: Tensor) -> tuple[int, int, int, int]:
    if x.ndim != 4:
        raise DataError(f"x must be a batch of images shaped (N, C, H, W); got shape {tuple(x.shape)}.")
    n, c, h, w = x.shape
    return n, c, h, w


def _draw_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    # As the tensor backend draws (it imports this module, so it cannot share its helpers): on the
    # generator's device, then moved to the batch, so a CPU generator also serves CUDA batches.
    return generator.device if generator is not None else x.device


def magnitude_table(h: int, w: int) -> Tensor:
    """(len(TRIVIAL_OPS), NUM_BINS) float64 strengths per op and bin, before the sign; 0 for strength-less ops."""
    k = torch.arange(NUM_BINS, dtype=torch.float64)
    last = NUM_BINS - 1
    table = torch.zeros(len(TRIVIAL_OPS), NUM_BINS, dtype=torch.float64)
    table[_OP["shear_x"]] = table[_OP["shear_y"]] = 0.99 * k / last
    # Whole pixels (torchvision truncates with int()); exact integer arithmetic: 32 * 15 / 30 is 16, not 15.99.
    table[_OP["translate_x"]] = torch.div(w * k, last, rounding_mode="floor")
    table[_OP["translate_y"]] = torch.div(h * k, last, rounding_mode="floor")
    table[_OP["rotate"]] = 135.0 * k / last
    for name in ("brightness", "color", "contrast", "sharpness"):
        table[_OP[name]] = 0.99 * k / last
    table[_OP["posterize"]] = 8 - (k / (last / 6)).round()  # 8 bits down to 2
    table[_OP["solarize"]] = 255.0 * (last - k) / last  # threshold 255 down to 0
    return table


def draw_trivial(n: int, h: int, w: int, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(N,) op indices into TRIVIAL_OPS and (N,) float32 signed strengths, on x's device.

    Three draws per image, always in this order: op, strength bin, sign.
    """
    device = _draw_device(x, generator)
    ops = torch.randint(0, len(TRIVIAL_OPS), (n,), generator=generator, device=device).to(x.device)
    bins = torch.randint(0, NUM_BINS, (n,), generator=generator, device=device).to(x.device)
    negative = torch.rand(n, generator=generator, device=device).to(x.device) < 0.5
    table = magnitude_table(h, w).to(torch.float32).to(x.device)  # cast first: MPS has no float64
    signed = torch.tensor(SIGNED, device=x.device)[ops]
    magnitude = table[ops, bins]
    return ops, torch.where(signed & negative, -magnitude, magnitude)


def trivial_augment(
    x: Tensor, generator: torch.Generator | None, *, return_params: bool = False
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """One TrivialAugment op per image of (N, C, H, W) pixel values; C is 3 (RGB) or 1 (gray).

    With return_params, also the (N,) op indices into TRIVIAL_OPS and the (N,) signed strengths applied.
    """
    n, _, h, w = _check_batch(x)
    ops, magnitudes = draw_trivial(n, h, w, x, generator)
    out = apply_trivial(x, ops, magnitudes)
    return (out, ops, magnitudes) if return_params else out


def apply_trivial(x: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
    """Image i gets op TRIVIAL_OPS[ops[i]] at strength magnitudes[i]; same shape, dtype and device as x."""
    n, c, h, w = _check_batch(x)
    if c not in (1, 3):
        raise DataError(f"TrivialAugment works on RGB or gray images (1 or 3 channels); got {c} channels.")
    if ops.shape != (n,) or magnitudes.shape != (n,):
        raise ValueError(f"ops and magnitudes must be shaped ({n},); got {tuple(ops.shape)}, {tuple(magnitudes.shape)}")
    ops = ops.to(x.device)
    magnitudes = magnitudes.to(x.device, torch.float32)
    src = x if x.dtype == torch.uint8 else x.round().clamp(0.0, 255.0)
    # Identity images are copied as they are; each group goes to float32 and back on its own (every op yields
    # whole values in 0..255, exact in any dtype that holds the input): 6 ms less per 512 32x32 images than
    # converting the whole batch both ways.
    out = src.clone()
    # One host sync per batch: the group sizes decide the slices of the op-sorted order below.
    counts = torch.bincount(ops, minlength=len(TRIVIAL_OPS)).tolist()
    order = torch.argsort(ops, stable=True)  # (N,) image positions grouped by op
    groups = dict(zip(TRIVIAL_OPS, order.split(counts)))
    affine = order[sum(counts[:_AFFINE_FIRST]) : sum(counts[: _AFFINE_LAST + 1])]
    if len(affine):
        result = _affine(src[affine].to(torch.float32), ops[affine], magnitudes[affine])
        out.index_copy_(0, affine, result.to(out.dtype))
    for name, op in _PIXEL_OPS.items():
        idx = groups[name]
        if len(idx):
            out.index_copy_(0, idx, op(src[idx].to(torch.float32), magnitudes[idx]).to(out.dtype))
    return out


# --- geometric ops: one grid_sample ---------------------------------------------------------------------


def _affine(f: Tensor, ops: Tensor, m: Tensor) -> Tensor:
    """Shears, translations and rotations of float (M, C, H, W): nearest neighbour, zero fill."""
    _, _, h, w = f.shape
    # Output pixel -> input pixel as x_in = a x + b y + tx, y_in = c x + d y + ty, in pixel units about the image
    # centre (pixel j's centre at j + 0.5 - W / 2), one row per image: (M,) each.
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    rad = m * (math.pi / 180.0)
    cos, sin = rad.cos(), rad.sin()
    is_op = {name: ops == _OP[name] for name in TRIVIAL_OPS[_AFFINE_FIRST : _AFFINE_LAST + 1]}
    rot, sx, sy = is_op["rotate"], is_op["shear_x"], is_op["shear_y"]
    a = torch.where(rot, cos, one)
    b = torch.where(rot, -sin, torch.where(sx, m, zero))
    c = torch.where(rot, sin, torch.where(sy, m, zero))
    d = torch.where(rot, cos, one)
    # Shears pivot on the top / left edge (PIL's (1, m, 0, 0, 1, 0)), -H / 2 and -W / 2 about the centre.
    tx = torch.where(sx, m * (h / 2), torch.where(is_op["translate_x"], -m, zero))
    ty = torch.where(sy, m * (w / 2), torch.where(is_op["translate_y"], -m, zero))
    xs = torch.arange(w, device=f.device, dtype=torch.float32) + (0.5 - w / 2)  # (W,)
    ys = (torch.arange(h, device=f.device, dtype=torch.float32) + (0.5 - h / 2))[:, None]  # (H, 1)
    col = lambda t: t[:, None, None]  # noqa: E731  (M,) -> (M, 1, 1)
    # grid_sample (align_corners=False) reads x / (W / 2) as the input position; planes written into one
    # (M, 2, H, W) buffer and handed over permuted, as _rotation_grid does.
    grid = torch.empty(f.shape[0], 2, h, w, device=f.device)
    grid[:, 0] = (col(a) * xs + col(b) * ys + col(tx)) * (2.0 / w)
    grid[:, 1] = (col(c) * xs + col(d) * ys + col(ty)) * (2.0 / h)
    return F.grid_sample(f, grid.permute(0, 2, 3, 1), mode="nearest", padding_mode="zeros", align_corners=False)


# --- colour ops: each image blended with its own degenerate image -----------------------------------------


def _blend(f: Tensor, degenerate: Tensor, m: Tensor) -> Tensor:
    # PIL's Image.blend(degenerate, image, 1 + m): degenerate + factor * (image - degenerate), clipped and
    # truncated to uint8, in float32 as PIL computes it.
    factor = (1.0 + m).view(-1, 1, 1, 1)
    return (degenerate + factor * (f - degenerate)).clamp_(0.0, 255.0).floor_()


def _luma(f: Tensor) -> Tensor:
    """(M, 1, H, W) PIL grayscale of whole-valued (M, C, H, W); exact in float32 (every term < 2**24)."""
    if f.shape[1] == 1:
        return f
    r, g, b = f.unbind(1)
    weighted = r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2] + 32768.0
    return (weighted / 65536.0).floor_()[:, None]


def _brightness(f: Tensor, m: Tensor) -> Tensor:
    return _blend(f, torch.zeros_like(f), m)


def _color(f: Tensor, m: Tensor) -> Tensor:
    return _blend(f, _luma(f).expand_as(f), m)


def _contrast(f: Tensor, m: Tensor) -> Tensor:
    # PIL: int(mean of the grayscale + 0.5), from an exact integer sum.
    gray_sum = _luma(f).to(torch.int64).sum(dim=(1, 2, 3))  # (M,)
    count = f.shape[2] * f.shape[3]
    mean = torch.div(2 * gray_sum + count, 2 * count, rounding_mode="floor").to(torch.float32)
    return _blend(f, mean.view(-1, 1, 1, 1).expand_as(f), m)


def _sharpness(f: Tensor, m: Tensor) -> Tensor:
    degenerate = f.clone()
    if f.shape[2] >= 3 and f.shape[3] >= 3:
        # PIL's SMOOTH kernel is the 3x3 box plus 4 x the centre, over 13: two shifted sums instead of a
        # one-channel conv2d (130 ms -> 25 ms for 512 32x32 images on one CPU thread), and exact (whole sums).
        rows = f[..., :, :-2] + f[..., :, 1:-1] + f[..., :, 2:]  # (M, C, H, W - 2)
        box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]  # (M, C, H - 2, W - 2)
        smooth = (box + 4.0 * f[..., 1:-1, 1:-1]) / _SMOOTH_SCALE
        # PIL rounds the filtered value (+ 0.5, truncate) and copies the one-pixel border unfiltered.
        degenerate[..., 1:-1, 1:-1] = (smooth + 0.5).floor_().clamp_(0.0, 255.0)
    return _blend(f, degenerate, m)


# --- value maps ----------------------------------------------------------------------------------------------


def _posterize(f: Tensor, m: Tensor) -> Tensor:
    step = torch.exp2(8.0 - m).view(-1, 1, 1, 1)  # 2 ** (8 - bits): clears the low bits
    return torch.div(f, step, rounding_mode="floor") * step


def _solarize(f: Tensor, m: Tensor) -> Tensor:
    return torch.where(f >= m.view(-1, 1, 1, 1), 255.0 - f, f)


def _autocontrast(f: Tensor, m: Tensor) -> Tensor:
    flat = f.flatten(2)  # (M, C, H * W)
    lo = flat.amin(dim=2)[:, :, None, None]
    hi = flat.amax(dim=2)[:, :, None, None]
    span = hi - lo
    # floor((v - lo) * 255 / span) of whole numbers is exact in float32: a quotient that is not whole lies at
    # least 1/255 from the next whole number. A flat channel stays as it is (PIL's identity table).
    stretched = ((f - lo) * 255.0 / span.clamp(min=1.0)).floor_()
    return torch.where(span > 0, stretched, f)


def _equalize(f: Tensor, m: Tensor) -> Tensor:
    mm, c, h, w = f.shape
    v = f.to(torch.int64).view(mm * c, h * w)  # (M * C, H * W) values 0..255
    hist = torch.zeros(mm * c, 256, dtype=torch.int64, device=f.device).scatter_add_(1, v, torch.ones_like(v))
    # PIL's ImageOps.equalize, per channel: step = (pixels - count of the highest value present) // 255;
    # lut[i] = (step // 2 + pixels below i) // step; a channel with step 0 (one or nearly one value) is kept.
    top = hist.gather(1, v.amax(dim=1, keepdim=True))  # (M * C, 1)
    step = torch.div(h * w - top, 255, rounding_mode="floor")
    below = hist.cumsum(1) - hist  # (M * C, 256)
    lut = torch.div(torch.div(step, 2, rounding_mode="floor") + below, step.clamp(min=1), rounding_mode="floor")
    identity = torch.arange(256, device=f.device).expand_as(lut)
    lut = torch.where(step > 0, lut, identity).clamp_(0, 255)
    return lut.gather(1, v).view(mm, c, h, w).to(torch.float32)


_PIXEL_OPS = {
    "brightness": _brightness,
    "color": _color,
    "contrast": _contrast,
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
}
