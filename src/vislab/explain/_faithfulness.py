"""Faithfulness of saliency maps as curves: deletion / insertion and ROAD's MoRF / LeRF, beside a random order.

Deletion and insertion (Petsiuk et al., "RISE", BMVC 2018): p(target) as the most relevant pixels are
replaced by a baseline canvas (deletion) or revealed on it (insertion), in equal steps of the pixel count.
ROAD (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022):
the removed pixels are filled by noisy linear imputation from their neighbours, so that the shape of the
removed set, which a model can read by itself, is not left behind; most relevant first (MoRF) should hurt
fast, least relevant first (LeRF) slowly. Every curve has a random-order twin: `faithfulness(model, x,
None, targets)`, computed once for a sweep over many maps.

Pure functions (pixel orders, the canvas, the imputation, areas under curves) beside thin runners that
only batch the forwards, as tuner/lr_finder.py does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ._deletion import DELETION_BATCH, RANDOM_REPEATS, TIE_JITTER
from ._gradcam import _check_targets, check_images, explaining

DEFAULT_STEPS = 16  # deletion / insertion points at fractions 0, 1/16, ..., 1: 17 points, 1/16 = 64 pixels at 32x32
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the removal shares of the ROAD paper's curves
# Standard deviation of the Gaussian noise on imputed pixels, in normalized units: the default of ROAD's
# reference code (tleemann/road_evaluation, road/imputations.py: NoisyLinearImputer(noise=0.01)) and of its
# port in pytorch-grad-cam (pytorch_grad_cam/metrics/road.py), which applies it to the normalized input
# tensor as here. It keeps an imputed region from being a perfectly smooth, hence recognisable, patch.
ROAD_NOISE = 0.01
# ROAD's neighbour weights: 1/6 for the four direct neighbours, 1/12 for the four diagonal ones (sum 1).
ROAD_NEIGHBOURS = (
    ((-1, 0), 1 / 6),
    ((1, 0), 1 / 6),
    ((0, -1), 1 / 6),
    ((0, 1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((1, 1), 1 / 12),
)
BASELINES = ("blur", "mean")  # what removed pixels become in deletion / what insertion reveals pixels on
DEFAULT_BASELINE = "blur"
# Blur canvas: Gaussian sigma as a share of the image's shorter side, 4 px at 32x32. RISE blurs 224-px
# ImageNet images (11x11 kernel, sigma 5), where objects span a hundred pixels or more; a CIFAR object fills
# most of the 32-px frame and its parts (an eye, a wheel, a wing) span 3-10 px. Sigma = side / 8 (FWHM about
# 9 px at 32 px) wipes out structure below a quarter of the image and keeps only the coarse colour layout:
# the canvas carries little class evidence yet stays in the images' colour range, unlike a flat grey.
# Proportional to the side, it blurs a 64-px image the same way relative to its content.
BLUR_SIGMA_FRACTION = 1 / 8
BLUR_TRUNCATE = 4.0  # kernel radius int(4 * sigma + 0.5): scipy.ndimage.gaussian_filter's default
FAITHFULNESS_BATCH = DELETION_BATCH  # images per forward pass
# Images per sparse system in the imputation: the systems of different images are independent (a block-
# diagonal matrix), so solving many at once only saves per-call overhead; the cap bounds the LU factors'
# memory (about 60k unknowns at 90% of 32x32). A constant, so results do not depend on the caller's batch.
IMPUTE_BLOCK = 64


class DeletionInsertion(NamedTuple):
    fractions: Tensor  # (S,) share of the pixels removed (deletion) or revealed (insertion), 0 to 1
    deletion: Tensor  # (N, S) p(target), the top fraction of pixels replaced by the canvas
    insertion: Tensor  # (N, S) p(target), the top fraction of pixels revealed on the canvas


class RoadCurves(NamedTuple):
    fractions: Tensor  # (F,) share of the pixels removed and imputed
    morf: Tensor  # (N, F) p(target), most relevant pixels removed first
    lerf: Tensor  # (N, F) p(target), least relevant pixels removed first


def curve_auc(fractions: Tensor, curves: Tensor) -> float:
    """Area under each curve (trapezoid over `fractions`) divided by the fractions' span, mean over images.

    Divided by the span, an area is the curve's mean height: a probability in [0, 1] whatever fractions
    were used (deletion's span is 1 anyway; ROAD's 0.1..0.9 is 0.8). nan for no images or a single point.
    """
    if curves.numel() == 0 or fractions.numel() < 2:
        return float("nan")
    fr = fractions.double()
    return float(torch.trapezoid(curves.double(), fr, dim=-1).mean() / (fr[-1] - fr[0]))


@dataclass
class FaithfulnessCurves:
    """Per-image p(target) along deletion, insertion and ROAD curves, for one set of maps or a random order.

    Areas (`curve_auc`: mean height of the curve, mean over images): deletion_auc and road_morf_auc are lower
    for more faithful maps, insertion_auc and road_lerf_auc higher. Two summaries, both higher = more
    faithful: `score = insertion_auc - deletion_auc` and `road_gap = road_lerf_auc - road_morf_auc`. Both
    change sign when a map is reversed (deleting a map's top k pixels is inserting its reverse's top H*W - k;
    MoRF of a map is LeRF of its reverse), up to tie breaking and imputation noise, so a random order scores
    about 0. Compare with the random order's (`faithfulness(model, x, None, targets)`), which estimates what a
    map carrying no information scores on these images.
    """

    fractions: Tensor  # (S,) deletion / insertion fractions, 0 to 1
    deletion: Tensor  # (N, S)
    insertion: Tensor  # (N, S)
    road_fractions: Tensor  # (F,)
    road_morf: Tensor  # (N, F)
    road_lerf: Tensor  # (N, F)
    baseline: str  # the canvas of deletion / insertion: "blur" or "mean"
    random_order: bool  # True: random pixel orders (the baseline), not a map's
    repeats: int  # random orders averaged per image (1 for maps)

    @property
    def images(self) -> int:
        return int(self.deletion.shape[0])

    @property
    def deletion_auc(self) -> float:
        return curve_auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return curve_auc(self.fractions, self.insertion)

    @property
    def road_morf_auc(self) -> float:
        return curve_auc(self.road_fractions, self.road_morf)

    @property
    def road_lerf_auc(self) -> float:
        return curve_auc(self.road_fractions, self.road_lerf)

    @property
    def score(self) -> float:
        """insertion_auc - deletion_auc: higher = more faithful."""
        return self.insertion_auc - self.deletion_auc

    @property
    def road_gap(self) -> float:
        """road_lerf_auc - road_morf_auc: higher = more faithful."""
        return self.road_lerf_auc - self.road_morf_auc

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary: fractions, mean curves over images, areas, scores."""

        def mean_curve(t: Tensor) -> list[float]:
            return [float(v) for v in t.double().mean(0)]

        return {
            "images": self.images,
            "baseline": self.baseline,
            "random_order": self.random_order,
            "repeats": self.repeats,
            "fractions": [float(f) for f in self.fractions],
            "deletion": mean_curve(self.deletion),
            "insertion": mean_curve(self.insertion),
            "road_fractions": [float(f) for f in self.road_fractions],
            "road_morf": mean_curve(self.road_morf),
            "road_lerf": mean_curve(self.road_lerf),
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "road_morf_auc": self.road_morf_auc,
            "road_lerf_auc": self.road_lerf_auc,
            "score": self.score,
            "road_gap": self.road_gap,
        }


