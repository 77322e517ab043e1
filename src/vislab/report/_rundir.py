"""A run folder loaded for explaining: its model from a checkpoint, its data set, and cached predictions."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..engine import (
    Precision,
    load_checkpoint,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from ..errors import VislabError
from ..explain import (
    PREDICTIONS_FILE,
    check_tta,
    checkpoint_key,
    load_predictions,
    predict,
    save_predictions,
)
from ..rundir import CONFIG_FILE, RunFolder, find_checkpoint, read_run, run_html, run_repr  # noqa: F401 - RunFolder/read_run: vislab.report's API

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A run folder with its model (eval mode, on `device`), data set and eval-time normalization."""

    folder: RunFolder
    model: nn.Module
    checkpoint: Path
    checkpoint_epoch: int
    prediction_key: dict[str, Any]
    dataset: Any  # vislab.data.ImageDataset
    augment: Any  # vislab.augment.TensorAugment with the run's spec, mean and std
    device: torch.device
    precision: Precision
    channels_last: bool
    timings: dict[str, float] = field(default_factory=dict)
    weights: str = "raw"  # "raw" (the trained weights) or "ema" (their moving average, trainer.ema_decay)

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    def __repr__(self) -> str:  # the dataclass default would print the whole config, model and data set
        f = self.folder
        return (
            run_repr("LoadedRun", f.run_dir, f.config, f.history)[:-1]
            + f", checkpoint {self.checkpoint.name!r} (epoch {self.checkpoint_epoch}), {self.device})"
        )

    def _repr_html_(self) -> str:
        return run_html("LoadedRun", self.folder.run_dir, self.folder.config, self.folder.history)

    def normalize(self, x_uint8: Tensor) -> Tensor:
        """uint8 (N, C, H, W) -> the model's float input, as at test time."""
        return self.augment.normalize_only(x_uint8)

    def predict(self, images: Tensor, tta: str = "none") -> Tensor:
        """Logits (N, C) of uint8 images (N, 3, H, W), normalized and predicted as the run's test set is."""
        return predict(
            self.model,
            images,
            self.normalize,
            device=self.device,
            autocast_dtype=self.precision.dtype,
            channels_last=self.channels_last,
            tta=tta,
        )

    def predictions(
        self, *, refresh: bool = False, save: bool = True, tta: str = "none"
    ) -> tuple[Tensor, Tensor, bool]:
        """(logits (N, C) float32, labels (N,) int64, came_from_cache) over the test set.

        Cached in `predictions.pt` keyed to the checkpoint file and the test set, so a newer
        checkpoint (or other test data) recomputes them. `save=False` reads a fitting cache but never
        writes the run folder (`explain --out` elsewhere: the folder may be read-only, synced or another's).
        `tta`: test-time augmentation (vislab.explain.TTA_MODES), cached apart from the plain predictions.
        """
        path = self.folder.run_dir / tta_file(PREDICTIONS_FILE, tta)
        key = {**self.prediction_key, "tta": tta} if tta != "none" else self.prediction_key
        if not refresh:
            hit = load_predictions(path, key)
            if hit is not None:
                return hit[0], hit[1], True
        logits = self.predict(self.dataset.test_x, tta)
        labels = self.dataset.test_y.long().clone()
        if not save:
            return logits, labels, False
        try:
            save_predictions(path, logits, labels, key)
        except OSError as e:  # a read-only run folder still gets its report numbers
            log.warning("cannot cache predictions in %s (%s)", path, e)
        return logits, labels, False


def _data_key(cfg: Config, ds: Any) -> dict[str, Any]:
    y = ds.test_y.long()
    checksum = int((y * torch.arange(1, y.numel() + 1)).sum()) if y.numel() else 0
    return {
        "data": ds.name,
        "test_images": int(y.numel()),
        "image_size": list(ds.image_size),
        "labels_checksum": checksum,
        "classes": list(ds.classes),
    }


