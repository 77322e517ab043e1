"""Plots: every function draws into a given Axes or a new pyplot-free Figure, with readable labels and maps."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vislab.augment import normalize
from vislab.errors import ConfigError
from vislab.plots import (
    HEATMAP_CMAP,
    MATRIX_CMAP,
    PALETTE,
    denormalize,
    overlay_heatmap,
    plot_accuracy,
    plot_augmented,
    plot_compare,
    plot_confusion_matrix,
    plot_curves,
    plot_gradcam,
    plot_loss,
    plot_lr,
    plot_misclassified,
    plot_per_class_accuracy,
)

CLASSES = ["cat", "dog", "ship"]
HISTORY = [
    {
        "epoch": e,
        "lr": 0.1 / e,
        "train_loss": 2.0 / e,
        "train_acc": 30.0 + 10 * e,
        "test_loss": 2.2 / e,
        "test_acc": 25.0 + 10 * e,
        "seconds": 1.0,
    }
    for e in (1, 2, 3)
]


def _images(n: int = 4, size: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _all_plots():
    imgs = _images()
    cams = {"predicted": torch.rand(4, 8, 8), "actual": torch.rand(4, 8, 8)}
    labels, preds, probs = [0, 1, 2, 0], [1, 2, 0, 2], [0.9, 0.5, 0.7, 0.6]
    cm = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    return {
        "loss": lambda ax: plot_loss(HISTORY, ax),
        "accuracy": lambda ax: plot_accuracy(HISTORY, ax),
        "lr": lambda ax: plot_lr([0.01, 0.05, 0.1, 0.05, 0.01, 0.001], ax, history=HISTORY),
        "confusion": lambda ax: plot_confusion_matrix(cm, CLASSES, ax),
        "per_class": lambda ax: plot_per_class_accuracy([80.0, 70.0, 90.0], CLASSES, ax),
        "misclassified": lambda ax: plot_misclassified(imgs, labels, preds, probs, CLASSES, ax),
        "gradcam": lambda ax: plot_gradcam(imgs, cams, labels, preds, probs, CLASSES, ax),
        "augmented": lambda ax: plot_augmented(imgs, labels, CLASSES, ax),
    }


@pytest.mark.parametrize("name", list(_all_plots()))
def test_plot_returns_figure_and_draws_into_given_axes(name):
    fn = _all_plots()[name]
    fig = fn(None)
    assert isinstance(fig, Figure) and fig.axes
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # renders headless, no pyplot backend involved
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"

    host = Figure()
    ax = host.add_subplot()
    assert fn(ax) is host
    assert ax.has_data() or ax.images or ax.texts


def test_two_panel_plots_take_a_pair_of_axes():
    host = Figure()
    a, b = host.subplots(1, 2)
    assert plot_curves(HISTORY, (a, b)) is host
    assert a.get_title() == "loss" and b.get_title() == "accuracy"
    assert plot_compare({"r1": HISTORY}, (a, b)) is host
    fig = plot_curves(HISTORY)
    assert len(fig.axes) == 2


def test_curves_plot_the_history_values():
    fig = plot_curves(HISTORY)
    loss_ax, acc_ax = fig.axes
    lines = {ln.get_label(): ln for ln in loss_ax.lines}
    assert list(lines["test cross-entropy"].get_ydata()) == [r["test_loss"] for r in HISTORY]
    # A run logged before train_ce: its train loss is labelled as the objective it is.
    assert list(lines["train objective (may include label smoothing / L1)"].get_xdata()) == [1.0, 2.0, 3.0]
    assert [ln.get_ydata()[-1] for ln in acc_ax.lines] == [HISTORY[-1]["train_acc"], HISTORY[-1]["test_acc"]]
    assert all(ln.get_color() in PALETTE for ln in loss_ax.lines)  # colour-blind-safe palette


def test_epoch_axes_tick_whole_epochs_only_even_after_one_epoch():
    # One point: matplotlib's default locator would tick 0.96, 0.98, 1.00, ... epochs.
    from vislab.results import course_reference, plot_vs_course

    one = HISTORY[:1]
    figs = [plot_curves(one), plot_compare({"r1": one}), plot_vs_course(one, course_reference("resnet18-sgd-plateau"))]
    for fig in figs:
        FigureCanvasAgg(fig).draw()  # ticks are settled only by drawing
    for ax in (ax for fig in figs for ax in fig.axes):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ax.get_xlabel() == "epoch" and ticks and all(float(t).is_integer() for t in ticks), ticks


def test_loss_panel_compares_cross_entropy_with_cross_entropy():
    # Label smoothing lifts the objective above the plain cross-entropy of the same logits.
    history = [
        {**r, "train_ce": r["train_loss"] - 0.3, "val_loss": r["test_loss"] - 0.1, "val_acc": r["test_acc"] + 1}
        for r in HISTORY
    ]
    loss_ax, acc_ax = plot_curves(history).axes
    lines = {ln.get_label(): list(ln.get_ydata()) for ln in loss_ax.lines}
    assert lines == {
        "train cross-entropy": [r["train_ce"] for r in history],
        "train objective (with label smoothing / L1)": [r["train_loss"] for r in history],
        "validation cross-entropy": [r["val_loss"] for r in history],
        "test cross-entropy": [r["test_loss"] for r in history],
    }
    assert [ln.get_label() for ln in acc_ax.lines] == ["train", "validation", "test"]
    # Without label smoothing or L1 the objective is the cross-entropy: one train line, not two equal ones.
    plain = [{**r, "train_ce": r["train_loss"]} for r in HISTORY]
    assert [ln.get_label() for ln in plot_curves(plain).axes[0].lines] == ["train cross-entropy", "test cross-entropy"]


def test_lr_plot_per_step_and_log_scale_for_wide_ranges():
    steps = [0.1] * 4 + [0.01] * 4 + [1e-5] * 4
    fig = plot_lr(steps, history=[{"epoch": e, "lr": v} for e, v in ((1, 0.1), (2, 0.01), (3, 1e-5))])
    ax = fig.axes[0]
    per_step = next(ln for ln in ax.lines if ln.get_label() == "per step")
    assert list(per_step.get_ydata()) == steps
    ends = next(ln for ln in ax.lines if ln.get_label() == "epoch end")
    assert list(ends.get_xdata()) == [4, 8, 12]
    assert ax.get_yscale() == "log"
    assert plot_lr([0.1, 0.2, 0.3]).axes[0].get_yscale() == "linear"


def test_confusion_matrix_names_classes_and_uses_a_colour_blind_safe_map():
    cm = torch.tensor([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    fig = plot_confusion_matrix(cm, CLASSES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert ax.images[0].get_cmap().name == MATRIX_CMAP == "cividis"
    assert {"5", "7", "9", "2"} <= set(_texts(fig))
    norm = plot_confusion_matrix(cm, CLASSES, normalize=True)
    assert "0.83" in _texts(norm) and "0.70" in _texts(norm)  # 5/6 and 7/10: rows sum to 1


def test_gallery_titles_say_predicted_and_true_class():
    fig = plot_misclassified(
        _images(2), torch.tensor([0, 2]), torch.tensor([1, 0]), torch.tensor([0.834, 0.5]), CLASSES
    )
    assert _texts(fig) == ["pred: dog (p=0.83)\ntrue: cat", "pred: cat (p=0.50)\ntrue: ship"]


def test_gallery_tiles_show_what_the_gallery_is_sorted_by():
    # Ordered by loss (or by p(true), its mirror image) or by confidence: the key must be on every tile.
    fig = plot_misclassified(
        _images(2), [0, 2], [1, 0], [0.834, 0.5], CLASSES, true_probs=[0.05, 0.3], losses=[2.9957, 1.204]
    )
    assert _texts(fig) == [
        "pred: dog (p=0.83)\ntrue: cat (p=0.05)\nloss 3.00",
        "pred: cat (p=0.50)\ntrue: ship (p=0.30)\nloss 1.20",
    ]


def test_gradcam_plot_groups_each_image_with_its_maps():
    cams = {"predicted": torch.rand(3, 8, 8), "actual": torch.rand(3, 8, 8)}
    fig = plot_gradcam(_images(3), cams, [0, 1, 2], [1, 2, 0], [0.9, 0.8, 0.7], CLASSES)
    texts = [t for t in _texts(fig)]
    assert len(texts) == 9  # image + two maps per image
    assert [t.split("\n")[:2] for t in texts[1:3] + texts[4:6]] == [
        ["CAM w.r.t. predicted", "dog p=0.90"],
        ["CAM w.r.t. actual", "cat"],
        ["CAM w.r.t. predicted", "ship p=0.80"],
        ["CAM w.r.t. actual", "dog"],
    ]
    assert len(fig.axes) == 2  # the mosaic and its colour bar


def test_gradcam_maps_carry_confidence_and_absolute_scale():
    # A near-chance model: weak maps, p about 1/3. Scaled to their own maximum they look as bright as a
    # confident model's, so each map must say p(class) and its raw maximum, and a shared scale must keep them dark.
    g = torch.Generator().manual_seed(0)
    weak = torch.rand(2, 8, 8, generator=g) * 0.004
    strong = torch.rand(2, 8, 8, generator=g) * 2.5
    cams = {"predicted": strong, "actual": weak}
    fig = plot_gradcam(_images(2), cams, [0, 1], [1, 2], [0.91, 0.8], CLASSES, true_probs=[0.34, 0.02])
    texts = _texts(fig)
    assert texts[1] == f"CAM w.r.t. predicted\ndog p=0.91\nraw max {float(strong[0].max()):.3g}"
    assert texts[2] == f"CAM w.r.t. actual\ncat p=0.34\nraw max {float(weak[0].max()):.3g}"
    assert texts[5] == f"CAM w.r.t. actual\ndog p=0.02\nraw max {float(weak[1].max()):.3g}"
    assert "own maximum" in fig.axes[1].get_xlabel() and fig.axes[1].get_xlim() == (0.0, 1.0)

    shared = plot_gradcam(
        _images(2), cams, [0, 1], [1, 2], [0.91, 0.8], CLASSES, true_probs=[0.34, 0.02], scale="shared"
    )
    bar = shared.axes[1]
    assert "raw values" in bar.get_xlabel() and bar.get_xlim()[1] == pytest.approx(float(strong.max()))
    # on the shared scale the weak maps are drawn in the map's bottom colour; on their own scale they span it all
    from matplotlib import colormaps

    low = np.round(np.array(colormaps[HEATMAP_CMAP](0.0)[:3]) * 255)
    own = overlay_heatmap(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), weak, alpha=1.0)
    one = overlay_heatmap(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), weak, alpha=1.0, vmax=float(strong.max()))
    assert (one.permute(0, 2, 3, 1).reshape(-1, 3).float() - torch.tensor(low)).abs().max() <= 2
    assert (own.permute(0, 2, 3, 1).reshape(-1, 3).float() - torch.tensor(low)).abs().max() > 100
    with pytest.raises(ConfigError, match="scale"):
        plot_gradcam(_images(2), cams, [0, 1], [1, 2], [0.91, 0.8], CLASSES, scale="log")


def test_overlay_heatmap_blends_the_map_colours():
    from matplotlib import colormaps

    img = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    cam = torch.zeros(1, 4, 4)
    cam[0, 1, 2] = 3.0  # the peak becomes the map's top colour; scale-free per image
    out = overlay_heatmap(img, cam, alpha=1.0)
    assert out.shape == (1, 3, 4, 4) and out.dtype == torch.uint8
    top = np.round(np.array(colormaps[HEATMAP_CMAP](1.0)[:3]) * 255)
    low = np.round(np.array(colormaps[HEATMAP_CMAP](0.0)[:3]) * 255)
    assert out[0, :, 1, 2].tolist() == top.tolist() and out[0, :, 0, 0].tolist() == low.tolist()
    half = overlay_heatmap(torch.full((1, 3, 4, 4), 200, dtype=torch.uint8), cam, alpha=0.5)
    low_f = np.array(colormaps[HEATMAP_CMAP](0.0)[:3]) * 255
    assert np.abs(half[0, :, 0, 0].numpy() - (0.5 * 200 + 0.5 * low_f)).max() <= 0.5 + 1e-4


def test_denormalize_inverts_normalize():
    x = _images(5, 6)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    assert torch.equal(denormalize(normalize(x, mean, std), mean, std), x)
