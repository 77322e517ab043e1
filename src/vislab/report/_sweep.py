"""Which CAM method at which layer is most faithful to this run's model: every method at every candidate layer,
scored by deletion / insertion and ROAD curves on one fixed sample of test images, beside a random baseline.

The result is cached in the run folder (cam_sweep.json, keyed to the checkpoint and the sample) and the report
draws its Grad-CAM gallery with the winner.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..data import balanced_indices
from ..errors import ConfigError
from ..explain import (
    CAM_METHODS,
    FaithfulnessCurves,
    cam_grid,
    check_count,
    faithfulness,
    guided_grad_cam,
    pixel_relevance,
    smooth_guided_grad_cam,
)
from ..files import atomic_write_text, read_json
from ..models import get_cam_layers
from ..plots import plot_faithfulness, plot_sweep
from ..rundir import SWEEP_FILE
from ._rundir import LoadedRun

log = logging.getLogger(__name__)

SWEEP_IMAGES = 100  # class-balanced test images: 10 per CIFAR-10 class
PIXEL_METHODS = ("guided-gradcam", "smooth-guided-gradcam")  # pixel-level maps, ranked by |attribution|
SWEEP_METHODS = CAM_METHODS + PIXEL_METHODS
# The winner must beat the random ordering's ROAD gap by this much (in probability x fraction units, the
# area between the LeRF and MoRF curves) to be called more faithful than chance. A judgement like
# MIN_MEANINGFUL_DROP: small beside the gaps of a trained model (0.1-0.4 measured), large beside noise.
MIN_GAP_OVER_RANDOM = 0.02
SCORE_WORDS = (
    "ROAD gap: area under the least-relevant-first curve minus area under the most-relevant-first curve, with the "
    "removed pixels filled by noisy linear imputation so that no mask shape is left for the model to see. Higher "
    "is more faithful: removing what the map calls relevant hurts, removing what it calls irrelevant does not."
)


def check_sweep_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    if methods is None:
        return SWEEP_METHODS
    if isinstance(methods, str):
        raise ConfigError(f"methods = {methods!r}: give a list of method names, e.g. [{methods!r}].")
    out = []
    for m in methods:
        if m not in SWEEP_METHODS:
            raise ConfigError(f"methods: {m!r} is not a sweep method; choose from {', '.join(SWEEP_METHODS)}.")
        out.append(m)
    if not out:
        raise ConfigError(f"methods: give at least one of {', '.join(SWEEP_METHODS)}.")
    return tuple(dict.fromkeys(out))


@dataclass
class SweepRow:
    method: str
    layer: str
    grid: tuple[int, int]
    curves: FaithfulnessCurves
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "layer": self.layer,
            "grid": list(self.grid),
            "seconds": round(self.seconds, 3),
            **self.curves.as_dict(),
        }


@dataclass
class Sweep:
    """Every (method, layer) scored on the same images; `best` is the highest ROAD gap."""

    rows: list[SweepRow]
    random: FaithfulnessCurves
    indices: Tensor  # (n,) test-set indices of the sample
    seed: int
    best: SweepRow | None
    beats_random: bool
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": int(self.indices.numel()),
            "test_indices": [int(i) for i in self.indices],
            "seed": self.seed,
            "target": "predicted",
            "score": "road_gap",
            "score_words": SCORE_WORDS,
            "random": self.random.as_dict(),
            "rows": [r.as_dict() for r in self.rows],
            "best": {"method": self.best.method, "layer": self.best.layer} if self.best else None,
            "beats_random": self.beats_random,
            "min_gap_over_random": MIN_GAP_OVER_RANDOM,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _maps(run: LoadedRun, x: Tensor, targets: Tensor, method: str, layer: str, seed: int) -> Tensor:
    if method == "guided-gradcam":
        return pixel_relevance(guided_grad_cam(run.model, x, targets, layer=layer))
    return pixel_relevance(smooth_guided_grad_cam(run.model, x, targets, layer=layer, seed=seed))


def sweep_loaded(
    run: LoadedRun,
    logits: Tensor,
    labels: Tensor,
    *,
    images: int = SWEEP_IMAGES,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
) -> Sweep:
    """Score `methods` (default: every CAM method and the two pixel-level maps) at `layers` (default: the model's
    `cam_layers`, the outputs of its last three stages) on `images` class-balanced test images, for the class the
    model predicts (the maps explain what the model did, right or wrong)."""
    check_count(images, "images")
    if images < 1:
        raise ConfigError("images = 0: the sweep needs at least one test image.")
    methods = check_sweep_methods(methods)
    layers = _layers(run, layers)
    timings: dict[str, float] = {}
    idx = balanced_indices(labels, min(images, labels.numel()), run.dataset.num_classes)
    idx = torch.as_tensor(idx, dtype=torch.long)
    x = run.normalize(run.dataset.test_x[idx].to(run.device))
    targets = logits[idx].argmax(1).to(run.device)

    t0 = time.perf_counter()
    random = faithfulness(run.model, x, None, targets, seed=seed)
    timings["random baseline"] = time.perf_counter() - t0

    cam_methods = [m for m in methods if m not in PIXEL_METHODS]
    rows: list[SweepRow] = []
    if cam_methods:
        t0 = time.perf_counter()
        grid = cam_grid(run.model, x, {"predicted": targets}, methods=cam_methods, layers=layers)
        timings["maps: CAM methods x layers"] = time.perf_counter() - t0
        for (method, layer), res in grid.items():
            t0 = time.perf_counter()
            curves = faithfulness(run.model, x, res.maps["predicted"], targets, seed=seed)
            rows.append(SweepRow(method, layer, res.grid, curves, time.perf_counter() - t0))
    for method in (m for m in methods if m in PIXEL_METHODS):
        for layer in layers:
            t0 = time.perf_counter()
            maps = _maps(run, x, targets, method, layer, seed)
            cam_grid_size = tuple(int(s) for s in x.shape[-2:])
            curves = faithfulness(run.model, x, maps, targets, seed=seed)
            rows.append(SweepRow(method, layer, cam_grid_size, curves, time.perf_counter() - t0))
    timings["faithfulness curves"] = sum(r.seconds for r in rows)
    scored = [r for r in rows if math.isfinite(r.curves.road_gap)]
    best = max(scored, key=lambda r: (r.curves.road_gap, r.curves.score)) if scored else None
    beats = best is not None and best.curves.road_gap - random.road_gap >= MIN_GAP_OVER_RANDOM
    return Sweep(rows, random, idx, seed, best, beats, timings)


def _layers(run: LoadedRun, layers: Sequence[str] | None) -> tuple[str, ...]:
    if isinstance(layers, str):
        raise ConfigError(f"layers = {layers!r}: give a list of layer names, e.g. [{layers!r}].")
    return tuple(layers) if layers else get_cam_layers(run.model)


SWEEP_SETTINGS = ("images", "methods", "layers", "seed")  # the key's entries beside the checkpoint's prediction key


def _well_formed(data: Any) -> bool:
    """A cam_sweep.json this version can read: anything else (older, edited, cut short) counts as absent."""
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        return False
    rows, rnd = data.get("rows"), data.get("random")
    row_keys = (
        "method",
        "layer",
        "grid",
        "road_gap",
        "deletion_auc",
        "insertion_auc",
        "road_morf_auc",
        "road_lerf_auc",
    )
    return (
        isinstance(rows, list)
        and all(isinstance(r, dict) and all(k in r for k in row_keys) for r in rows)
        and isinstance(rnd, dict)
        and isinstance(rnd.get("road_gap"), (int, float))
        and isinstance(data.get("images"), int)
        and isinstance(data.get("min_gap_over_random"), (int, float))
    )


def sweep_key(run: LoadedRun, images: int, methods: Sequence[str], layers: Sequence[str], seed: int) -> dict:
    return {**run.prediction_key, "images": images, "methods": list(methods), "layers": list(layers), "seed": seed}


def read_sweep(run: LoadedRun) -> dict[str, Any] | None:
    """The cached sweep of this checkpoint and test set (any sample settings), or None."""
    data = read_json(run.folder.run_dir / SWEEP_FILE)
    if not _well_formed(data):
        return None
    # Both ways: a sweep of the EMA weights (whose key names them) is not one of the raw weights, and back.
    made_for = {k: v for k, v in data["key"].items() if k not in SWEEP_SETTINGS}
    return data if made_for == run.prediction_key else None


def sweep_figures(data: dict[str, Any]) -> dict[str, Figure]:
    """The heat map of every (method, layer) and the curves of the winner beside Grad-CAM's and the random baseline's,
    from a sweep's JSON (Sweep.as_dict or cam_sweep.json)."""
    rows = data["rows"]
    figs = {"cam_sweep.png": plot_sweep(rows, random=data["random"])}
    best = data.get("best")
    if best:
        pick = [r for r in rows if r["method"] == best["method"] and r["layer"] == best["layer"]]
        pick += [r for r in rows if r["method"] == "gradcam" and r not in pick][-1:]  # Grad-CAM at the deepest layer
        curves = {f"{r['method']} @ {r['layer']} ({'x'.join(map(str, r['grid']))})": r for r in pick}
        figs["cam_sweep_curves.png"] = plot_faithfulness(curves, random=data["random"])
    return figs


