"""`vislab report`: one Markdown + one self-contained HTML page that explains a finished or interrupted run."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..explain import (
    DELETE_FRACTION,
    MIN_MEANINGFUL_DROP,
    RANDOM_REPEATS,
    check_count,
    check_method,
    check_order,
    check_target,
    check_tta,
    confusion_matrix,
    most_confused,
    per_class_accuracy,
    per_sample_loss,
)
from ..files import atomic_write_text
from ..plots import (
    denormalize,
    plot_augmented,
    plot_confidence_histogram,
    plot_confusion_matrix,
    plot_curves,
    plot_gradcam,
    plot_lr,
    plot_misclassified,
    plot_per_class_accuracy,
    plot_reliability,
    plot_robustness,
)
from ..version import __version__
from ._explain import FAITHFULNESS_SAMPLE, METHOD_NAMES, Explanation, explain_loaded
from ._render import Document
from ._rundir import LoadedRun, RunFolder, load_run
from ._sweep import SCORE_WORDS, choose_cam_from, read_sweep, sweep_figures
from ._trust import REPORT_ROBUST_IMAGES, CalibrationResult, Robustness, calibrate_run, read_robustness, robustness_run

log = logging.getLogger(__name__)

REPORT_MD, REPORT_HTML, REPORT_JSON, REPORT_IMAGES = "report.md", "report.html", "report.json", "report"
PREVIEW_IMAGES = 16
MOST_CONFUSED = 10
SUMMARY_DEPTH = 2
ORDER_WORDS = {
    "loss": "by loss (-ln p(true), the last line of each tile), highest first: the top losses, lowest p(true) first",
    "confidence": "by p(predicted), the confidence in the wrong class (first line of each tile), highest first",
    "random": "at random",
}
TARGET_WORDS = {"predicted": "the predicted class", "actual": "the actual class"}


@dataclass
class Report:
    """Paths of the written report and the numbers shown in it (also saved as report.json)."""

    markdown: Path
    html: Path
    numbers: dict[str, Any]
    timings: dict[str, float]


def _pct(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else "n/a"


def _metric_table(folder: RunFolder) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the best and final epochs; train cross-entropy and validation columns when logged."""
    best, final = folder.best_row(), folder.final_row()
    has_ce = any(r and "train_ce" in r for r in (best, final))
    has_val = any(r and "val_loss" in r for r in (best, final))
    mixed = any(r and r.get("train_mixed") for r in (best, final))
    header = (
        ["", "epoch", "train objective" if has_ce else "train loss"]
        + (["train CE"] if has_ce else [])
        + ["train acc on mixed data (%)" if mixed else "train acc (%)"]
    )
    header += (["val loss", "val acc (%)"] if has_val else []) + ["test loss", "test acc (%)", "lr", "epoch seconds"]
    rows = []
    for label, r in (("best", best), ("final", final)):
        if r:
            row = (
                [label, int(r["epoch"]), f"{r['train_loss']:.4f}"]
                + ([f"{r['train_ce']:.4f}"] if has_ce else [])
                + [_pct(r["train_acc"])]
            )
            if has_val:
                row += [f"{r['val_loss']:.4f}", _pct(r["val_acc"])]
            row += [
                f"{r['test_loss']:.4f}",
                _pct(r["test_acc"]),
                f"{r['lr']:.3g}" if r.get("lr") is not None else "",
                f"{r.get('seconds', 0.0):.1f}",
            ]
            rows.append(row)
    return header, rows


def _best_note(folder: RunFolder) -> str | None:
    """Why 'best' is an optimistic figure when the test split chose it."""
    metric = folder.config.trainer.checkpoint_metric
    best, final = folder.best_row(), folder.final_row()
    if not (best and final) or not metric.startswith("test_"):
        return None
    return (
        f"The best epoch ({int(best['epoch'])}, {_pct(best['test_acc'])}%) was chosen by {metric} on the test split itself, so its "
        f"test figure is optimistic: an unbiased estimate is the final epoch's, {_pct(final['test_acc'])}%. Set data.val_size "
        "and trainer.checkpoint_metric=val_acc (or val_loss) to choose on a validation split instead."
    )


def _peak(s, epochs: int) -> str:
    if s.peak_epoch is not None:
        return f"peak at epoch {s.peak_epoch:g} of {epochs}"
    frac = 0.3 if s.peak_fraction is None else s.peak_fraction
    return f"peak at {frac:.0%} of the run (epoch {frac * epochs:g} of {epochs})"