def _recorded_precision(folder: RunFolder, state: dict[str, Any], dev: torch.device) -> Precision:
    """The precision the run evaluated its test set in, so that the report's figures are metrics.jsonl's.

    `auto` is not resolved again: on the machine writing the report it can mean something else (a
    run trained in fp32 on a CPU, reported on a GPU, would be evaluated in bf16).
    """
    recorded = [state.get("precision"), (folder.summary or {}).get("precision"), folder.config.trainer.precision]
    name = next(n for n in recorded if n in ("bf16", "fp16", "fp32", "auto"))
    if name == "auto":  # a checkpoint from before they recorded it, of a run that left no summary.json
        precision = resolve_precision("auto", dev)
        log.warning(
            "%s records no resolved precision (trainer.precision = auto): predicting in %s, what auto means on this machine; "
            "figures may differ slightly from metrics.jsonl",
            folder.run_dir,
            precision.name,
        )
        return precision
    if name == "fp16" and dev.type == "cpu":
        # Refused for training on a CPU, but prediction needs no GradScaler and torch's CPU autocast
        # runs fp16: a GPU run reported on a CPU keeps its figures.
        return Precision("fp16", torch.float16, False)
    return resolve_precision(name, dev)


WEIGHTS = ("raw", "ema")


def tta_file(name: str, tta: str) -> str:
    """The cache file of test-time-augmented results beside the plain one: predictions.pt -> predictions-tta-flip.pt."""
    check_tta(tta)
    if tta == "none":
        return name
    stem, dot, suffix = name.partition(".")
    return f"{stem}-tta-{tta}{dot}{suffix}"


def check_weights(weights: str | None, cfg: Config, state: dict[str, Any] | None = None) -> str:
    """The weights to load: "raw" or "ema"; None picks by the run's checkpoint_metric."""
    if weights is None:
        weights = "ema" if cfg.trainer.checkpoint_metric.startswith("ema_") else "raw"
    if weights not in WEIGHTS:
        raise VislabError(f"weights = {weights!r}: choose raw (the trained weights) or ema (their moving average).")
    if weights == "ema" and state is not None and "ema" not in state:
        raise VislabError(
            "weights = ema: this run kept no moving average of its weights (trainer.ema_decay was not set); use raw."
        )
    return weights


def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    data_root: str | Path | None = None,
    dataset: Any = None,
    weights: str | None = None,
) -> LoadedRun:
    """Rebuild a run's model from its checkpoint (best, else last) and reload its data set.

    `data_root` replaces the config's data.root (for a run trained from another working folder);
    `dataset` (an ImageDataset) skips loading altogether, for notebooks and for `vislab.train`.
    `weights`: "raw" or "ema" (a run with trainer.ema_decay keeps both); default: the EMA weights when
    the run picked its best epoch by them (trainer.checkpoint_metric = ema_*), else the raw ones.
    """
    from ..augment import TensorAugment
    from ..build import augment_spec, build_model, load_data

    folder = read_run(run_dir)
    cfg = folder.config
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if dataset is None:
        # The same data keywords as training (val_size too: the held-out images change the training split,
        # and with it the mean/std the model was trained with).
        dataset = load_data(cfg, root=str(data_root) if data_root is not None else None)
    timings["load data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dev = resolve_device(device)
    ckpt_path = find_checkpoint(folder.run_dir, checkpoint)
    state = load_checkpoint(ckpt_path, map_location=dev)
    weights = check_weights(weights, cfg, state)
    model = build_model(cfg, dataset.num_classes)
    try:
        model.load_state_dict(state["model"] if weights == "raw" else state["ema"]["module"])
    except (KeyError, RuntimeError) as e:
        raise VislabError(
            f"Checkpoint {str(ckpt_path)!r} does not fit the model of {str(folder.run_dir / CONFIG_FILE)!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); was the config edited after training?"
        ) from None
    channels_last = resolve_channels_last(cfg.trainer.channels_last, dev)
    model = model.to(dev, memory_format=torch.channels_last if channels_last else torch.preserve_format).eval()
    # Predictions run in the precision the run was evaluated in; Grad-CAM always runs in fp32.
    precision = _recorded_precision(folder, state, dev)
    aug = TensorAugment(augment_spec(cfg), dataset.mean, dataset.std)
    key = {**checkpoint_key(ckpt_path, state), **_data_key(cfg, dataset), "precision": precision.name}
    if weights == "ema":  # the raw weights' key stays as it was: their cached predictions remain valid
        key["weights"] = "ema"
    timings["load model"] = time.perf_counter() - t0
    return LoadedRun(
        folder=folder,
        model=model,
        checkpoint=ckpt_path,
        checkpoint_epoch=int(state.get("epoch", -1)),
        prediction_key=key,
        dataset=dataset,
        augment=aug,
        device=dev,
        precision=precision,
        channels_last=channels_last,
        timings=timings,
        weights=weights,
    )
