"""Shared plot style: colour-blind-safe palette and colour maps, and the `ax=None` -> Figure convention."""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# Okabe & Ito (2008): eight colours that stay distinct under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
# Perceptually uniform maps that read the same in grey scale and for deuteranopes / protanopes.
HEATMAP_CMAP = "viridis"
MATRIX_CMAP = "cividis"
DPI = 110


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The caller's axes and their figure, or a fresh pyplot-free Figure with one axes (safe headless)."""
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def legend_below(ax: Axes, fontsize: str = "x-small") -> None:
    """The legend under the axes, outside the plotting area. For a plot with a full-length reference curve (the
    course's), where every spot inside the axes covers data: a run's first epochs, drawn low and left, would
    otherwise sit under the legend. Constrained layout makes room for it."""
    ax.legend(fontsize=fontsize, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def epoch_axis(ax: Axes) -> None:
    """Label the x axis "epoch" with whole-number ticks: epochs are counted, and a run with one or two epochs so far
    would otherwise get ticks such as 0.96, 0.98, 1.00."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # one epoch: one tick
