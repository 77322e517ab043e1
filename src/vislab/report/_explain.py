"""`explain`: misclassified gallery, Grad-CAM for the predicted and the actual class, and the deletion test."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..errors import ConfigError
from ..explain import (
    DELETE_FRACTION,
    cam_targets,
    check_count,
    check_method,
    check_order,
    check_target,
    deletion_test,
    guided_grad_cam,
    per_sample_loss,
    resolve_layer,
    select_misclassified,
    smooth_guided_grad_cam,
)
from ..files import atomic_write_text
from ..plots import plot_gradcam, plot_image_grid, plot_misclassified
from ._rundir import LoadedRun, load_run
from ._sweep import PIXEL_METHODS, SWEEP_IMAGES, choose_cam_from, read_sweep, sweep_figures, sweep_run

log = logging.getLogger(__name__)

FAITHFULNESS_SAMPLE = 200  # random test images for the typical deletion numbers (besides the gallery's)
EXPLAIN_FOLDER = "explain"
# Tiles per PNG that `explain_run` writes: a 409-image gallery in one figure was a 39,000-pixel-tall file that no
# viewer shows at a readable size; 50 tiles (10 rows of 5) still fit a screen.
PAGE_TILES = 50
# How each CAM method is written in figures and reports.
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "scorecam": "Score-CAM",
    "eigencam": "EigenCAM",
    "guided-gradcam": "guided Grad-CAM",
    "smooth-guided-gradcam": "SmoothGrad guided Grad-CAM",
}


@dataclass
class Explanation:
    """The gallery images, their Grad-CAM maps, deletion-test numbers and the figures drawn from them."""

    indices: Tensor  # (n,) test-set indices, in gallery order
    labels: Tensor  # (n,)
    preds: Tensor  # (n,)
    probs: Tensor  # (n,) probability of the predicted class
    order: str
    layer: str
    cams: dict[str, Tensor]  # "predicted" / "actual" -> (n, H, W)
    faithfulness: dict[str, dict[str, float]]  # "<images>/<target>" -> DeletionResult.as_dict()
    gallery: Figure | None
    gradcam: Figure | None
    guided: Figure | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # file stem ("misclassified", "gradcam", "guided_gradcam") -> its figures, one per page; the fields above
    # are each kind's first page (the whole figure when not paged, as in the report)
    pages: dict[str, list[Figure]] = field(default_factory=dict)
    p_true: Tensor | None = None  # (n,) probability of the true class: what a loss-ordered gallery is sorted by
    losses: Tensor | None = None  # (n,) per-image cross-entropy
    method: str = "gradcam"  # the CAM method of `cams` (vislab.explain.CAM_METHODS)
    grid: tuple[int, int] | None = None  # the maps' native resolution: the layer's output size


def layer_name(model: torch.nn.Module, layer: Any) -> str:
    module = resolve_layer(model, layer)
    base = getattr(model, "_orig_mod", model)
    return next((n for n, m in base.named_modules() if m is module), type(module).__name__)


def _cam_targets(target: str, preds: Tensor, labels: Tensor) -> dict[str, Tensor]:
    out = {}
    if target in ("predicted", "both"):
        out["predicted"] = preds
    if target in ("actual", "both"):
        out["actual"] = labels
    return out


def _faithfulness(
    run: LoadedRun,
    x: Tensor,
    cams: dict[str, Tensor],
    targets: dict[str, Tensor],
    grid: tuple[int, int],
    prefix: str,
    seed: int,
) -> dict[str, dict[str, float]]:
    return {
        f"{prefix}/{k}": deletion_test(
            run.model, x, cams[k], targets[k], fraction=DELETE_FRACTION, region_grid=grid, seed=seed
        ).as_dict()
        for k in cams
    }


def explain_loaded(
    run: LoadedRun,
    logits: Tensor,
    labels: Tensor,
    *,
    n: int = 20,
    order: str = "loss",
    target: str = "both",
    layer: str | None = None,
    seed: int = 0,
    faithfulness_n: int = FAITHFULNESS_SAMPLE,
    guided: bool = False,
    page_tiles: int | None = None,
    method: str = "gradcam",
    pixel_method: str = "guided-gradcam",
    pixel_layer: str | None = None,
) -> Explanation:
    """Everything `explain` shows, from a loaded run and its cached test-set predictions.

    `method`: the CAM method of the maps (vislab.explain.CAM_METHODS). `guided` adds the pixel-level map of the
    predicted class: `pixel_method` "guided-gradcam" or "smooth-guided-gradcam" at `pixel_layer` (default `layer`).
    `page_tiles` splits each figure into pages of at most that many image tiles (None: one figure each).
    """
    if pixel_method not in ("guided-gradcam", "smooth-guided-gradcam"):
        raise ConfigError(
            f"pixel_method = {pixel_method!r} is not a pixel-level map; choose guided-gradcam or smooth-guided-gradcam."
        )
    check_method(method)
    check_order(order)
    check_target(target)
    check_count(n, "n")
    check_count(faithfulness_n, "faithfulness_n")
    timings: dict[str, float] = {}
    name = layer_name(run.model, layer)
    ds, classes = run.dataset, run.classes

    t0 = time.perf_counter()
    idx = select_misclassified(logits, labels, n, order, seed)
    probs_all = logits[idx].float().softmax(1)
    preds, probs, y = probs_all.argmax(1), probs_all.amax(1), labels[idx]
    p_true = probs_all.gather(1, y[:, None])[:, 0]  # (n,)
    losses = per_sample_loss(logits[idx].float(), y)  # (n,) the gallery's sort key under order="loss"
    images = ds.test_x[idx]  # (n, C, H, W) uint8
    pages: dict[str, list[Figure]] = {}

    def paged(count: int, tiles_per_image: int) -> list[slice]:
        per_page = count if page_tiles is None else max(1, page_tiles // tiles_per_image)
        return [slice(i, i + per_page) for i in range(0, count, max(per_page, 1))]

    if idx.numel():
        pages["misclassified"] = [
            plot_misclassified(
                images[sl], y[sl], preds[sl], probs[sl], classes, true_probs=p_true[sl], losses=losses[sl]
            )
            for sl in paged(len(idx), 1)
        ]
    timings["gallery"] = time.perf_counter() - t0

    cams: dict[str, Tensor] = {}
    faith: dict[str, dict[str, float]] = {}
    grid: tuple[int, int] | None = None
    if idx.numel():
        t0 = time.perf_counter()
        x = run.normalize(images.to(run.device))
        targets = _cam_targets(target, preds.to(run.device), y.to(run.device))
        res = cam_targets(run.model, x, targets, method=method, layer=layer)
        cams = {k: v.cpu() for k, v in res.maps.items()}
        grid = res.grid
        timings[f"{METHOD_NAMES[method]} maps"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pages["gradcam"] = [
            plot_gradcam(
                images[sl],
                {k: v[sl] for k, v in cams.items()},
                y[sl],
                preds[sl],
                probs[sl],
                classes,
                true_probs=p_true[sl],
                method=METHOD_NAMES.get(method, method),
                grid=grid,
            )
            for sl in paged(len(idx), 1 + len(cams))
        ]
        timings[f"{METHOD_NAMES[method]} plot"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        faith.update(_faithfulness(run, x, cams, {k: v.cpu() for k, v in targets.items()}, res.grid, "gallery", seed))
        timings["deletion test (gallery)"] = time.perf_counter() - t0
        if guided:
            t0 = time.perf_counter()
            pixel_layer = pixel_layer or layer
            if pixel_method == "smooth-guided-gradcam":
                attr = smooth_guided_grad_cam(run.model, x, preds, layer=pixel_layer, seed=seed).cpu()
            else:
                attr = guided_grad_cam(run.model, x, preds, layer=pixel_layer).cpu()  # (n, C, H, W)
            # signed attributions shown as colour around mid-grey, each image scaled to its own largest |value|
            scale = attr.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            vis = ((attr / scale) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
            cam_grid_size = (
                grid
                if layer_name(run.model, pixel_layer) == name
                else cam_targets(run.model, x[:1], {"p": preds[:1]}, layer=pixel_layer, upsample=False).grid
            )  # the gallery's grid when the pixel map multiplies the same layer's CAM: no extra forward
            head = f"{METHOD_NAMES[pixel_method]}\n{layer_name(run.model, pixel_layer)} CAM {cam_grid_size[0]}x{cam_grid_size[1]}"
            titles = [f"{head}\npred: {classes[int(p)]}" for p in preds]
            pages["guided_gradcam"] = [plot_image_grid(vis[sl], titles[sl], ncols=5) for sl in paged(len(idx), 1)]
            timings["guided grad-cam"] = time.perf_counter() - t0

    if faithfulness_n:
        # The gallery is the model's worst cases; a random sample shows how faithful the maps are in general.
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed)
        sample = torch.randperm(labels.numel(), generator=g)[:faithfulness_n]
        xs = run.normalize(ds.test_x[sample].to(run.device))
        sample_targets = {"predicted": logits[sample].argmax(1).to(run.device)}
        sample_res = cam_targets(run.model, xs, sample_targets, method=method, layer=layer)
        grid = grid or sample_res.grid
        faith.update(
            _faithfulness(run, xs, sample_res.maps, sample_targets, sample_res.grid, "random test images", seed)
        )
        timings["deletion test (sample)"] = time.perf_counter() - t0
    first = {k: v[0] for k, v in pages.items()}
    return Explanation(
        indices=idx,
        labels=y,
        preds=preds,
        probs=probs,
        order=order,
        layer=name,
        cams=cams,
        faithfulness=faith,
        gallery=first.get("misclassified"),
        gradcam=first.get("gradcam"),
        guided=first.get("guided_gradcam"),
        timings=timings,
        pages=pages,
        p_true=p_true,
        losses=losses,
        method=method,
        grid=grid,
    )


@dataclass
class ExplainResult:
    """What `explain_run` wrote, and the numbers behind it."""

    out_dir: Path
    files: list[Path]
    explanation: Explanation
    timings: dict[str, float]
    sweep: dict[str, Any] | None = None  # the sweep's table (cam_sweep.json's content) when `sweep` was asked
    why: str | None = None  # why the gallery's CAM method and layer were chosen, when they were not given


def save_figure(fig: Figure, path: Path, dpi: int | None = None) -> Path:
    fig.savefig(path, format="png", dpi=dpi or fig.dpi)
    return path


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def explain_run(
    run_dir: str | Path,
    *,
    n: int = 20,
    target: str = "both",
    layer: str | None = None,
    order: str = "loss",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    data_root: str | Path | None = None,
    weights: str | None = None,
    out: str | Path | None = None,
    guided: bool = False,
    faithfulness_n: int = FAITHFULNESS_SAMPLE,
    method: str | None = None,
    sweep: bool = False,
    sweep_images: int = SWEEP_IMAGES,
    refresh: bool = False,
) -> ExplainResult:
    """Misclassified gallery + CAM maps (predicted / actual / both) of a run, written to `out` (default RUN_DIR/explain).

    `method` / `layer`: the CAM (default: the most faithful combination of a fitting cam_sweep.json, else Grad-CAM
    at the model's registered layer). `sweep`: first score every CAM method at every candidate layer on
    `sweep_images` test images (vislab.report.sweep_loaded; cached in RUN_DIR/cam_sweep.json, `refresh` recomputes)
    and draw the gallery with the winner. Files: misclassified.png, gradcam.png, guided_gradcam.png (with `guided`),
    cam_sweep.png and cam_sweep_curves.png (with `sweep`) and explain.json (indices, classes, probabilities,
    deletion-test numbers, the sweep's table, timings). A figure of more than PAGE_TILES image tiles is split into
    pages: misclassified-1.png, misclassified-2.png, ... With `out` outside the run folder, nothing is written into
    the run folder (not even the predictions cache).
    """
    # Checked before the data and the model are loaded, which can take minutes.
    if method is not None:
        check_method(method)
    if sweep and (isinstance(sweep_images, bool) or not isinstance(sweep_images, int) or sweep_images < 1):
        raise ConfigError(f"sweep_images = {sweep_images!r}: the sweep needs a whole number of test images >= 1.")
    check_order(order)
    check_target(target)
    check_count(n, "n")
    check_count(faithfulness_n, "faithfulness_n")
    started = time.perf_counter()
    run = load_run(run_dir, checkpoint=checkpoint, device=device, data_root=data_root, weights=weights)
    timings = dict(run.timings)
    out_dir = Path(out) if out is not None else run.folder.run_dir / EXPLAIN_FOLDER
    t0 = time.perf_counter()
    inside = _inside(out_dir, run.folder.run_dir)
    logits, labels, cached = run.predictions(save=inside)
    timings["predictions (cached)" if cached else "predictions"] = time.perf_counter() - t0
    sweep_data, swept = None, None
    if sweep:
        t0 = time.perf_counter()
        sweep_data, swept = sweep_run(run, logits, labels, images=sweep_images, seed=seed, refresh=refresh, save=inside)
        timings["CAM sweep (cached)" if swept is None else "CAM sweep"] = time.perf_counter() - t0
    if method is None and layer is None:
        sweep_data = sweep_data if sweep_data is not None else read_sweep(run)  # cam_sweep.json read once
        method, layer, why = choose_cam_from(sweep_data)
    else:
        method, why = method or "gradcam", None
    # A pixel-level winner of the sweep is drawn too (the gallery's overlays take the best CAM).
    best = (sweep_data or {}).get("best") or {}
    pixel = {}
    if best.get("method") in PIXEL_METHODS and why is not None:
        guided, pixel = True, {"pixel_method": best["method"], "pixel_layer": best["layer"]}
    ex = explain_loaded(
        run,
        logits,
        labels,
        n=n,
        order=order,
        target=target,
        layer=layer,
        seed=seed,
        faithfulness_n=faithfulness_n,
        guided=guided,
        page_tiles=PAGE_TILES,
        method=method,
        **pixel,
    )
    timings.update(ex.timings)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    files = []
    if sweep_data is not None:
        for name, fig in sweep_figures(sweep_data).items():
            files.append(save_figure(fig, out_dir / name))
    for stem, figs in ex.pages.items():
        names = [f"{stem}.png"] if len(figs) == 1 else [f"{stem}-{i}.png" for i in range(1, len(figs) + 1)]
        files.extend(save_figure(fig, out_dir / name) for fig, name in zip(figs, names))
    timings["write files"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    classes = run.classes
    info = {
        "run_dir": str(run.folder.run_dir),
        "checkpoint": str(run.checkpoint),
        "checkpoint_epoch": run.checkpoint_epoch,
        "order": order,
        "target": target,
        "method": ex.method,
        "layer": ex.layer,
        "grid": list(ex.grid) if ex.grid else None,
        "why": why,
        "images": [
            {
                "test_index": int(i),
                "true": classes[int(t)],
                "predicted": classes[int(p)],
                "p_predicted": round(float(q), 4),
                "p_true": round(float(pt), 4),
                "loss": round(float(ls), 4),
            }
            for i, t, p, q, pt, ls in zip(ex.indices, ex.labels, ex.preds, ex.probs, ex.p_true, ex.losses)
        ],
        "faithfulness": ex.faithfulness,
        "sweep": {k: v for k, v in sweep_data.items() if k != "test_indices"} if sweep_data else None,
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    atomic_write_text(out_dir / "explain.json", json.dumps(info, indent=1) + "\n")
    files.append(out_dir / "explain.json")
    return ExplainResult(out_dir=out_dir, files=files, explanation=ex, timings=timings, sweep=sweep_data, why=why)