# ---- pure functions ----------------------------------------------------------------------------------


def pixel_order(maps: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(N, H*W) long on the CPU: each map's pixels by descending relevance, ties broken at random.

    As `top_mask`, a jitter of TIE_JITTER on a scale-free key orders near-ties (flat or all-zero maps) at
    random; the key is scaled by each map's range rather than its peak, so signed maps order correctly too.
    """
    n, h, w = maps.shape
    flat = maps.detach().reshape(n, h * w).float().cpu()
    lo = flat.amin(dim=1, keepdim=True)
    span = (flat.amax(dim=1, keepdim=True) - lo).clamp_min(1e-12)
    key = (flat - lo) / span + TIE_JITTER * torch.rand(flat.shape, generator=generator)
    return key.argsort(dim=1, descending=True)


def random_order(n: int, h: int, w: int, generator: torch.Generator | None = None) -> Tensor:
    """(N, H*W) long on the CPU: a uniformly random order of each image's pixels."""
    return torch.rand(n, h * w, generator=generator).argsort(dim=1)


def _ranks(order: Tensor) -> Tensor:
    """(M, P) position of every pixel in its order: rank < k marks the first k pixels of the order."""
    m, p = order.shape
    return torch.empty_like(order).scatter_(1, order, torch.arange(p).expand(m, p))


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Every channel of (N, C, H, W) blurred by a Gaussian of `sigma` pixels; reflected edges.

    The kernel is scipy.ndimage's (radius int(4 sigma + 0.5)), cut to the image when that is smaller, and
    the edges are scipy's "mirror" mode (torch's "reflect"), so the canvas is gaussian_filter's up to rounding.
    """
    _, c, h, w = x.shape
    out = x
    for dim, size in ((3, w), (2, h)):
        r = min(int(BLUR_TRUNCATE * sigma + 0.5), size - 1)
        t = torch.arange(-r, r + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = (k / k.sum()).to(x.device, x.dtype)
        shape = (1, 1, 1, 2 * r + 1) if dim == 3 else (1, 1, 2 * r + 1, 1)
        pad = (r, r, 0, 0) if dim == 3 else (0, 0, r, r)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), k.view(shape).expand(c, -1, -1, -1), groups=c)
    return out


def baseline_canvas(x: Tensor, baseline: str = DEFAULT_BASELINE) -> Tensor:
    """What deletion puts in place of removed pixels and insertion reveals pixels on, per image.

    "mean": 0 in normalized units, i.e. the training-set mean colour (no information, as the deletion test);
    "blur": the image under a Gaussian of sigma = BLUR_SIGMA_FRACTION * its shorter side (as RISE's canvas).
    """
    _check_baseline(baseline)
    if baseline == "mean":
        return torch.zeros_like(x)
    return gaussian_blur(x, BLUR_SIGMA_FRACTION * min(x.shape[-2:]))


def _impute_block(img: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """(U, C) float64: the imputed values of the U removed pixels (`removed` (B, H, W), in C order) of
    images `img` (B, H, W, C), noise-free; every image must keep at least one pixel."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    b, h, w, c = img.shape
    unknown = removed.reshape(-1)
    idx = np.flatnonzero(unknown)  # flat (image, row, column) indices of the unknowns
    u = idx.size
    var = np.full(unknown.size, -1, dtype=np.int64)
    var[idx] = np.arange(u)
    bi, ri, ci = np.unravel_index(idx, (b, h, w))
    values = img.reshape(-1, c)
    diag = np.zeros(u)
    rhs = np.zeros((u, c))
    rows, cols, vals = [np.arange(u)], [np.arange(u)], []
    # One equation per unknown pixel i over its in-image neighbours j:  sum_j w_j x_i - sum_{j unknown} w_j x_j
    # = sum_{j known} w_j x_j, i.e. x_i is the weighted mean of its neighbours, weights renormalised at borders.
    for (dr, dc), wt in ROAD_NEIGHBOURS:
        rr, cc = ri + dr, ci + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        eq = np.flatnonzero(inside)  # each equation appears at most once per offset
        nb = ((bi * h + rr) * w + cc)[inside]
        diag[eq] += wt
        is_unknown = unknown[nb]
        rows.append(eq[is_unknown])
        cols.append(var[nb[is_unknown]])
        vals.append(np.full(int(is_unknown.sum()), -wt))
        rhs[eq[~is_unknown]] += wt * values[nb[~is_unknown]]
    a = coo_matrix((np.concatenate([diag, *vals]), (np.concatenate(rows), np.concatenate(cols))), shape=(u, u))
    # A direct sparse LU (SuperLU via spsolve), not hand-written Jacobi / Gauss-Seidel sweeps: it is exact up
    # to round-off in one call, where iterations need a stopping rule and converge slowly on large holes (the
    # error decays like (1 - 1/hole^2) per sweep); with <= H * W unknowns per image it takes milliseconds.
    return np.asarray(spsolve(a.tocsc(), rhs)).reshape(u, c)


def noisy_linear_impute(
    x: Tensor, mask: Tensor, *, noise: float = ROAD_NOISE, generator: torch.Generator | None = None
) -> Tensor:
    """ROAD's noisy linear imputation: the pixels of `x` (N, C, H, W) where `mask` (N, H, W) is True replaced
    by the weighted mean of their 8 neighbours (ROAD_NEIGHBOURS, renormalised over the neighbours inside the
    image), solved jointly over all removed pixels of an image, per channel, plus Gaussian noise of standard
    deviation `noise` on the imputed pixels. Known pixels are returned untouched.

    The system is singular only when an image's every pixel is removed (nothing to interpolate from): such
    an image becomes 0, the training mean in normalized units, plus the noise.
    """
    check_images(x, "x", stacklevel=2)
    n, _, h, w = x.shape
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n, h, w):
        got = f"a {mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise ConfigError(
            f"mask: got {got}; expected a bool tensor of shape {(n, h, w)}, True where a pixel is removed."
        )
    _check_noise(noise)
    return _impute(x, mask, noise, generator)


