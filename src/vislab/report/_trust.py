"""Calibration (with a temperature fitted on the validation split) and corruption robustness of a loaded run.

Both are cached in the run folder keyed to the checkpoint and the test set, as predictions.pt is:
calibration.json (the temperature needs one pass over the validation split) and robustness.json
(one pass over the test set per corruption and severity).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..augment import CORRUPTIONS, SEVERITIES, check_corruptions, check_severities, corrupt, corruption_seed
from ..data import balanced_subset
from ..errors import ConfigError, DataError
from ..explain import (
    CALIBRATION_BINS,
    TEMPERATURE_RANGE,
    Calibration,
    calibration,
    checkpoint_key,
    fit_temperature,
)
from ..files import atomic_write_text, read_json
from ..rundir import CALIBRATION_FILE, ROBUSTNESS_FILE
from ._rundir import LoadedRun, tta_file

log = logging.getLogger(__name__)

NO_TEMPERATURE = (
    "No temperature was fitted: the run has no validation split, and a temperature fitted on the test split would "
    "flatter the very figures it is judged by. Train with --set data.val_size=5000 (5,000 training images held out, "
    "class-balanced) to get one."
)
REPORT_ROBUST_IMAGES = 2000  # the report's default sample; `vislab robust` uses the whole test set


@dataclass
class CalibrationResult:
    """Calibration of the test predictions as they are (T = 1) and, when fitted, at the temperature."""

    plain: Calibration
    scaled: Calibration | None
    temperature: float | None
    val_images: int
    val_nll: tuple[float, float] | None  # validation NLL at T = 1 and at the fitted T
    at_bound: bool
    cached: bool
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "plain": self.plain.as_dict(),
            "scaled": self.scaled.as_dict() if self.scaled else None,
            "temperature": self.temperature,
            "val_images": self.val_images,
            "val_nll": list(self.val_nll) if self.val_nll else None,
            "at_bound": self.at_bound,
            "note": self.note,
        }


def _read_dict(path: Path) -> dict[str, Any] | None:
    data = read_json(path)
    return data if isinstance(data, dict) else None


def _predict(run: LoadedRun, images: Tensor, tta: str = "none") -> Tensor:
    return run.predict(images, tta)


def calibrate_run(
    run: LoadedRun,
    logits: Tensor,
    labels: Tensor,
    *,
    bins: int = CALIBRATION_BINS,
    refresh: bool = False,
    save: bool = True,
    tta: str = "none",
) -> CalibrationResult:
    """Calibration of the test `logits`; the temperature is fitted on the run's validation split (never the test split).

    `tta`: the test-time augmentation `logits` were made with; the validation logits are made the same way, and
    the result is cached apart from the plain one (calibration-tta-<mode>.json).
    """
    path = run.folder.run_dir / tta_file(CALIBRATION_FILE, tta)
    key = {**run.prediction_key, "tta": tta} if tta != "none" else run.prediction_key
    plain = calibration(logits, labels, bins=bins)
    ds = run.dataset
    if ds.val_x is None or ds.val_y is None or ds.val_y.numel() == 0:
        return CalibrationResult(plain, None, None, 0, None, False, False, NO_TEMPERATURE)
    cached = None if refresh else _read_dict(path)
    fitted = cached.get("temperature") if cached and cached.get("key") == key else None
    if isinstance(fitted, dict) and isinstance(fitted.get("value"), (int, float)):
        t, val_nll, was_cached = float(fitted["value"]), tuple(fitted.get("val_nll") or ()), True
    else:
        val_logits = _predict(run, ds.val_x, tta)
        t = fit_temperature(val_logits, ds.val_y)
        val_nll = (
            calibration(val_logits, ds.val_y, bins=bins).nll,
            calibration(val_logits, ds.val_y, bins=bins, temperature=t).nll,
        )
        was_cached = False
    at_bound = t in TEMPERATURE_RANGE
    res = CalibrationResult(
        plain=plain,
        scaled=calibration(logits, labels, bins=bins, temperature=t),
        temperature=t,
        val_images=int(ds.val_y.numel()),
        val_nll=val_nll if len(val_nll) == 2 else None,
        at_bound=at_bound,
        cached=was_cached,
        note=(
            f"The fitted temperature sits at the search's bound ({t:g}; range {TEMPERATURE_RANGE[0]:g}..{TEMPERATURE_RANGE[1]:g}): "
            "the validation predictions are all right or nearly uniform, and the temperature means little."
            if at_bound
            else None
        ),
    )
    if save and not was_cached:
        doc = {
            "key": key,
            "temperature": {
                "value": t,
                # read by vislab.rundir.read_temperature (vislab predict): the checkpoint the temperature belongs to
                "checkpoint_key": checkpoint_key(run.checkpoint),
                "weights": run.weights,
                "fitted_on": f"validation split ({res.val_images} images, data.val_size)",
                "val_nll": list(val_nll),
            },
            "test": {"plain": plain.as_dict(), "scaled": res.scaled.as_dict() if res.scaled else None},
        }
        try:
            atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
        except OSError as e:
            log.warning("cannot write %s (%s)", path, e)
    return res


@dataclass
class Robustness:
    """Test accuracy under each corruption at each severity, beside the clean accuracy of the same images."""

    source: str
    images: int
    corruptions: list[str]
    severities: list[int]
    clean_acc: float
    accuracy: dict[str, list[float]]  # corruption -> accuracy (%) per severity, in `severities` order
    seed: int
    seconds: float
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict)
    tta: str = "none"

    @property
    def mean_corruption_acc(self) -> float:
        return float(np.mean([a for accs in self.accuracy.values() for a in accs]))

    @property
    def relative_drop(self) -> float:
        """(clean - mean corruption accuracy) / clean: the share of the clean accuracy lost on average."""
        return (self.clean_acc - self.mean_corruption_acc) / self.clean_acc if self.clean_acc else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "images": self.images,
            "corruptions": self.corruptions,
            "severities": self.severities,
            "clean_acc": self.clean_acc,
            "accuracy": self.accuracy,
            "mean_corruption_acc": self.mean_corruption_acc,
            "relative_drop": self.relative_drop,
            "seed": self.seed,
            "seconds": self.seconds,
            "key": self.key,
            "tta": self.tta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Robustness:
        return cls(
            source=d["source"],
            images=int(d["images"]),
            corruptions=list(d["corruptions"]),
            severities=[int(s) for s in d["severities"]],
            clean_acc=float(d["clean_acc"]),
            accuracy={k: [float(a) for a in v] for k, v in d["accuracy"].items()},
            seed=int(d["seed"]),
            seconds=float(d["seconds"]),
            cached=True,
            key=dict(d.get("key") or {}),
            tta=str(d.get("tta", "none")),
        )


def read_robustness(run: LoadedRun, tta: str = "none") -> Robustness | None:
    """The cached robustness.json when it belongs to this checkpoint and test set, whatever its settings."""
    data = _read_dict(run.folder.run_dir / tta_file(ROBUSTNESS_FILE, tta))
    if not data or data.get("key", {}).get("prediction_key") != run.prediction_key:
        return None
    try:
        return Robustness.from_dict(data)
    except (KeyError, TypeError, ValueError):
        return None


def _accuracy(run: LoadedRun, images: Tensor, labels: Tensor, tta: str = "none") -> float:
    return 100.0 * float((_predict(run, images, tta).argmax(1) == labels).double().mean())


def _cifar10c(folder: Path, name: str, severity: int) -> tuple[Tensor, Tensor]:
    """The published CIFAR-10-C images of one corruption and severity: <name>.npy holds 5 x 10,000 images."""
    path, labels_path = folder / f"{name}.npy", folder / "labels.npy"
    for p in (path, labels_path):
        if not p.is_file():
            raise DataError(
                f"--cifar10c {str(folder)!r}: {p.name} is missing. Give the folder of the extracted CIFAR-10-C archive "
                f"(it holds labels.npy and one <corruption>.npy per corruption, e.g. {name}.npy)."
            )
    x, y = np.load(path, mmap_mode="r"), np.load(labels_path, mmap_mode="r")
    if x.ndim != 4 or x.shape[0] % 5 or x.shape[-1] != 3 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{str(path)!r} has shape {x.shape} (labels {y.shape}); CIFAR-10-C files hold 5 severities x N images "
            "of (32, 32, 3) uint8, with labels.npy beside them."
        )
    n = x.shape[0] // 5
    part = slice((severity - 1) * n, severity * n)
    return (
        torch.from_numpy(np.array(x[part])).permute(0, 3, 1, 2).contiguous(),  # a copy: the memory map is read-only
        torch.from_numpy(np.asarray(y[part]).astype(np.int64)),
    )


def robustness_run(
    run: LoadedRun,
    *,
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
    images: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    cifar10c: str | Path | None = None,
    refresh: bool = False,
    save: bool = True,
    tta: str = "none",
) -> Robustness:
    """Accuracy per corruption x severity (vislab's batched corruptions, or the published CIFAR-10-C files).

    `images`: a class-balanced sample of the test set (the first images of each class), default all.
    `tta`: predict with test-time augmentation (cached apart, robustness-tta-<mode>.json).
    """
    names = check_corruptions(corruptions or list(CORRUPTIONS))
    sevs = check_severities(severities or list(SEVERITIES))
    ds = run.dataset
    x, y = ds.test_x, ds.test_y.long()
    if images is not None:
        if images < ds.num_classes:
            raise ConfigError(f"images = {images}: give at least one test image per class ({ds.num_classes}).")
        x, y = balanced_subset(x, y, min(images, int(y.numel())), ds.num_classes)
    source = (
        f"CIFAR-10-C files in {cifar10c}" if cifar10c else "vislab corruptions (batched torch, CIFAR-10-C definitions)"
    )
    key = {"prediction_key": run.prediction_key, "source": source, "images": int(y.numel()), "seed": seed, "tta": tta}
    cached = None if refresh else read_robustness(run, tta)
    if cached and cached.key == key and set(names) <= set(cached.corruptions) and set(sevs) <= set(cached.severities):
        cols = [cached.severities.index(s) for s in sevs]
        cached.accuracy = {n: [cached.accuracy[n][c] for c in cols] for n in names}
        cached.corruptions, cached.severities = names, sevs
        return cached
    if cifar10c is not None and tuple(ds.image_size) != (32, 32):
        raise ConfigError(
            f"--cifar10c: CIFAR-10-C images are 32x32 and this run's are {ds.image_size[0]}x{ds.image_size[1]}."
        )
    t0 = time.perf_counter()
    clean = _accuracy(run, x, y, tta)
    acc: dict[str, list[float]] = {}
    for name in names:
        acc[name] = []
        for s in sevs:
            if cifar10c is not None:
                cx, cy = _cifar10c(Path(cifar10c), name, s)
                acc[name].append(_accuracy(run, cx, cy, tta))
                continue
            g = torch.Generator(device=run.device).manual_seed(corruption_seed(seed, name, s))
            right = 0
            for i in range(0, x.shape[0], batch_size):
                xb = corrupt(x[i : i + batch_size].to(run.device), name, s, g)
                right += int((_predict(run, xb, tta).argmax(1) == y[i : i + batch_size]).sum())
            acc[name].append(100.0 * right / max(int(y.numel()), 1))
        log.info("%s: %s", name, ", ".join(f"{a:.1f}" for a in acc[name]))
    res = Robustness(
        source=source,
        images=int(y.numel()),
        corruptions=names,
        severities=sevs,
        clean_acc=clean,
        accuracy=acc,
        seed=seed,
        seconds=time.perf_counter() - t0,
        key=key,
        tta=tta,
    )
    if save:
        path = run.folder.run_dir / tta_file(ROBUSTNESS_FILE, tta)
        try:
            atomic_write_text(path, json.dumps(res.as_dict(), indent=1) + "\n")
        except OSError as e:
            log.warning("cannot write %s (%s)", path, e)
    return res


def robust(run_dir: str | Path, **kwargs: Any) -> Robustness:
    """`vislab robust` in Python: load the run (checkpoint, device, data_root) and compute its robustness table."""
    from ._rundir import load_run

    load_keys = ("checkpoint", "device", "data_root", "dataset", "weights")
    run = load_run(run_dir, **{k: kwargs.pop(k) for k in load_keys if k in kwargs})
    return robustness_run(run, **kwargs)
