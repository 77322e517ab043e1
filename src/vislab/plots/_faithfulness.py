"""Faithfulness curves of saliency maps: deletion, insertion and ROAD, each beside the random-order baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import ConfigError
from ._style import DPI, color

if TYPE_CHECKING:
    from ..explain._faithfulness import FaithfulnessCurves

RANDOM_COLOR = "grey"  # the random-order baseline: neutral, so that the methods keep the palette


def _panels(ax: Sequence[Axes] | None) -> tuple[Figure, list[Axes]]:
    if ax is None:
        fig = Figure(figsize=(13.5, 3.9), dpi=DPI, layout="constrained")
        return fig, list(fig.subplots(1, 3))
    if isinstance(ax, Axes) or len(ax) != 3:
        raise ConfigError(
            "ax: plot_faithfulness draws three panels (deletion, insertion, ROAD); pass three Axes, "
            "or None for a new figure."
        )
    return ax[0].figure, list(ax)


def _mean(t: torch.Tensor) -> list[float]:
    """The mean curve over images of (N, S) per-image curves."""
    return [float(v) for v in t.double().mean(0)]


CURVE_KEYS = ("fractions", "deletion", "insertion", "road_fractions", "road_morf", "road_lerf", "baseline")
AUC_KEYS = ("deletion_auc", "insertion_auc", "road_morf_auc", "road_lerf_auc")


def _summary(c: FaithfulnessCurves | Mapping[str, Any]) -> dict[str, Any]:
    """Mean curves and areas of a FaithfulnessCurves, or of its `as_dict()` (e.g. read back from cam_sweep.json)."""
    if isinstance(c, Mapping):
        missing = [k for k in (*CURVE_KEYS, *AUC_KEYS) if k not in c]
        if missing:
            raise ConfigError(
                f"curves: a summary without {', '.join(missing)}; give FaithfulnessCurves or its as_dict()."
            )
        return dict(c)
    out: dict[str, Any] = {k: getattr(c, k) for k in AUC_KEYS}
    out.update(
        fractions=[float(f) for f in c.fractions],
        road_fractions=[float(f) for f in c.road_fractions],
        deletion=_mean(c.deletion),
        insertion=_mean(c.insertion),
        road_morf=_mean(c.road_morf),
        road_lerf=_mean(c.road_lerf),
        baseline=c.baseline,
    )
    return out


def plot_faithfulness(
    curves: Mapping[str, FaithfulnessCurves | Mapping[str, Any]],
    *,
    random: FaithfulnessCurves | Mapping[str, Any] | None = None,
    title: str | None = None,
    ax: Sequence[Axes] | None = None,
) -> Figure:
    """Mean p(target) over images along the deletion, insertion and ROAD curves, one colour per named set of
    maps, the random-order baseline in grey; each legend entry carries its area under the curve (`curve_auc`:
    the area over the fractions' span, i.e. the curve's mean height).

    ROAD: most relevant first (MoRF) solid, least relevant first (LeRF) dashed, for the random order too (its
    two coincide in distribution, so their distance shows the noise). `ax`: None or three Axes. Each curve set is
    a FaithfulnessCurves or its `as_dict()` summary (mean curves and areas, as cam_sweep.json stores them).
    """
    fig, (dele, ins, road) = _panels(ax)
    named = {name: _summary(c) for name, c in curves.items()}
    rnd = _summary(random) if random is not None else None
    for i, (name, c) in enumerate(named.items()):
        fr, rf = c["fractions"], c["road_fractions"]
        dele.plot(fr, c["deletion"], color=color(i), marker="o", ms=2.5, label=f"{name} (AUC {c['deletion_auc']:.3f})")
        ins.plot(fr, c["insertion"], color=color(i), marker="o", ms=2.5, label=f"{name} (AUC {c['insertion_auc']:.3f})")
        road.plot(
            rf, c["road_morf"], color=color(i), marker="o", ms=2.5, label=f"{name} MoRF (AUC {c['road_morf_auc']:.3f})"
        )
        road.plot(
            rf,
            c["road_lerf"],
            color=color(i),
            ls="--",
            marker="o",
            ms=2.5,
            label=f"{name} LeRF (AUC {c['road_lerf_auc']:.3f})",
        )
    if rnd is not None:
        fr, rf = rnd["fractions"], rnd["road_fractions"]
        style = {"color": RANDOM_COLOR, "lw": 1.2}
        dele.plot(fr, rnd["deletion"], ls="--", label=f"random order (AUC {rnd['deletion_auc']:.3f})", **style)
        ins.plot(fr, rnd["insertion"], ls="--", label=f"random order (AUC {rnd['insertion_auc']:.3f})", **style)
        road.plot(rf, rnd["road_morf"], label=f"random MoRF (AUC {rnd['road_morf_auc']:.3f})", **style)
        road.plot(rf, rnd["road_lerf"], ls="--", label=f"random LeRF (AUC {rnd['road_lerf_auc']:.3f})", **style)
    canvas = next((c["baseline"] for c in (*named.values(), rnd) if c is not None), None)
    on = f" ({canvas} canvas)" if canvas else ""
    for panel, head, xlabel in (
        (dele, f"deletion{on}: lower = more faithful", "fraction of pixels removed, most relevant first"),
        (ins, f"insertion{on}: higher = more faithful", "fraction of pixels revealed, most relevant first"),
        (road, "ROAD: MoRF (solid) lower, LeRF (dashed) higher", "fraction of pixels removed and imputed"),
    ):
        panel.set_title(head, fontsize="medium")
        panel.set_xlabel(xlabel)
        panel.set_ylabel("p(target), mean over images")
        panel.set_xlim(0, 1)
        panel.set_ylim(0, 1.02)
        panel.grid(alpha=0.3)
        if panel.lines:
            panel.legend(fontsize=7)
    if title is not None:
        fig.suptitle(title)
    return fig