def _impute(x: Tensor, mask: Tensor, noise: float, generator: torch.Generator | None) -> Tensor:
    n = x.shape[0]
    img = x.detach().cpu().double().permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    m = mask.cpu().numpy()
    out = np.array(img)
    full = m.reshape(n, -1).all(axis=1)
    out[full] = 0.0
    solvable = np.flatnonzero(m.reshape(n, -1).any(axis=1) & ~full)
    for i in range(0, solvable.size, IMPUTE_BLOCK):
        sel = solvable[i : i + IMPUTE_BLOCK]
        block = out[sel]
        block[m[sel]] = _impute_block(img[sel], m[sel])
        out[sel] = block
    res = torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype)
    # Drawn for every pixel, whatever the mask, so that the stream does not depend on how many were removed.
    eps = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return torch.where(mask[:, None].to(x.device), res + noise * eps, x)


# ---- argument checks ---------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} = {value!r}: {what} must be a whole number >= {minimum}.")
    return value


def _check_baseline(baseline: Any) -> None:
    if baseline not in BASELINES:
        raise ConfigError(f"baseline = {baseline!r} is not known; choose one of {', '.join(BASELINES)}.")


def _check_noise(noise: Any) -> None:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not (math.isfinite(noise) and noise >= 0):
        raise ConfigError(
            f"noise = {noise!r}: the standard deviation of the imputation noise must be a finite number >= 0 "
            f"(ROAD's is {ROAD_NOISE})."
        )