def _momentum(o, s) -> str:
    """The momentum (SGD) or beta1 (Adam/AdamW) training really used: OneCycle may cycle it and override the optimizer's."""
    name = "momentum" if o.name == "sgd" else "beta1"
    nesterov = " nesterov" if o.name == "sgd" and o.nesterov else ""
    if s.name == "onecycle" and s.cycle_momentum:
        return f"{name} cycled by OneCycle {s.max_momentum:g} -> {s.base_momentum:g} at the peak -> {s.max_momentum:g}{nesterov}"
    return f"{name} {o.momentum if o.name == 'sgd' else o.betas[0]:g}{nesterov}"


def _config_rows(run: LoadedRun, params: int) -> list[list[str]]:
    c, ds = run.folder.config, run.dataset
    a, m, o, s, t = c.augment, c.model, c.optim, c.sched, c.trainer
    h, w = ds.image_size
    aug = [
        f"pad {a.crop_pad} ({a.pad_mode}) + crop" if a.crop_pad else "",
        (f"flip p={a.flip_p:g}" if a.flip == "random" else "alternating flip (airbench)") if a.flip_p else "",
        f"rotate ±{a.rotate_deg:g}°" if a.rotate_deg else "",
        f"cutout {a.cutout_size}x{a.cutout_size} p={a.cutout_p:g}" if a.cutout_size else "",
        "TrivialAugment (wide)" if a.trivial_augment else "",
        f"MixUp alpha {a.mixup_alpha:g}" if a.mixup_alpha else "",
        f"CutMix alpha {a.cutmix_alpha:g}" if a.cutmix_alpha else "",
        f"no mixing in the last {a.mix_off_epochs} epochs"
        if a.mix_off_epochs and (a.mixup_alpha or a.cutmix_alpha)
        else "",
    ]
    sched = s.name + (
        f", max_lr {s.max_lr if s.max_lr is not None else o.lr}, {_peak(s, t.epochs)}, {s.anneal}"
        if s.name == "onecycle"
        else ""
    )
    return [
        [
            "data",
            f"{ds.name} ({c.data.root or 'cache'}), {ds.train_x.shape[0]:,} train / {ds.test_x.shape[0]:,} test images, {h}x{w}, {ds.num_classes} classes",
        ],
        [
            "model",
            f"{m.name}, norm {m.norm}, width {m.width:g}"
            + (f", logit scale {m.logit_scale:g}" if m.logit_scale else "")
            + f", {params:,} parameters",
        ],
        [
            "optimizer",
            f"{o.name}, lr {o.lr}, weight decay {o.weight_decay:g}, {_momentum(o, s)}"
            + (f", label smoothing {o.label_smoothing:g}" if o.label_smoothing else ""),
        ],
        ["schedule", sched],
        ["augmentation", f"{a.backend} backend: " + (", ".join(x for x in aug if x) or "none")],
        [
            "trainer",
            f"{t.epochs} epochs, batch {t.batch_size}, precision {t.precision}, seed {t.seed}, best by {t.checkpoint_metric}",
        ],
    ]


def _status(folder: RunFolder) -> str:
    done, total = len(folder.history), folder.config.trainer.epochs
    if folder.finished:
        return f"finished ({done} of {total} epochs)"
    return f"interrupted after {done} of {total} epochs"


def _preview(run: LoadedRun, n: int, seed: int) -> Any:
    from ..augment import TensorAugment
    from ..build import augment_spec

    ds = run.dataset
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(ds.train_x.shape[0], generator=g)[:n]
    aug = TensorAugment(augment_spec(run.folder.config), ds.mean, ds.std)
    return plot_augmented(denormalize(aug(ds.train_x[idx], g), ds.mean, ds.std), ds.train_y[idx], ds.classes, ncols=8)


def _faithfulness_rows(ex: Explanation) -> list[list[Any]]:
    rows = []
    for key, d in ex.faithfulness.items():
        images, target = key.split("/")
        wins = f"{100 * d['win_rate']:.0f}%"
        if d.get("drops_too_small"):
            wins += f" (not meaningful: drops < {MIN_MEANINGFUL_DROP:g})"
        rows.append(
            [
                images,
                TARGET_WORDS.get(target, target),
                d["images"],
                f"{d['p_orig']:.3f}",
                f"{d['cam_drop']:.3f}",
                f"{d['region_drop']:.3f}",
                f"{d['random_drop']:.3f}",
                wins,
            ]
        )
    return rows