def save_sweep(run: LoadedRun, sweep: Sweep, key: dict[str, Any], path: Path | None = None) -> Path:
    path = path or run.folder.run_dir / SWEEP_FILE
    atomic_write_text(path, json.dumps({"key": key, **sweep.as_dict()}, indent=1) + "\n")
    return path


def sweep_run(
    run: LoadedRun,
    logits: Tensor,
    labels: Tensor,
    *,
    images: int = SWEEP_IMAGES,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    refresh: bool = False,
    save: bool = True,
) -> tuple[dict[str, Any], Sweep | None]:
    """The sweep's JSON (from cam_sweep.json when it fits these settings, else computed and, with `save`, cached)
    and the Sweep object when it was computed here (None when read from the cache)."""
    methods = check_sweep_methods(methods)
    layers = _layers(run, layers)
    key = sweep_key(run, images, methods, layers, seed)
    cached = None if refresh else read_json(run.folder.run_dir / SWEEP_FILE)
    if _well_formed(cached) and cached.get("key") == key:
        return cached, None
    sweep = sweep_loaded(run, logits, labels, images=images, methods=methods, layers=layers, seed=seed)
    data = {"key": key, **sweep.as_dict()}
    if save:
        try:
            save_sweep(run, sweep, key)
        except OSError as e:  # a read-only run folder still gets its sweep printed
            log.warning("cannot cache the CAM sweep in %s (%s)", run.folder.run_dir / SWEEP_FILE, e)
    return data, sweep