def _check_fractions(fractions: Any, name: str) -> Tensor:
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = []
    if not values or not all(0.0 < f < 1.0 for f in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(
            f"{name} = {fractions!r}: give increasing shares of pixels to remove, each strictly between 0 "
            f"and 1 (default {ROAD_FRACTIONS})."
        )
    return torch.tensor(values, dtype=torch.float64)


def _check_inputs(x: Tensor, maps: Tensor | None, targets: Any, repeats: int, batch: int) -> Tensor:
    check_images(x, "x", stacklevel=3)
    n, _, h, w = x.shape
    if n == 0:
        raise ConfigError("x holds no images; faithfulness curves need at least one.")
    if maps is not None:
        if not isinstance(maps, Tensor) or tuple(maps.shape) != (n, h, w):
            got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ConfigError(
                f"maps: got {got}; faithfulness curves need one map per image at image size {(n, h, w)} "
                f"(use upsample=True), or None for the random-order baseline."
            )
        if not bool(torch.isfinite(maps).all()):
            raise ConfigError("maps hold NaN or infinite values; give finite relevance values.")
    _check_int("repeats", repeats, 1, "the number of random orders per image")
    _check_int("batch", batch, 1, "the number of images per forward pass")
    t = torch.as_tensor(targets)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ConfigError(f"targets: got a {t.dtype} tensor; give integer class indices, one per image.")
    t = t.long().flatten().clone()
    if t.numel() != n:
        raise ConfigError(f"targets: {t.numel()} target classes given for a batch of {n} images; give one per image.")
    return t  # their range is checked against the model's class count by `_check_classes`


# ---- runners -----------------------------------------------------------------------------------------


def _device(model: nn.Module, x: Tensor) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else x.device


def _check_classes(model: nn.Module, x: Tensor, targets: Tensor) -> None:
    """Targets within the model's classes, counted by one forward of one image."""
    with explaining(model), torch.no_grad():
        classes = model(x[:1]).shape[1]
    _check_targets(targets, targets.numel(), classes, "targets")


def _target_probs(model: nn.Module, total: int, make: Callable[[Tensor], tuple[Tensor, Tensor]], batch: int) -> Tensor:
    """(total,) p(target) on the CPU of the `total` inputs that `make(indices)` builds, `batch` per forward."""
    with explaining(model), torch.no_grad():
        return torch.cat(
            [
                model(xb).float().softmax(dim=1).gather(1, tb[:, None])[:, 0].cpu()
                for xb, tb in (make(torch.arange(i, min(i + batch, total))) for i in range(0, total, batch))
            ]
        )


def _orders(maps: Tensor | None, n: int, h: int, w: int, repeats: int, gen: torch.Generator) -> Tensor:
    """(M, H*W) pixel orders: one per map (M = N), or `repeats` random ones per image (M = repeats * N)."""
    if maps is not None:
        return pixel_order(maps, gen)
    return random_order(repeats * n, h, w, gen)  # row r * N + i: repeat r of image i


def deletion_insertion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor | None,
    targets: Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: str = DEFAULT_BASELINE,
    repeats: int = RANDOM_REPEATS,
    seed: int = 0,
    batch: int = FAITHFULNESS_BATCH,
) -> DeletionInsertion:
    """Deletion and insertion curves of normalized images `x` (N, C, H, W) for `maps` (N, H, W).

    At fraction f = s / steps (s = 0..steps) the round(f * H * W) most relevant pixels are replaced by the
    `baseline` canvas (deletion: from the intact image down to the canvas) or revealed on it (insertion:
    from the canvas up to the intact image); each point is p(target) under softmax. `maps=None` is the
    random-order baseline: `repeats` random orders per image, their curves averaged. `seed` drives the tie
    breaking and the random orders; `batch` only how many images go through one forward (eval mode, no
    gradients, on the model's device), never the result.
    """
    t = _check_inputs(x, maps, targets, repeats, batch)
    _check_int("steps", steps, 1, "the number of deletion / insertion steps")
    _check_baseline(baseline)
    n, _, h, w = x.shape
    p = h * w
    device = _device(model, x)
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().to(device, torch.float32)
    t = t.to(device)
    _check_classes(model, x, t)
    canvas = baseline_canvas(x, baseline)
    rank = _ranks(_orders(maps, n, h, w, repeats, gen)).to(device)  # (M, P)
    m = rank.shape[0]
    fractions = torch.arange(steps + 1, dtype=torch.float64) / steps
    ks = torch.tensor([round(float(f) * p) for f in fractions], device=device)  # (S,) pixels changed per step
    s_count = fractions.numel()

    def make(i: Tensor) -> tuple[Tensor, Tensor]:
        # variant i: curve i // (S M) (0 deletion, 1 insertion), step (i // M) % S, order i % M of image i % N
        i = i.to(device)
        insert, step, row = i // (s_count * m), (i // m) % s_count, i % m
        img = row % n
        top = (rank[row] < ks[step, None]).view(-1, 1, h, w)  # (B, 1, H, W) the step's most relevant pixels
        keep_image = top == insert.view(-1, 1, 1, 1).bool()  # deletion keeps the rest, insertion the top
        return torch.where(keep_image, x[img], canvas[img]), t[img]

    probs = _target_probs(model, 2 * s_count * m, make, batch).view(2, s_count, m // n, n).mean(2)  # (2, S, N)
    return DeletionInsertion(fractions, probs[0].T.contiguous(), probs[1].T.contiguous())


def road_curves(
    model: nn.Module,
    x: Tensor,
    maps: Tensor | None,
    targets: Tensor,
    *,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    repeats: int = RANDOM_REPEATS,
    seed: int = 0,
    batch: int = FAITHFULNESS_BATCH,
) -> RoadCurves:
    """ROAD curves of normalized images `x` (N, C, H, W) for `maps` (N, H, W): p(target) after the
    round(f * H * W) most relevant (MoRF) or least relevant (LeRF) pixels are removed and filled by
    `noisy_linear_impute`, at each of `fractions`.

    `maps=None` is the random-order baseline (`repeats` random orders per image, averaged): for a random
    order MoRF and LeRF are the same in distribution, and the gap between them estimates the noise floor of
    `road_gap`. The imputation runs on the CPU (scipy); the forwards as in `deletion_insertion`.
    """
    t = _check_inputs(x, maps, targets, repeats, batch)
    fr = _check_fractions(fractions, "fractions")
    _check_noise(noise)
    n, _, h, w = x.shape
    p = h * w
    device = _device(model, x)
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().to(device, torch.float32)
    t = t.to(device)
    _check_classes(model, x, t)
    rank = _ranks(_orders(maps, n, h, w, repeats, gen))  # (M, P)
    m = rank.shape[0]
    xm = x.repeat(m // n, 1, 1, 1)  # (M, C, H, W): row r * N + i is image i
    tm = t.repeat(m // n)
    curves = []
    for lerf in (False, True):
        for f in fr.tolist():
            k = round(f * p)
            removed = (rank >= p - k) if lerf else (rank < k)  # (M, P)
            imputed = _impute(xm, removed.view(m, h, w), noise, gen)
            probs = _target_probs(model, m, lambda i, xi=imputed: (xi[i.to(device)], tm[i.to(device)]), batch)
            curves.append(probs.view(m // n, n).mean(0))
    out = torch.stack(curves, dim=1).view(n, 2, fr.numel())  # (N, 2, F)
    return RoadCurves(fr, out[:, 0].contiguous(), out[:, 1].contiguous())


def faithfulness(
    model: nn.Module,
    x: Tensor,
    maps: Tensor | None,
    targets: Tensor,
    *,
    steps: int = DEFAULT_STEPS,
    baseline: str = DEFAULT_BASELINE,
    road_fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = ROAD_NOISE,
    repeats: int = RANDOM_REPEATS,
    seed: int = 0,
    batch: int = FAITHFULNESS_BATCH,
) -> FaithfulnessCurves:
    """Deletion, insertion and ROAD curves of `maps` (N, H, W) on normalized images `x` (N, C, H, W) for
    `targets` (N,); `maps=None` gives the random-order baseline, to compute once beside a sweep over maps.

    `repeats` random orders per image are averaged for the baseline (ignored for maps); `seed` drives the
    tie breaking, the random orders and the imputation noise. The model's train / eval flags are restored
    afterwards; see `deletion_insertion` and `road_curves`.
    """
    _check_fractions(road_fractions, "road_fractions")  # before the deletion / insertion forwards, not after
    _check_noise(noise)
    di = deletion_insertion(
        model, x, maps, targets, steps=steps, baseline=baseline, repeats=repeats, seed=seed, batch=batch
    )
    road = road_curves(
        model, x, maps, targets, fractions=road_fractions, noise=noise, repeats=repeats, seed=seed, batch=batch
    )
    return FaithfulnessCurves(
        fractions=di.fractions,
        deletion=di.deletion,
        insertion=di.insertion,
        road_fractions=road.fractions,
        road_morf=road.morf,
        road_lerf=road.lerf,
        baseline=baseline,
        random_order=maps is None,
        repeats=repeats if maps is None else 1,
    )