def _sweep_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = sorted(data["rows"], key=lambda r: -r["road_gap"])
    out = [
        [
            METHOD_NAMES.get(r["method"], r["method"]),
            r["layer"],
            "x".join(map(str, r["grid"])),
            f"{r['deletion_auc']:.3f}",
            f"{r['insertion_auc']:.3f}",
            f"{r['road_morf_auc']:.3f}",
            f"{r['road_lerf_auc']:.3f}",
            f"**{r['road_gap']:.3f}**" if r is rows[0] else f"{r['road_gap']:.3f}",
        ]
        for r in rows
    ]
    rnd = data["random"]
    out.append(
        [
            "random ordering (baseline)",
            "-",
            "-",
            f"{rnd['deletion_auc']:.3f}",
            f"{rnd['insertion_auc']:.3f}",
            f"{rnd['road_morf_auc']:.3f}",
            f"{rnd['road_lerf_auc']:.3f}",
            f"{rnd['road_gap']:.3f}",
        ]
    )
    return out


def _sweep_section(doc: Document, data: dict[str, Any] | None, why: str | None, chosen: str | None) -> None:
    """Which CAM method and layer are most faithful, from the run's cam_sweep.json (vislab explain --sweep)."""
    doc.heading("Which CAM method and layer (sweep)")
    if not data:
        doc.para(
            "No CAM sweep for this checkpoint yet: `vislab explain RUN_DIR --sweep` scores every CAM method (Grad-CAM, "
            "Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Score-CAM, EigenCAM, and the pixel-level guided Grad-CAM with "
            "and without SmoothGrad) at each of the model's last three stages by deletion, insertion and ROAD curves "
            "against a random baseline, and the next report draws its maps with the most faithful one.",
            note=True,
        )
        return
    doc.para(
        f"Every method at every candidate layer, scored on the same {data['images']} class-balanced test images for "
        f"the predicted class (seed {data['seed']}). Deletion: area under p(target) as the most relevant pixels are "
        "set to the baseline, in steps (lower = more faithful); insertion: as they are revealed on the baseline "
        f"(higher = more faithful). {SCORE_WORDS} Pixel-level maps (guided Grad-CAM, with SmoothGrad) rank pixels by "
        "the magnitude of their attribution; their grid is the image's. The last row orders pixels at random."
    )
    doc.table(
        ["method", "layer", "grid", "deletion AUC", "insertion AUC", "ROAD MoRF AUC", "ROAD LeRF AUC", "ROAD gap"],
        _sweep_rows(data),
    )
    figs = sweep_figures(data)
    for name, fig in figs.items():
        doc.image(name, fig, "CAM sweep" if name == "cam_sweep.png" else "faithfulness curves")
    if chosen is not None:
        doc.para(f"The maps above are {chosen}, as asked (--method / --layer), not the sweep's choice.", note=True)


def _gallery_numbers(logits: torch.Tensor, ex: Explanation) -> tuple[torch.Tensor, torch.Tensor]:
    """p(true class) and the loss of each gallery image, for the tiles: what a loss-ordered gallery is sorted by."""
    shown = logits[ex.indices].float()
    return shown.softmax(1).gather(1, ex.labels.long()[:, None])[:, 0], per_sample_loss(shown, ex.labels)


def _calibration_rows(cal: CalibrationResult) -> list[list[str]]:
    rows = []
    pairs = [("as trained (T = 1)", cal.plain)]
    if cal.scaled is not None and cal.temperature is not None:
        pairs.append((f"temperature T = {cal.temperature:.3g}", cal.scaled))
    for label, c in pairs:
        if c is not None:
            rows.append(
                [label, _pct(c.accuracy), f"{c.nll:.4f}", f"{c.brier:.4f}", f"{100 * c.ece:.2f}", f"{100 * c.mce:.2f}"]
            )
    return rows


