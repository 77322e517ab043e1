"""Image galleries drawn as one mosaic per axes: misclassified images, Grad-CAM overlays, augmented samples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

from ..errors import ConfigError
from ._style import DPI, HEATMAP_CMAP

TILE_INCHES = 1.35  # on-page size of one image; CIFAR's 32 px are drawn as blocks, never smoothed
GAP_INCHES = 0.08
GROUP_GAP_INCHES = 0.3  # extra space between groups (an image and its CAMs) so they read as units
FONT_SIZE = 7.5
LINE_INCHES = FONT_SIZE * 1.3 / 72
COLORBAR_INCHES = 0.75


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo (x / 255 - mean) / std: normalized float (N, C, H, W) -> uint8 (N, C, H, W) on the CPU."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x.detach().float().cpu() * s + m) * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def _hwc(images: Tensor | np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) tensor -> float (N, H, W, 3) in [0, 1] for drawing."""
    a = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ConfigError(f"images must be shaped (N, C, H, W) with 1 or 3 channels; got {a.shape}.")
    a = a.transpose(0, 2, 3, 1).astype(np.float32)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a / 255.0 if images.dtype in (torch.uint8, np.uint8) else np.clip(a, 0.0, 1.0)


def overlay_heatmap(
    images: Tensor, cams: Tensor, *, alpha: float = 0.5, cmap: str = HEATMAP_CMAP, vmax: float | None = None
) -> Tensor:
    """Blend maps (N, H, W) in `cmap` over uint8 images (N, C, H, W); returns uint8 (N, 3, H, W).

    Each map is scaled to its own maximum, or with `vmax` all maps share the scale 0..vmax (values above it clip).
    """
    img = _hwc(images)  # (N, H, W, 3)
    c = cams.detach().float().cpu()
    if c.shape != img.shape[:3]:
        raise ConfigError(
            f"cams shaped {tuple(c.shape)} do not match the images {img.shape[:3]}; upsample the maps to image size."
        )
    if vmax is None:
        peak = c.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    else:
        peak = torch.tensor(max(float(vmax), 1e-12))
    heat = colormaps[cmap]((c / peak).clamp(0.0, 1.0).numpy())[..., :3]  # (N, H, W, 3)
    out = (1.0 - alpha) * img + alpha * heat
    return torch.from_numpy((out * 255.0).round().clip(0, 255).astype(np.uint8)).permute(0, 3, 1, 2)


