"""Training curves from `metrics.jsonl` rows: loss, accuracy, learning rate, and several runs overlaid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import ConfigError
from ._style import DPI, color, new_axes

Rows = Sequence[Mapping[str, Any]]


def _series(history: Rows, key: str) -> tuple[list[float], list[float]]:
    pts = [(float(r["epoch"]), float(r[key])) for r in history if r.get(key) is not None and "epoch" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def _pair(ax: Axes | Sequence[Axes] | None, figsize: tuple[float, float]) -> tuple[Figure, Axes, Axes]:
    if ax is None:
        fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
        a, b = fig.subplots(1, 2)
        return fig, a, b
    if isinstance(ax, Axes) or len(ax) != 2:
        raise ConfigError("ax: this plot draws two panels (loss, accuracy); pass a pair of Axes, or None for a new figure.")
    return ax[0].figure, ax[0], ax[1]


def _plot_metric(history: Rows, ax: Axes | None, key: str, ylabel: str, title: str) -> Figure:
    fig, ax = new_axes(ax, (5.0, 3.4))
    for i, split in enumerate(("train", "test")):
        x, y = _series(history, f"{split}_{key}")
        if x:
            ax.plot(x, y, marker="o", ms=3, color=color(i), ls="-" if split == "test" else "--", label=split)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    return fig


def plot_loss(history: Rows, ax: Axes | None = None) -> Figure:
    """Train and test loss per epoch."""
    return _plot_metric(history, ax, "loss", "cross-entropy", "loss")


def plot_accuracy(history: Rows, ax: Axes | None = None) -> Figure:
    """Train and test accuracy (%) per epoch."""
    return _plot_metric(history, ax, "acc", "accuracy (%)", "accuracy")


def plot_curves(history: Rows, ax: Sequence[Axes] | None = None) -> Figure:
    """Loss and accuracy side by side; `ax` is None or a pair of Axes."""
    fig, a, b = _pair(ax, (10.0, 3.6))
    plot_loss(history, a)
    plot_accuracy(history, b)
    return fig


def plot_lr(lr_steps: Sequence[float], ax: Axes | None = None, *, history: Rows | None = None) -> Figure:
    """Learning rate of every optimizer step; with `history`, the per-epoch LR as markers at epoch ends."""
    fig, ax = new_axes(ax, (5.0, 3.4))
    steps = list(range(1, len(lr_steps) + 1))
    if steps:
        ax.plot(steps, list(lr_steps), color=color(0), lw=1.2, label="per step")
    epochs = [r for r in (history or []) if r.get("lr") is not None]
    if epochs and steps and len(lr_steps) % len(epochs) == 0:
        per_epoch = len(lr_steps) // len(epochs)
        ax.plot([per_epoch * int(r["epoch"]) for r in epochs], [float(r["lr"]) for r in epochs], "o", ms=4,
                color=color(3), label="epoch end")
        sec = ax.secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        sec.set_xlabel("epoch")
    positive = [v for v in lr_steps if v > 0]
    if positive and max(positive) / min(positive) > 1e3:
        ax.set_yscale("log")  # plateau/step schedules span decades: a linear axis hides all but the first
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    return fig


def plot_compare(histories: Mapping[str, Rows], ax: Sequence[Axes] | None = None) -> Figure:
    """Several runs overlaid: loss (left) and accuracy (right); one colour per run, test solid, train dashed."""
    fig, a, b = _pair(ax, (11.0, 4.0))
    for i, (name, hist) in enumerate(histories.items()):
        for panel, key in ((a, "loss"), (b, "acc")):
            for split, ls in (("test", "-"), ("train", "--")):
                x, y = _series(hist, f"{split}_{key}")
                if x:
                    panel.plot(x, y, ls=ls, marker="o", ms=2.5, color=color(i), label=f"{name} ({split})")
    for panel, ylabel in ((a, "cross-entropy"), (b, "accuracy (%)")):
        panel.set_xlabel("epoch")
        panel.set_ylabel(ylabel)
        panel.grid(alpha=0.3)
    a.set_title("loss")
    b.set_title("accuracy")
    if b.lines:
        b.legend(fontsize="small")
    return fig
