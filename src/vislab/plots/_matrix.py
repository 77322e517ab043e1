"""Confusion matrix and per-class accuracy, with class names on the axes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._style import MATRIX_CMAP, color, new_axes

ANNOTATE_MAX_CLASSES = 20  # beyond this the cell numbers are unreadable; the colours still tell


def _as_numpy(t: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def plot_confusion_matrix(
    cm: torch.Tensor | np.ndarray,
    classes: Sequence[str],
    ax: Axes | None = None,
    *,
    normalize: bool = False,
) -> Figure:
    """Rows = true class, columns = predicted class; counts, or each row's shares with `normalize`."""
    counts = _as_numpy(cm).astype(np.float64)
    values = counts / np.maximum(counts.sum(1, keepdims=True), 1) if normalize else counts
    c = len(classes)
    size = max(4.0, 0.5 * c + 2.0)
    fig, ax = new_axes(ax, (size + 1.0, size))
    vmax = 1.0 if normalize else max(values.max(), 1.0)
    im = ax.imshow(values, cmap=MATRIX_CMAP, vmin=0.0, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "images")
    ax.set_xticks(range(c), labels=list(classes), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(c), labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix" + (" (row-normalized)" if normalize else " (counts)"))
    if c <= ANNOTATE_MAX_CLASSES:
        cmap = colormaps[MATRIX_CMAP]
        for i in range(c):
            for j in range(c):
                r, g, b, _ = cmap(values[i, j] / vmax)
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    return fig


def plot_per_class_accuracy(
    acc: torch.Tensor | np.ndarray | Sequence[float], classes: Sequence[str], ax: Axes | None = None
) -> Figure:
    """Horizontal bars of accuracy (%) per class, the overall mean of the classes as a dashed line."""
    values = _as_numpy(acc).astype(np.float64)
    fig, ax = new_axes(ax, (5.5, max(2.5, 0.32 * len(classes) + 1.0)))
    y = np.arange(len(classes))
    ax.barh(y, np.nan_to_num(values), color=color(0))
    for yi, v in zip(y, values):
        ax.text(
            min(v, 100.0) + 1 if np.isfinite(v) else 1,
            yi,
            f"{v:.1f}" if np.isfinite(v) else "n/a",
            va="center",
            fontsize=8,
        )
    title = "per-class accuracy"
    if np.isfinite(values).any():
        mean = float(np.nanmean(values))
        ax.axvline(mean, color=color(3), ls="--", lw=1)
        title += f" (dashed: mean of classes, {mean:.1f}%)"  # in the title: a legend would cover a bar
    ax.set_yticks(y, labels=list(classes))
    ax.invert_yaxis()  # first class on top, as in the table
    ax.set_xlim(0, 110)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(title, fontsize="medium")
    return fig