def plot_image_grid(
    images: Tensor,
    titles: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    ncols: int = 5,
    group: int = 1,
    colorbar: str | None = None,
    cmap: str = HEATMAP_CMAP,
    colorbar_max: float = 1.0,
) -> Figure:
    """uint8 images (N, C, H, W) as one mosaic, each under its (multi-line) title.

    Tiles come in groups of `group` (e.g. an image and its CAMs) with wider gaps between groups;
    `ncols` counts tiles. `colorbar` adds a 0..colorbar_max bar in `cmap` with that label.
    """
    img = _hwc(images)
    n, h, w, _ = img.shape
    ncols = max(1, min(ncols, n)) if n else 1
    nrows = max(1, math.ceil(n / ncols))
    titles = list(titles) if titles is not None else [""] * n
    lines = max((t.count("\n") + 1 for t in titles if t), default=0)
    px = w / TILE_INCHES  # mosaic pixels per inch
    gap, group_gap, band = (max(1, round(v * px)) for v in (GAP_INCHES, GROUP_GAP_INCHES, lines * LINE_INCHES + 0.04))
    band = band if lines else 0
    group_gap = group_gap if group > 1 else 0
    groups_per_row = math.ceil(ncols / group)
    width = ncols * (w + gap) + (groups_per_row - 1) * group_gap
    height = nrows * (band + h + gap)
    mosaic = np.ones((height, width, 3), dtype=np.float32)
    anchors = []
    for i in range(n):
        r, col = divmod(i, ncols)
        x0 = col * (w + gap) + (col // group) * group_gap
        y0 = r * (band + h + gap) + band
        mosaic[y0 : y0 + h, x0 : x0 + w] = img[i]
        anchors.append((x0 + w / 2, y0 - 1))
    bar = COLORBAR_INCHES if colorbar else 0.0
    if ax is None:
        fig_h = height / px + bar
        fig = Figure(figsize=(width / px, fig_h), dpi=DPI)
        ax = fig.add_axes((0.0, bar / fig_h, 1.0, 1.0 - bar / fig_h))
        # the bar sits in the upper part of its strip; its ticks and label hang below it
        cax = fig.add_axes((0.3, 0.55 * bar / fig_h, 0.4, 0.15 * bar / fig_h)) if colorbar else None
    else:
        fig, cax = ax.figure, None
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for (x, y), t in zip(anchors, titles):
        if t:
            ax.text(x, y, t, ha="center", va="bottom", fontsize=FONT_SIZE, linespacing=1.15)
    if colorbar:
        sm = ScalarMappable(norm=Normalize(0.0, colorbar_max), cmap=cmap)
        kw = {"cax": cax} if cax is not None else {"ax": ax, "fraction": 0.04, "pad": 0.02}
        cb = fig.colorbar(sm, orientation="horizontal", **kw)
        cb.set_label(colorbar, fontsize=FONT_SIZE)
        cb.ax.tick_params(labelsize=FONT_SIZE)
    return fig


def _name(classes: Sequence[str], i: int) -> str:
    return classes[i] if 0 <= i < len(classes) else str(i)


def misclassified_titles(
    labels: Sequence[int],
    preds: Sequence[int],
    probs: Sequence[float],
    classes: Sequence[str],
    true_probs: Sequence[float] | None = None,
    losses: Sequence[float] | None = None,
) -> list[str]:
    """ "pred: X (p=..)" / "true: Y [(p=..)]" [/ "loss .."] per image: whatever a gallery may be ordered by is on the tile."""
    n = len(labels)
    tp = list(true_probs) if true_probs is not None else [None] * n
    ls = list(losses) if losses is not None else [None] * n
    titles = []
    for t, p, q, pt, loss in zip(labels, preds, probs, tp, ls):
        title = f"pred: {_name(classes, int(p))} (p={float(q):.2f})\ntrue: {_name(classes, int(t))}"
        title += f" (p={float(pt):.2f})" if pt is not None else ""
        title += f"\nloss {float(loss):.2f}" if loss is not None else ""
        titles.append(title)
    return titles


def plot_misclassified(
    images: Tensor,
    labels: Sequence[int] | Tensor,
    preds: Sequence[int] | Tensor,
    probs: Sequence[float] | Tensor,
    classes: Sequence[str],
    ax: Axes | None = None,
    *,
    ncols: int = 5,
    true_probs: Sequence[float] | Tensor | None = None,
    losses: Sequence[float] | Tensor | None = None,
) -> Figure:
    """Gallery of uint8 images, each titled "pred: X (p=..)" / "true: Y"; `probs` = probability of the prediction.

    With `true_probs` (probability of the true class) and `losses` (per-image cross-entropy) the tiles show
    those too, so a gallery ordered by loss or by confidence shows on each tile the number it is sorted by.
    """
    titles = misclassified_titles(
        _ints(labels),
        _ints(preds),
        _floats(probs),
        classes,
        _floats(true_probs) if true_probs is not None else None,
        _floats(losses) if losses is not None else None,
    )
    return plot_image_grid(images, titles, ax, ncols=ncols)


CAM_TITLES = {"predicted": "CAM w.r.t. predicted", "actual": "CAM w.r.t. actual"}
CAM_SCALES = ("map", "shared")


def plot_gradcam(
    images: Tensor,
    cams: Mapping[str, Tensor],
    labels: Sequence[int] | Tensor,
    preds: Sequence[int] | Tensor,
    probs: Sequence[float] | Tensor,
    classes: Sequence[str],
    ax: Axes | None = None,
    *,
    groups_per_row: int = 2,
    alpha: float = 0.5,
    true_probs: Sequence[float] | Tensor | None = None,
    scale: str = "map",
    method: str = "Grad-CAM",
    grid: tuple[int, int] | None = None,
) -> Figure:
    """Each image beside its CAM overlays, one per entry of `cams` ("predicted" / "actual" -> (N, H, W)).

    `method` names the maps; `grid` is their native resolution (the layer's output size), written on every map
    and on the colour bar, so that a 4x4 map upsampled to 32x32 is not mistaken for a fine one.

    Above each map: the class it explains, the model's probability of that class (`probs` for "predicted",
    `true_probs` for "actual") and the map's raw maximum, so that a near-chance model's maps, however
    bright, are read with its confidence beside them. `scale="map"` scales each map to its own maximum
    (bright = most attended in this map); `scale="shared"` puts every map of the figure on one raw scale,
    0 .. the largest value, shown on the colour bar (weak maps stay dark).
    """
    if scale not in CAM_SCALES:
        raise ConfigError(f"scale = {scale!r} is not a Grad-CAM colour scale; choose one of {', '.join(CAM_SCALES)}.")
    labels_l, preds_l, probs_l = _ints(labels), _ints(preds), _floats(probs)
    true_l = _floats(true_probs) if true_probs is not None else None
    peaks = {k: v.detach().float().flatten(1).amax(1).cpu().tolist() if v.numel() else [] for k, v in cams.items()}
    vmax = max((p for ps in peaks.values() for p in ps), default=1.0) if scale == "shared" else None
    overlays = {k: overlay_heatmap(images, v, alpha=alpha, vmax=vmax) for k, v in cams.items()}
    tiles, titles = [], []
    head = misclassified_titles(labels_l, preds_l, probs_l, classes)
    for i in range(images.shape[0]):
        tiles.append(images[i, :3] if images.shape[1] == 3 else images[i].expand(3, -1, -1))
        titles.append(head[i])
        for k, ov in overlays.items():
            cls, p = _cam_class(k, i, labels_l, preds_l, probs_l, true_l)
            line = (_name(classes, cls) if cls is not None else "") + (f" p={p:.2f}" if p is not None else "")
            tiles.append(ov[i])
            title = CAM_TITLES.get(k, k) + (f" ({grid[0]}x{grid[1]})" if grid else "")
            titles.append(f"{title}\n{line}\nraw max {peaks[k][i]:.3g}")
    group = 1 + len(overlays)
    stack = torch.stack(tiles) if tiles else torch.zeros(0, 3, *images.shape[-2:], dtype=torch.uint8)
    name = method + (f" at its native {grid[0]}x{grid[1]} grid, upsampled" if grid else "")
    if scale == "shared":
        label, top = f"{name}, raw values on one scale for every map", vmax if vmax and vmax > 0 else 1.0
    else:
        label, top = f"{name} / the map's own maximum (its raw max is above it)", 1.0
    return plot_image_grid(
        stack, titles, ax, ncols=group * groups_per_row, group=group, colorbar=label, colorbar_max=top
    )


def _cam_class(
    key: str, i: int, labels: list[int], preds: list[int], probs: list[float], true_probs: list[float] | None
) -> tuple[int | None, float | None]:
    """The class a map of `key` explains for image i, and the model's probability of it when known."""
    if key == "predicted":
        return preds[i], probs[i]
    if key == "actual":
        return labels[i], true_probs[i] if true_probs is not None else None
    return None, None


def plot_augmented(
    images: Tensor,
    labels: Sequence[int] | Tensor,
    classes: Sequence[str],
    ax: Axes | None = None,
    *,
    ncols: int = 8,
) -> Figure:
    """A grid of (already de-normalized, uint8) augmented training images titled with their class."""
    return plot_image_grid(images, [_name(classes, int(t)) for t in _ints(labels)], ax, ncols=ncols)


def _ints(v: Sequence[int] | Tensor) -> list[int]:
    return [int(i) for i in (v.tolist() if isinstance(v, Tensor) else v)]


def _floats(v: Sequence[float] | Tensor) -> list[float]:
    return [float(i) for i in (v.tolist() if isinstance(v, Tensor) else v)]