def _calibration_section(doc: Document, cal: CalibrationResult, logits: torch.Tensor, labels: torch.Tensor) -> None:
    doc.heading("Calibration")
    bins = len(cal.plain.bins)
    doc.para(
        f"When the model says p = 0.9, is it right 9 times in 10? Test split, {cal.plain.images:,} images. NLL: mean -ln "
        "p(true class); Brier: mean squared distance of the probability vector from the one-hot label (0..2); ECE: the "
        f"gap between accuracy and mean confidence in {bins} equal-width confidence bins, weighted by the bins' image "
        "counts; MCE: the largest gap of a non-empty bin (ECE and MCE in percentage points)."
    )
    doc.table(["predictions", "accuracy (%)", "NLL", "Brier", "ECE (pp)", "MCE (pp)"], _calibration_rows(cal))
    if cal.temperature is not None:
        before, after = cal.val_nll or (float("nan"), float("nan"))
        doc.para(
            f"Temperature scaling: the logits are divided by T = {cal.temperature:.4g}, fitted to minimise the NLL on the "
            f"validation split ({cal.val_images:,} training images held out by data.val_size; validation NLL {before:.4f} -> "
            f"{after:.4f}), never on the test split. T > 1 softens over-confident predictions, T < 1 sharpens "
            "under-confident ones; the top-1 class, and so the accuracy, is unchanged. `vislab predict` uses T."
        )
    if cal.note:
        doc.para(cal.note, note=True)
    shown = cal.scaled or cal.plain
    which = f"at T = {cal.temperature:.3g}" if cal.scaled else "as trained"
    doc.image(
        "reliability.png",
        plot_reliability(shown.bins, title=f"reliability, {which} ({bins} bins; numbers: images per bin)"),
        f"reliability diagram ({which})",
    )
    if cal.scaled is not None:
        doc.image(
            "reliability_uncalibrated.png",
            plot_reliability(cal.plain.bins, title=f"reliability diagram, as trained ({bins} bins)"),
            "reliability diagram (as trained, T = 1)",
        )
    z = logits.float() / (cal.temperature or 1.0)
    conf, pred = z.softmax(1).max(1)
    doc.image(
        "confidence.png",
        plot_confidence_histogram(conf, pred == labels),
        f"confidence of right and wrong test predictions ({which})",
    )


def _robustness_section(doc: Document, rob: Robustness | None, run_dir: Path, test_images: int) -> None:
    doc.heading("Robustness to corruptions")
    if rob is None:
        doc.para(f"Not computed (robust_images = 0). `vislab robust {run_dir}` computes it.", note=True)
        return
    doc.para(
        f"Test accuracy under {len(rob.corruptions)} corruptions at severities {', '.join(map(str, rob.severities))} "
        f"({rob.source}; the definitions and parameters of CIFAR-10-C, Hendrycks & Dietterich 2019), on {rob.images:,} "
        f"test images (seed {rob.seed}). Clean accuracy on the same images {rob.clean_acc:.2f}%; mean corruption accuracy "
        f"{rob.mean_corruption_acc:.2f}%, a relative drop of {100 * rob.relative_drop:.1f}% of the clean accuracy."
    )
    doc.table(
        ["corruption", *(f"severity {s}" for s in rob.severities), "mean"],
        [
            [n.replace("_", " "), *(f"{a:.1f}" for a in accs), f"{sum(accs) / len(accs):.1f}"]
            for n, accs in rob.accuracy.items()
        ],
    )
    doc.image(
        "robustness.png",
        plot_robustness(rob.accuracy, rob.severities, clean_acc=rob.clean_acc),
        "test accuracy per corruption and severity",
    )
    if rob.images < test_images:
        doc.para(
            f"A sample of {rob.images:,} test images (the first of each class); `vislab robust {run_dir}` runs the whole test "
            "set and the report then shows that.",
            note=True,
        )


