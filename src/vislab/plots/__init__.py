"""Plots for runs and explanations: each takes `ax=None` and returns a matplotlib Figure (no pyplot state)."""

from ._curves import plot_accuracy, plot_compare, plot_curves, plot_loss, plot_lr
from ._faithfulness import plot_faithfulness
from ._images import (
    denormalize,
    overlay_heatmap,
    plot_augmented,
    plot_gradcam,
    plot_image_grid,
    plot_misclassified,
)
from ._matrix import plot_confusion_matrix, plot_per_class_accuracy
from ._style import HEATMAP_CMAP, MATRIX_CMAP, PALETTE, epoch_axis, legend_below
from ._sweep import plot_sweep
from ._trust import plot_confidence_histogram, plot_reliability, plot_robustness

__all__ = [
    "HEATMAP_CMAP",
    "MATRIX_CMAP",
    "PALETTE",
    "denormalize",
    "epoch_axis",
    "legend_below",
    "overlay_heatmap",
    "plot_accuracy",
    "plot_augmented",
    "plot_compare",
    "plot_confidence_histogram",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_faithfulness",
    "plot_gradcam",
    "plot_image_grid",
    "plot_loss",
    "plot_lr",
    "plot_misclassified",
    "plot_per_class_accuracy",
    "plot_reliability",
    "plot_robustness",
    "plot_sweep",
]
