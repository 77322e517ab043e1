"""Experiment loggers: hooks that copy what training records to an outside viewer (TensorBoard)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .hooks import Callback, best_row

if TYPE_CHECKING:
    from tensorboardX import SummaryWriter

    from .trainer import Trainer

log = logging.getLogger(__name__)

HParam = str | bool | int | float
# The columns whose final and best values become the HParams dashboard's metrics (val_* only with a validation split).
HPARAM_METRICS = ("test_acc", "test_loss", "val_acc", "val_loss")
EPOCH_TAG, STEP_TAG, HPARAM_TAG, FIGURE_TAG = "epoch", "step", "hparams", "report"


def hparam_metric_tags() -> list[str]:
    """The metric tags the HParams dashboard shows beside each run's hyper-parameters, in order."""
    return [f"{HPARAM_TAG}/{kind}_{m}" for m in HPARAM_METRICS for kind in ("final", "best")]


def hparam_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """Final and best (by `metric_mode`) value of each HPARAM_METRICS column the history has."""
    if not history:
        return {}
    out = {}
    for m in HPARAM_METRICS:
        if isinstance(history[-1].get(m), (int, float)):
            out[f"{HPARAM_TAG}/final_{m}"] = float(history[-1][m])
            best = best_row(history, m)
            if best is not None:
                out[f"{HPARAM_TAG}/best_{m}"] = float(best[m])
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class TensorBoardLogger(Callback):
    """Writes TensorBoard event files into `logdir` (needs tensorboardX: `pip install 'vislab[tensorboard]'`).

    Per epoch, every numeric column of the metrics row as `epoch/<column>` at step = epoch; every
    `every_n_steps` optimizer steps, the training loss and LR as `step/train_loss` and `step/lr` at
    step = global step; at the end of training, `hparams` with the final and best test (and
    validation) metrics for the HParams dashboard. `add_figures` adds PNG files (the report's) as
    images. A resumed run appends to the same folder: events an interrupted process logged after
    the checkpoint training resumes from are hidden by TensorBoard (`purge_step`), so no step or
    epoch shows twice.
    """

    def __init__(self, logdir: str | Path, *, every_n_steps: int = 50, hparams: Mapping[str, HParam] | None = None):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.logdir = Path(logdir)
        self.every_n_steps = every_n_steps
        self.hparams = dict(hparams or {})
        self.epoch = 0  # the last epoch logged: the step of the hyper-parameters' metrics and of the figures
        self.first_epoch = 0  # the epoch training (re)started from
        self._writer: SummaryWriter | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        from tensorboardX import SummaryWriter

        self.epoch = self.first_epoch = trainer.epoch
        # The checkpoint holds steps 1..global_step; anything an earlier process logged at a later step
        # was never checkpointed and is run again now: TensorBoard drops it when it reads this file's
        # START marker. Epoch steps stay clear of it (an epoch's events follow its checkpoint, and
        # epoch <= global step). The suffix keeps two files opened in the same second apart and in order
        # (the event file's name holds whole seconds only, and a second writer would truncate the first).
        self._writer = SummaryWriter(
            str(self.logdir), purge_step=trainer.global_step + 1, filename_suffix=f".{time.time_ns()}"
        )

    def on_batch_end(self, trainer: Trainer, batch_idx: int, loss: torch.Tensor) -> None:
        step = trainer.global_step
        if self._writer is None or step % self.every_n_steps:
            return
        # The only host sync this logger adds, on the steps it logs. Under torchrun: rank 0's share of the batch.
        self._writer.add_scalar(f"{STEP_TAG}/train_loss", float(loss.item()), step)
        self._writer.add_scalar(f"{STEP_TAG}/lr", trainer.step_lr, step)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self._writer is None:
            return
        self.epoch = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and _is_number(value):
                self._writer.add_scalar(f"{EPOCH_TAG}/{key}", value, self.epoch)
        # On disk with the epoch's checkpoint: a kill later must not lose an epoch the resumed run will not repeat.
        self._writer.flush()

    def on_save_checkpoint(self, trainer: Trainer, name: str) -> None:
        # A resume from this mid-epoch checkpoint will not run its steps again: their events must not be
        # left in the writer's buffer for a kill to lose (a gap in the step curves).
        if self._writer is not None:
            self._writer.flush()

    def _trained(self) -> bool:
        # A process that trained no epoch (a resumed run that was already finished, or stopped again within
        # the epoch it resumed) has nothing new to show: the last epoch's process logged it at the same step.
        return self._writer is not None and self.epoch > self.first_epoch

    def on_train_end(self, trainer: Trainer) -> None:
        if not self._trained() or not trainer.history:
            return
        from tensorboardX.summary import hparams

        metrics = hparam_metrics(trainer.history)
        # The experiment lists every metric tag, present or not, so that all runs describe the same columns:
        # TensorBoard takes the column list from the first run it finds.
        experiment, start, end = hparams(self.hparams, dict.fromkeys(hparam_metric_tags(), 0.0))
        # Into this run itself (add_hparams would make a new timestamped sub-run): one run folder, one session.
        for summary in (experiment, start, end):
            self._writer.file_writer.add_summary(summary, self.epoch)
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, value, self.epoch)
        self._writer.flush()

    def add_figures(self, figures: Mapping[str, str | Path]) -> None:
        """PNG files as images `report/<name>`, at the step of the last epoch; files that do not exist are skipped."""
        if not self._trained():
            return
        import numpy as np
        from PIL import Image

        for name, path in figures.items():
            path = Path(path)
            if not path.is_file():
                continue
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("RGB"))  # (H, W, 3) uint8
            self._writer.add_image(f"{FIGURE_TAG}/{name}", pixels, self.epoch, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