def _tta_section(
    doc: Document,
    tta: str,
    cal: CalibrationResult,
    cal_t: CalibrationResult,
    rob: Robustness | None,
    rob_t: Robustness | None,
) -> dict[str, Any]:
    doc.heading(f"Test-time augmentation ({tta})")
    views = (
        "the image and its mirror"
        if tta == "flip"
        else "six views (mirrored or not, unshifted or shifted one pixel up-left or down-right)"
    )
    doc.para(
        f"The same weights, predicting with the mean logits of {views}, as airbench94 weights them. These figures stand "
        "beside the plain ones above and never replace them: metrics.jsonl, the gallery and the confusion matrix use "
        "plain predictions."
    )
    rows, numbers = [], {"mode": tta}
    for label, c, r in (("plain", cal, rob), (f"TTA ({tta})", cal_t, rob_t)):
        scaled = f"{100 * c.scaled.ece:.2f} (T = {c.temperature:.3g})" if c.scaled is not None else "n/a"
        mca = f"{r.mean_corruption_acc:.2f}" if r is not None else "n/a"
        rows.append([label, _pct(c.plain.accuracy), f"{c.plain.nll:.4f}", f"{100 * c.plain.ece:.2f}", scaled, mca])
        key = "plain" if label == "plain" else "tta"
        numbers[key] = {
            "test_acc": c.plain.accuracy,
            "nll": c.plain.nll,
            "ece": c.plain.ece,
            "temperature": c.temperature,
            "ece_at_temperature": c.scaled.ece if c.scaled else None,
            "mean_corruption_acc": r.mean_corruption_acc if r is not None else None,
        }
    doc.table(
        ["predictions", "test acc (%)", "NLL", "ECE (pp)", "ECE at its own T (pp)", "mean corruption acc (%)"], rows
    )
    return numbers


