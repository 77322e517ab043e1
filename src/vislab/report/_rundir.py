"""Read a run folder back: config, history and LR files, and (on demand) the model, data and predictions."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config, load_config
from ..engine import (
    Precision,
    checkpoint_exists,
    load_checkpoint,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from ..engine.checkpoint import read_jsonl
from ..errors import ConfigError, DataError, VislabError
from ..explain import (
    PREDICTIONS_FILE,
    checkpoint_key,
    load_predictions,
    predict,
    save_predictions,
)

log = logging.getLogger(__name__)

CHECKPOINTS = ("best", "last")


@dataclass
class RunFolder:
    """The files of a run folder, read without building the model (cheap: used by `compare` too)."""

    run_dir: Path
    config: Config
    config_text: str
    history: list[dict[str, Any]]  # metrics.jsonl rows
    lr_steps: list[float]
    summary: dict[str, Any] | None  # summary.json; None for an interrupted run
    lr_find: dict[str, Any] | None  # lr_find.json when the LR range test ran

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def finished(self) -> bool:
        return len(self.history) >= self.config.trainer.epochs

    def best_row(self) -> dict[str, Any] | None:
        """The epoch the `best` checkpoint keeps (by trainer.checkpoint_metric)."""
        metric = self.config.trainer.checkpoint_metric
        rows = [r for r in self.history if isinstance(r.get(metric), (int, float))]
        if not rows:
            return None
        return (min if metric.endswith("loss") else max)(rows, key=lambda r: r[metric])

    def final_row(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s (%s)", path, e)
        return None


def read_run(run_dir: str | Path) -> RunFolder:
    """Config and per-epoch files of a `vislab train` run folder (finished or interrupted)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise ConfigError(f"RUN_DIR {str(run_dir)!r} is not a folder; give the folder a `vislab train` run wrote (it holds config.yaml).")
    if not cfg_path.is_file():
        raise ConfigError(f"RUN_DIR {str(run_dir)!r} holds no config.yaml; give the folder of a `vislab train` run.")
    _, cfg = load_config(cfg_path)
    metrics = run_dir / "metrics.jsonl"
    try:
        history = read_jsonl(metrics) if metrics.is_file() else []
    except (OSError, ValueError) as e:
        raise DataError(f"{str(metrics)!r} cannot be read as JSON lines ({e}); it was not written by vislab or is damaged.") from None
    lr_steps = _read_json(run_dir / "lr_steps.json")
    return RunFolder(
        run_dir=run_dir, config=cfg, config_text=cfg_path.read_text(), history=history,
        lr_steps=[float(v) for v in lr_steps] if isinstance(lr_steps, list) else [],
        summary=_read_json(run_dir / "summary.json"), lr_find=_read_json(run_dir / "lr_find.json"),
    )


def find_checkpoint(run_dir: Path, checkpoint: str | Path | None = None) -> Path:
    """`best` when present, else `last` (an interrupted run may have only that); or the one asked for."""
    folder = run_dir / "checkpoints"
    if checkpoint is None:
        for name in CHECKPOINTS:
            if checkpoint_exists(folder / name):
                return folder / name
        raise VislabError(
            f"{str(folder)!r} holds neither a best nor a last checkpoint: the run stopped before its first epoch ended, so there is "
            "no model to explain. Train it again (or `vislab train --resume`) for at least one epoch."
        )
    path = folder / str(checkpoint) if checkpoint in CHECKPOINTS else Path(checkpoint)
    if not checkpoint_exists(path):
        raise ConfigError(f"checkpoint = {str(checkpoint)!r}: {str(path)!r} is not a checkpoint folder; use best, last or the path of a checkpoint folder.")
    return path


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

    @property
    def classes(self) -> list[str]:
        return list(self.dataset.classes)

    def normalize(self, x_uint8: Tensor) -> Tensor:
        """uint8 (N, C, H, W) -> the model's float input, as at test time."""
        return self.augment.normalize_only(x_uint8)

    def predictions(self, *, refresh: bool = False) -> tuple[Tensor, Tensor, bool]:
        """(logits (N, C) float32, labels (N,) int64, came_from_cache) over the test set.

        Cached in `predictions.pt` keyed to the checkpoint file and the test set, so a newer
        checkpoint (or other test data) recomputes them.
        """
        path = self.folder.run_dir / PREDICTIONS_FILE
        if not refresh:
            hit = load_predictions(path, self.prediction_key)
            if hit is not None:
                return hit[0], hit[1], True
        ds = self.dataset
        logits = predict(self.model, ds.test_x, self.normalize, device=self.device, autocast_dtype=self.precision.dtype, channels_last=self.channels_last)
        labels = ds.test_y.long().clone()
        try:
            save_predictions(path, logits, labels, self.prediction_key)
        except OSError as e:  # a read-only run folder still gets its report numbers
            log.warning("cannot cache predictions in %s (%s)", path, e)
        return logits, labels, False