def _rank(row: dict[str, Any]) -> tuple[float, float]:
    """The sweep's order: ROAD gap, then insertion minus deletion (as sweep_loaded picks `best`)."""
    return (float(row["road_gap"]), float(row.get("score", float("-inf"))))


def choose_cam_from(data: dict[str, Any] | None) -> tuple[str, str | None, str | None]:
    """(method, layer, why) from a sweep's JSON (None or malformed: Grad-CAM at the registered layer, no reason to give).

    The gallery overlays a CAM, so it takes the best CAM row (a pixel-level winner is named in `why`); that row must
    beat the random ordering's ROAD gap by the sweep's margin, else Grad-CAM at the registered layer, said so."""
    if not _well_formed(data):
        return "gradcam", None, None
    assert data is not None
    rnd, margin, images = float(data["random"]["road_gap"]), float(data["min_gap_over_random"]), data["images"]
    cams = [r for r in data["rows"] if r["method"] not in PIXEL_METHODS and math.isfinite(float(r["road_gap"]))]
    if not cams:
        return "gradcam", None, None
    row = max(cams, key=_rank)
    best = data.get("best") or {}
    pixel = next(
        (r for r in data["rows"] if r["method"] == best.get("method") and r["layer"] == best.get("layer")), None
    )
    note = ""
    if pixel is not None and pixel["method"] in PIXEL_METHODS:
        note = (
            f" The most faithful map of the sweep is the pixel-level {pixel['method']} at {pixel['layer']} (ROAD gap "
            f"{pixel['road_gap']:.3f}); the gallery overlays a CAM, so it shows the best CAM (`vislab explain --guided` "
            "draws the pixel-level map)."
        )
    if row["road_gap"] - rnd < margin:
        return (
            "gradcam",
            None,
            f"The CAM sweep (cam_sweep.json, {images} test images) found no CAM method and layer whose ROAD gap beats the "
            f"random ordering's ({rnd:.3f}) by {margin:g}, so the gallery keeps Grad-CAM at the model's registered layer."
            + note,
        )
    return (
        row["method"],
        row["layer"],
        f"{row['method']} at {row['layer']} ({'x'.join(map(str, row['grid']))} grid) is the most faithful CAM of the "
        f"sweep (cam_sweep.json): ROAD gap {row['road_gap']:.3f} against {rnd:.3f} for a random ordering, on "
        f"{images} class-balanced test images." + note,
    )
