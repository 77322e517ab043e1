"""Training curves from `metrics.jsonl` rows: loss, accuracy, learning rate, and several runs overlaid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import ConfigError
from ._style import DPI, color, epoch_axis, new_axes

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
        raise ConfigError(
            "ax: this plot draws two panels (loss, accuracy); pass a pair of Axes, or None for a new figure."
        )
    return ax[0].figure, ax[0], ax[1]


# (metrics.jsonl column, legend label, line style); a loss panel compares like with like: the plain
# cross-entropy of the training batches against the validation and test cross-entropy.
_LOSS_SERIES = (
    ("train_ce", "train cross-entropy", "--"),
    ("train_loss", "train objective (with label smoothing / L1)", ":"),
    ("val_loss", "validation cross-entropy", "-."),
    ("test_loss", "test cross-entropy", "-"),
    ("ema_val_loss", "validation cross-entropy, EMA weights", (0, (3, 1, 1, 1, 1, 1))),
    ("ema_test_loss", "test cross-entropy, EMA weights", (0, (5, 1))),
)
_ACC_SERIES = (
    ("train_acc", "train", "--"),
    ("val_acc", "validation", "-."),
    ("test_acc", "test", "-"),
    ("ema_val_acc", "validation, EMA weights", (0, (3, 1, 1, 1, 1, 1))),
    ("ema_test_acc", "test, EMA weights", (0, (5, 1))),
)


def _loss_series(history: Rows) -> list[tuple[str, str, str]]:
    if not any("train_ce" in r for r in history):
        # Runs logged before train_ce existed: their train_loss is the objective, which may include label smoothing / L1.
        return [("train_loss", "train objective (may include label smoothing / L1)", "--"), *_LOSS_SERIES[2:]]
    # The objective gets its own line only where it differs from the plain cross-entropy.
    differs = any(
        r.get("train_ce") is not None and abs(float(r["train_loss"]) - float(r["train_ce"])) > 1e-9 for r in history
    )
    return [s for s in _LOSS_SERIES if s[0] != "train_loss" or differs]


def _plot_metric(
    history: Rows, ax: Axes | None, series: Sequence[tuple[str, str, Any]], ylabel: str, title: str
) -> Figure:
    fig, ax = new_axes(ax, (5.0, 3.4))
    for i, (key, label, style) in enumerate(series):
        x, y = _series(history, key)
        if x:
            ax.plot(x, y, marker="o", ms=3, color=color(i), ls=style, label=label)
    epoch_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    return fig


def plot_loss(history: Rows, ax: Axes | None = None) -> Figure:
    """Cross-entropy per epoch: train (plain, and the objective where label smoothing / L1 change it), validation, test."""
    return _plot_metric(history, ax, _mixed(history, _loss_series(history)), "loss", "loss")


def _mixed(history: Rows, series: Sequence[tuple[str, str, Any]]) -> list[tuple[str, str, Any]]:
    """Under MixUp / CutMix the train figures are those of mixed batches: the legend says so."""
    if not any(r.get("train_mixed") for r in history):
        return list(series)
    return [(k, f"{label} (mixed data)" if k.startswith("train") else label, st) for k, label, st in series]


def plot_accuracy(history: Rows, ax: Axes | None = None) -> Figure:
    """Train, validation (when there is a split) and test accuracy (%) per epoch; the EMA weights' too, when averaged."""
    return _plot_metric(history, ax, _mixed(history, _ACC_SERIES), "accuracy (%)", "accuracy")


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
        ax.plot(
            [per_epoch * int(r["epoch"]) for r in epochs],
            [float(r["lr"]) for r in epochs],
            "o",
            ms=4,
            color=color(3),
            label="epoch end",
        )
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
        epoch_axis(panel)
        panel.set_ylabel(ylabel)
        panel.grid(alpha=0.3)
    a.set_title("loss")
    b.set_title("accuracy")
    if b.lines:
        b.legend(fontsize="small")
    return fig
