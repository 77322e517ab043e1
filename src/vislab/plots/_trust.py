"""How far a model can be trusted: reliability diagram, confidence histograms, corruption-robustness heat map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._style import MATRIX_CMAP, color, new_axes


def _get(b: Any, key: str) -> Any:
    return b[key] if isinstance(b, Mapping) else getattr(b, key)


def plot_reliability(bins: Sequence[Any], ax: Axes | None = None, *, title: str | None = None) -> Figure:
    """Accuracy per confidence bin against the diagonal of perfect calibration, each bin's image count on it.

    `bins`: vislab.explain's ReliabilityBin objects (or dicts with lo, hi, count, confidence, accuracy).
    """
    fig, ax = new_axes(ax, (4.8, 4.4))
    lo = np.array([_get(b, "lo") for b in bins], dtype=float)
    hi = np.array([_get(b, "hi") for b in bins], dtype=float)
    count = np.array([_get(b, "count") for b in bins], dtype=int)
    acc = np.array([_get(b, "accuracy") for b in bins], dtype=float)
    conf = np.array([_get(b, "confidence") for b in bins], dtype=float)
    width = hi - lo
    filled = count > 0
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.bar(
        lo[filled], acc[filled], width=width[filled], align="edge", color=color(0), edgecolor="white", label="accuracy"
    )
    # The gap to each bin's mean confidence: above the bar = over-confident, below = under-confident.
    ax.bar(
        lo[filled],
        conf[filled] - acc[filled],
        bottom=acc[filled],
        width=width[filled],
        align="edge",
        fill=False,
        hatch="///",
        edgecolor=color(3),
        linewidth=0.8,
        # hatched, not a tinted fill: over the accuracy bar (an under-confident bin) a tint reads as another colour
        label="gap to mean confidence",
    )
    for x0, w, a, c, k in zip(lo[filled], width[filled], acc[filled], conf[filled], count[filled]):
        ax.text(x0 + w / 2, max(a, c) + 0.015, f"{k}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"reliability diagram ({len(bins)} bins; numbers: images per bin)", fontsize="medium")
    ax.legend(loc="upper left", fontsize=7)
    return fig


def plot_confidence_histogram(
    confidence: torch.Tensor | np.ndarray, correct: torch.Tensor | np.ndarray, ax: Axes | None = None, *, bins: int = 20
) -> Figure:
    """Top-1 confidence of the right and of the wrong predictions, as two histograms on one axis."""
    conf = confidence.detach().cpu().numpy() if isinstance(confidence, torch.Tensor) else np.asarray(confidence)
    ok = (correct.detach().cpu().numpy() if isinstance(correct, torch.Tensor) else np.asarray(correct)).astype(bool)
    fig, ax = new_axes(ax, (5.0, 3.2))
    edges = np.linspace(0, 1, bins + 1)
    ax.hist(conf[ok], bins=edges, color=color(2), alpha=0.7, label=f"right ({int(ok.sum()):,})")
    ax.hist(conf[~ok], bins=edges, color=color(3), alpha=0.7, label=f"wrong ({int((~ok).sum()):,})")
    ax.set_yscale("log")
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("images (log scale)")
    ax.set_title("confidence of right and wrong predictions", fontsize="medium")
    ax.legend(fontsize=8)
    return fig


def plot_robustness(
    table: Mapping[str, Sequence[float]],
    severities: Sequence[int],
    ax: Axes | None = None,
    *,
    clean_acc: float | None = None,
) -> Figure:
    """Accuracy (%) per corruption (rows) and severity (columns) as an annotated heat map."""
    names = list(table)
    values = np.array([list(table[n]) for n in names], dtype=float)
    fig, ax = new_axes(ax, (1.0 * len(severities) + 3.2, 0.38 * len(names) + 1.6))
    im = ax.imshow(values, cmap=MATRIX_CMAP, vmin=0.0, vmax=100.0, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="test accuracy (%)")
    ax.set_xticks(range(len(severities)), labels=[str(s) for s in severities])
    ax.set_yticks(range(len(names)), labels=[n.replace("_", " ") for n in names])
    ax.set_xlabel("severity")
    cmap = colormaps[MATRIX_CMAP]
    for i in range(len(names)):
        for j in range(len(severities)):
            v = values[i, j]
            r, g, b, _ = cmap(v / 100.0 if np.isfinite(v) else 0.0)
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    title = "accuracy under corruption"
    if clean_acc is not None:
        title += f" (clean: {clean_acc:.1f}%)"
    ax.set_title(title, fontsize="medium")
    return fig