def make_report(
    run_dir: str | Path,
    *,
    n: int = 20,
    order: str = "loss",
    target: str = "both",
    layer: str | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    data_root: str | Path | None = None,
    dataset: Any = None,
    preview: int = PREVIEW_IMAGES,
    faithfulness_n: int = FAITHFULNESS_SAMPLE,
    robust_images: int | None = REPORT_ROBUST_IMAGES,
    weights: str | None = None,
    tta: str | None = None,
    method: str | None = None,
) -> Report:
    """Write report.md (PNGs in report/), a self-contained report.html and report.json into the run folder.

    `method` / `layer`: the gallery's CAM (default: the most faithful combination of the run's cam_sweep.json,
    written by `vislab explain --sweep`, when it fits the checkpoint; else Grad-CAM at the registered layer).

    Sections: run status and metrics, config, model summary, curves, LR (and the LR range test when it ran),
    augmented training images, per-class accuracy, confusion matrix and most-confused pairs, calibration (with
    a temperature fitted on the validation split when the run has one), robustness to corruptions, the
    misclassified gallery, Grad-CAM for the predicted and the actual class, the deletion test and the time each
    stage took. `robust_images`: the class-balanced test sample the corruptions run on when the run folder holds
    no robustness.json for this checkpoint yet (None: the whole test set; 0: skip the section).
    """
    if method is not None:
        check_method(method)
    check_order(order)
    check_target(target)
    check_count(n, "n")
    check_count(preview, "preview")
    started = time.perf_counter()
    run = load_run(run_dir, checkpoint=checkpoint, device=device, data_root=data_root, dataset=dataset, weights=weights)
    folder, ds, classes = run.folder, run.dataset, run.classes
    timings = dict(run.timings)

    def stage(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0

    t0 = time.perf_counter()
    logits, labels, cached = run.predictions()
    stage("predictions (cached)" if cached else "predictions", t0)

    t0 = time.perf_counter()
    preds = logits.argmax(1)
    cm = confusion_matrix(preds, labels, ds.num_classes)
    acc = per_class_accuracy(cm)
    overall = 100.0 * float((preds == labels).float().mean()) if labels.numel() else float("nan")
    pairs = most_confused(cm, MOST_CONFUSED)
    stage("confusion matrix", t0)

    sweep = read_sweep(run)
    asked = None if method is None and layer is None else (method, layer)
    if method is None and layer is None:
        method, layer, why = choose_cam_from(sweep)
    else:
        method, why = method or "gradcam", None
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
        method=method,
    )
    timings.update(ex.timings)

    doc = Document(f"vislab report: {folder.name}")
    ckpt_epoch = f"epoch {run.checkpoint_epoch}" if run.checkpoint_epoch >= 0 else "epoch unknown"
    doc.para(
        f"Run folder {folder.run_dir}; {_status(folder)}. Gallery, Grad-CAM and test-set numbers below come from "
        f"checkpoints/{run.checkpoint.name} ({ckpt_epoch}"
        + (", the moving average (EMA) of its weights" if run.weights == "ema" else "")
        + f"). Written by vislab {__version__} on {datetime.now():%Y-%m-%d %H:%M}."
    )

    t0 = time.perf_counter()
    doc.heading("Metrics")
    header, rows = _metric_table(folder)
    if rows:
        doc.table(header, rows)
        if "train CE" in header:
            doc.para(
                "train objective: what was minimised (cross-entropy with label smoothing, plus the L1 term); train CE: the "
                "plain cross-entropy of the same training batches, comparable with the validation and test loss.",
                note=True,
            )
        note = _best_note(folder)
        if note:
            doc.para(note, note=True)
        ema_rows = [
            (k, r) for k, r in (("best", folder.best_row()), ("final", folder.final_row())) if r and "ema_test_acc" in r
        ]
        if ema_rows:
            doc.para(
                f"The run kept an exponential moving average of its weights (decay {folder.config.trainer.ema_decay:g}), evaluated "
                "beside them every epoch: "
                + "; ".join(
                    f"{k} epoch {int(r['epoch'])}: test accuracy {_pct(r['ema_test_acc'])}% with the EMA weights vs "
                    f"{_pct(r['test_acc'])}% with the trained weights"
                    for k, r in ema_rows
                )
                + f". The figures below use the {'EMA' if run.weights == 'ema' else 'trained (raw)'} weights (`--weights` chooses)."
            )
    else:
        doc.para("metrics.jsonl holds no finished epoch.", note=True)
    facts = [
        f"test accuracy of {run.checkpoint.name} recomputed from the cached predictions: {_pct(overall)}% on {labels.numel():,} images"
    ]
    if folder.summary:
        s = folder.summary
        facts.append(
            f"training time {s.get('train_seconds', 0):.0f} s (wall {s.get('wall_seconds', 0):.0f} s) on {s.get('device_name', s.get('device', '?'))}, "
            f"{s.get('precision', '?')}, channels_last={s.get('channels_last', '?')}"
        )
    doc.para("; ".join(facts) + ".")

    params = sum(p.numel() for p in run.model.parameters())
    doc.heading("Configuration")
    doc.table(["section", "settings"], _config_rows(run, params))
    doc.code(folder.config_text, "config.yaml (resolved, loadable as a recipe)")

    from ..models import model_summary

    doc.heading("Model")
    h, w = ds.image_size
    doc.para(f"{folder.config.model.name}: {params:,} parameters; Grad-CAM layer: {ex.layer}.")
    doc.code(
        model_summary(run.model, (1, ds.train_x.shape[1], h, w), depth=SUMMARY_DEPTH, device=run.device),
        "layer table (torchinfo)",
    )
    stage("summary tables", t0)

    t0 = time.perf_counter()
    doc.heading("Training curves")
    if folder.history:
        doc.image("curves.png", plot_curves(folder.history), "train and test loss and accuracy per epoch")
    doc.heading("Learning rate", 3)
    if folder.lr_steps:
        doc.image("lr.png", plot_lr(folder.lr_steps, history=folder.history), "learning rate per optimizer step")
    else:
        doc.para("lr_steps.json is missing or empty.", note=True)
    lr_png = folder.run_dir / "lr_find.png"
    if lr_png.is_file() or folder.lr_find:
        doc.heading("LR range test", 3)
        chosen = (folder.lr_find or {}).get("chosen") if isinstance(folder.lr_find, dict) else None
        if isinstance(chosen, dict) and chosen.get("lr") is not None:
            doc.para(f"Suggested learning rate: {chosen['lr']:.3g} ({chosen.get('method', '?')}).")
        elif isinstance(folder.lr_find, dict) and folder.lr_find.get("error"):
            doc.para(f"No suggestion: {folder.lr_find['error']}", note=True)
        if lr_png.is_file():
            doc.image("lr_find.png", lr_png.read_bytes(), "LR range test")
    stage("curves", t0)

    if preview:
        t0 = time.perf_counter()
        doc.heading("What the model sees")
        doc.para(
            f"{min(preview, ds.train_x.shape[0])} training images after the run's augmentation (tensor backend, seed {seed}), de-normalized."
        )
        doc.image("augmented.png", _preview(run, preview, seed), "augmented training images")
        stage("augmented preview", t0)

    t0 = time.perf_counter()
    doc.heading("Per-class accuracy")
    correct, totals = cm.diag(), cm.sum(1)
    doc.table(
        ["class", "correct", "images", "accuracy (%)"],
        [[c, int(k), int(m), _pct(float(a))] for c, k, m, a in zip(classes, correct, totals, acc)],
    )
    doc.image("per_class_accuracy.png", plot_per_class_accuracy(acc, classes), "per-class accuracy")
    doc.heading("Confusion matrix")
    doc.image("confusion_counts.png", plot_confusion_matrix(cm, classes), "confusion matrix, counts")
    doc.image(
        "confusion_normalized.png",
        plot_confusion_matrix(cm, classes, normalize=True),
        "confusion matrix, row-normalized",
    )
    doc.heading("Most confused pairs", 3)
    if pairs:
        doc.table(
            ["true class", "predicted as", "images", "% of true class"],
            [[classes[t], classes[p], k, f"{100 * k / max(int(totals[t]), 1):.1f}"] for t, p, k in pairs],
        )
    else:
        doc.para("No test image is misclassified.")
    stage("class tables and matrices", t0)

    t0 = time.perf_counter()
    cal = calibrate_run(run, logits, labels)
    _calibration_section(doc, cal, logits, labels)
    stage("calibration (cached temperature)" if cal.cached else "calibration", t0)

    t0 = time.perf_counter()
    rob = read_robustness(run)
    if rob is None and robust_images != 0:
        rob = robustness_run(run, images=robust_images, seed=seed)
    _robustness_section(doc, rob, run.folder.run_dir, int(labels.numel()))
    stage("robustness (cached)" if rob is None or rob.cached else "robustness", t0)

    tta = folder.config.trainer.tta if tta is None else check_tta(tta)
    tta_numbers = None
    if tta != "none":
        t0 = time.perf_counter()
        t_logits, _, _ = run.predictions(tta=tta)
        cal_t = calibrate_run(run, t_logits, labels, tta=tta)
        rob_t = read_robustness(run, tta)
        if rob_t is None and robust_images != 0 and rob is not None:
            rob_t = robustness_run(run, images=rob.images, seed=rob.seed, tta=tta)
        tta_numbers = _tta_section(doc, tta, cal, cal_t, rob, rob_t)
        stage(f"test-time augmentation ({tta})", t0)

    t0 = time.perf_counter()
    wrong = int((preds != labels).sum())
    doc.heading("Misclassified images")
    gallery_images = ds.test_x[ex.indices]
    p_true, losses = _gallery_numbers(logits, ex)
    if ex.gallery is not None:
        doc.para(
            f"{ex.indices.numel()} of {wrong:,} misclassified test images ({100 * wrong / max(labels.numel(), 1):.2f}%), "
            f"ordered {ORDER_WORDS[order]}. Each tile: the predicted class and p(predicted), the probability the model "
            "gave its (wrong) prediction; the true class and p(true); and the loss, -ln p(true)."
        )
        # Drawn here with p(true) and the loss, which explain_loaded's figure does not show.
        doc.image(
            "misclassified.png",
            plot_misclassified(
                gallery_images, ex.labels, ex.preds, ex.probs, classes, true_probs=p_true, losses=losses
            ),
            "misclassified test images",
        )
    else:
        doc.para("No test image is misclassified: nothing to show." if wrong == 0 else "n = 0: gallery skipped.")
    name = METHOD_NAMES.get(ex.method, ex.method)
    grid = f"{ex.grid[0]}x{ex.grid[1]}" if ex.grid else "?"
    doc.heading("Class activation maps: predicted vs actual class")
    if ex.gradcam is not None:
        doc.para(
            f"{name} at layer {ex.layer}, whose output is a {grid} grid, for "
            + " and ".join(TARGET_WORDS[k] for k in ex.cams)
            + ", upsampled bilinearly "
            "to the image and blended over it (viridis: yellow = most attended, each map scaled to its own maximum). "
            "A map scaled to its own maximum looks as bright when the model is guessing as when it is sure, so above each "
            "map stand the class it explains, the model's probability of that class and the map's raw maximum. On these "
            f"images the model gives its predicted class p = {float(ex.probs.mean()):.2f} on average and the true class "
            f"p = {float(p_true.mean()):.2f} (chance: {1 / max(ds.num_classes, 1):.2f})." + (f" {why}" if why else "")
        )
        # Drawn here with p(true) above the actual-class maps, which explain_loaded's figure does not show.
        doc.image(
            "gradcam.png",
            plot_gradcam(
                gallery_images,
                ex.cams,
                ex.labels,
                ex.preds,
                ex.probs,
                classes,
                true_probs=p_true,
                method=name,
                grid=ex.grid,
            ),
            f"{name} for the predicted and the actual class",
        )
    else:
        doc.para("No gallery images, so no maps.", note=True)
    doc.heading("Faithfulness of the maps (deletion test)")
    if ex.faithfulness:
        pct = f"{100 * DELETE_FRACTION:.0f}%"
        doc.para(
            f"Deletion test: for each image, the {pct} of pixels with the highest {name} value are set to the training-set "
            f"mean colour and the drop of the target class's probability is measured. Two baselines remove the same number "
            f"of pixels: a random region (the top {pct} of a random map drawn at the map's {grid} grid and upsampled like it, "
            f"so it has the same blob shape) and random scattered pixels (which act like noise and hurt a CNN by "
            f"themselves, whatever they cover). Each baseline is the mean of {RANDOM_REPEATS} draws (seed {seed}). The maps "
            f"point at evidence the model uses when their drop clearly exceeds the random-region drop."
        )
        doc.table(
            [
                "images",
                "target",
                "n",
                "p(target) intact",
                f"drop, top-{pct} CAM removed",
                f"drop, random {pct} region",
                f"drop, random {pct} pixels",
                "CAM drop > region drop",
            ],
            _faithfulness_rows(ex),
        )
        if any(d.get("drops_too_small") for d in ex.faithfulness.values()):
            doc.para(
                f"Rows marked not meaningful: neither the CAM deletion nor the random-region deletion moved p(target) by "
                f"{MIN_MEANINGFUL_DROP:g} or more on average. The model hardly reacts to losing {pct} of the image (typical "
                "of a model near chance), so the win rate compares noise and says nothing about the maps.",
                note=True,
            )
    else:
        doc.para("Not computed (no images).", note=True)
    _sweep_section(
        doc, sweep, why, None if asked is None else f"{METHOD_NAMES.get(ex.method, ex.method)} at {ex.layer}"
    )
    stage("gallery and grad-cam sections", t0)

    md_path, html_path = folder.run_dir / REPORT_MD, folder.run_dir / REPORT_HTML
    t0 = time.perf_counter()
    doc.heading("Timings")
    # The writing stage itself is measured after the table is drawn: it is reported in report.json and returned.
    timings["total before writing"] = time.perf_counter() - started
    doc.table(["stage", "seconds"], [[k, f"{v:.3f}"] for k, v in timings.items()])
    doc.para(
        "Writing report.md, report.html and the PNGs comes after this table; report.json holds that time and the total.",
        note=True,
    )
    doc.write(md_path, html_path, folder.run_dir / REPORT_IMAGES)
    stage("write report", t0)
    timings["total"] = time.perf_counter() - started

    numbers = {
        "run_dir": str(folder.run_dir),
        "checkpoint": str(run.checkpoint),
        "checkpoint_epoch": run.checkpoint_epoch,
        "status": _status(folder),
        "test_acc": overall,
        "test_images": int(labels.numel()),
        "misclassified": wrong,
        "best": folder.best_row(),
        "final": folder.final_row(),
        "per_class_acc": {c: float(a) for c, a in zip(classes, acc)},
        "most_confused": [{"true": classes[t], "predicted": classes[p], "images": k} for t, p, k in pairs],
        "gallery": [
            {"test_index": int(i), "true": classes[int(t)], "predicted": classes[int(p)], "p_predicted": float(q)}
            for i, t, p, q in zip(ex.indices, ex.labels, ex.preds, ex.probs)
        ],
        "calibration": cal.as_dict(),
        "robustness": rob.as_dict() if rob is not None else None,
        "tta": tta_numbers,
        "gradcam_layer": ex.layer,
        "cam_method": ex.method,
        "cam_grid": list(ex.grid) if ex.grid else None,
        "cam_sweep": (sweep or {}).get("best"),
        "faithfulness": ex.faithfulness,
        "predictions_cached": cached,
        "timings": timings,
    }
    atomic_write_text(folder.run_dir / REPORT_JSON, json.dumps(numbers, indent=1, default=str) + "\n")
    log.info("report written: %s (%.1f s)", html_path, timings["total"])
    return Report(markdown=md_path, html=html_path, numbers=numbers, timings=timings)


def write_report(run_dir: str | Path, *, n: int = 20, **kwargs: Any) -> Path:
    """`make_report` for callers that only need the path of report.md (e.g. the end of `vislab.train`)."""
    return make_report(run_dir, n=n, **kwargs).markdown
