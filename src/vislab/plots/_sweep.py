"""The CAM method x layer sweep as a heat map of its faithfulness score, each layer labelled with its map's grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ._style import MATRIX_CMAP, new_axes


def plot_sweep(
    rows: Sequence[Mapping[str, Any]],
    *,
    random: Mapping[str, Any] | None = None,
    score: str = "road_gap",
    ax: Axes | None = None,
) -> Figure:
    """Rows = methods, columns = layers ("layer3 (4x4)": the CAM's native grid), cells = `score` of each
    combination (a row dict as `Sweep.as_dict()["rows"]` holds them); the best cell is outlined and the random
    baseline's score is in the title, so a cell can be read against chance."""
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
    grids: dict[str, str] = {}
    values = np.full((len(methods), len(layers)), np.nan)
    for r in rows:
        i, j = methods.index(str(r["method"])), layers.index(str(r["layer"]))
        values[i, j] = float(r[score])
        if r["method"] not in ("guided-gradcam", "smooth-guided-gradcam"):  # pixel maps are at image size
            grids.setdefault(str(r["layer"]), "x".join(str(int(g)) for g in r["grid"]))
    fig, ax = new_axes(ax, (1.6 * len(layers) + 3.0, 0.45 * len(methods) + 1.6))
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    im = ax.imshow(values, cmap=MATRIX_CMAP, vmin=lo, vmax=hi if hi > lo else lo + 1e-9, aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=score.replace("_", " "))
    ax.set_xticks(range(len(layers)), labels=[f"{n} ({grids[n]})" if n in grids else n for n in layers])
    ax.set_yticks(range(len(methods)), labels=methods)
    ax.set_xlabel("layer (native CAM grid)")
    cmap = colormaps[MATRIX_CMAP]
    for i in range(len(methods)):
        for j in range(len(layers)):
            if np.isfinite(values[i, j]):
                r_, g_, b_, _ = cmap((values[i, j] - lo) / (hi - lo) if hi > lo else 0.5)
                dark = 0.299 * r_ + 0.587 * g_ + 0.114 * b_ < 0.5
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    if finite.size:
        i, j = np.unravel_index(np.nanargmax(values), values.shape)
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    title = f"CAM faithfulness: {score.replace('_', ' ')} per method and layer (outlined: best)"
    if random is not None and score in random:
        title += f"\nrandom ordering: {float(random[score]):.3f}"
    ax.set_title(title, fontsize="medium")
    return fig