def _data_key(cfg: Config, ds: Any) -> dict[str, Any]:
    y = ds.test_y.long()
    checksum = int((y * torch.arange(1, y.numel() + 1)).sum()) if y.numel() else 0
    return {"data": ds.name, "test_images": int(y.numel()), "image_size": list(ds.image_size), "labels_checksum": checksum,
            "classes": list(ds.classes)}


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
            "figures may differ slightly from metrics.jsonl", folder.run_dir, precision.name,
        )
        return precision
    if name == "fp16" and dev.type == "cpu":
        # Refused for training on a CPU, but prediction needs no GradScaler and torch's CPU autocast
        # runs fp16: a GPU run reported on a CPU keeps its figures.
        return Precision("fp16", torch.float16, False)
    return resolve_precision(name, dev)


def load_run(
    run_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    data_root: str | Path | None = None,
    dataset: Any = None,
) -> LoadedRun:
    """Rebuild a run's model from its checkpoint (best, else last) and reload its data set.

    `data_root` replaces the config's data.root (for a run trained from another working folder);
    `dataset` (an ImageDataset) skips loading altogether, for notebooks and for `vislab.train`.
    """
    from ..augment import TensorAugment
    from ..data import load_dataset
    from ..run import augment_spec, build_model

    folder = read_run(run_dir)
    cfg = folder.config
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if dataset is None:
        d = cfg.data
        root = str(data_root) if data_root is not None else d.root
        # val_size too: the held-out images change the training split, and with it the mean/std the model was trained with.
        dataset = load_dataset(d.name, root, train_size=d.train_size, test_size=d.test_size, download=d.download,
                               cache_dir=d.cache_dir, image_size=d.image_size, val_size=d.val_size, val_seed=d.val_seed)
    timings["load data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dev = resolve_device(device)
    ckpt_path = find_checkpoint(folder.run_dir, checkpoint)
    state = load_checkpoint(ckpt_path, map_location=dev)
    model = build_model(cfg, dataset.num_classes)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise VislabError(
            f"Checkpoint {str(ckpt_path)!r} does not fit the model of {str(folder.run_dir / 'config.yaml')!r} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); was the config edited after training?"
        ) from None
    channels_last = resolve_channels_last(cfg.trainer.channels_last, dev)
    model = model.to(dev, memory_format=torch.channels_last if channels_last else torch.preserve_format).eval()
    # Predictions run in the precision the run was evaluated in; Grad-CAM always runs in fp32.
    precision = _recorded_precision(folder, state, dev)
    aug = TensorAugment(augment_spec(cfg), dataset.mean, dataset.std)
    key = {**checkpoint_key(ckpt_path, state), **_data_key(cfg, dataset), "precision": precision.name}
    timings["load model"] = time.perf_counter() - t0
    return LoadedRun(
        folder=folder, model=model, checkpoint=ckpt_path, checkpoint_epoch=int(state.get("epoch", -1)), prediction_key=key,
        dataset=dataset, augment=aug, device=dev, precision=precision, channels_last=channels_last, timings=timings,
    )
