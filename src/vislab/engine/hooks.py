"""A small set of training hooks (Lightning style) and the ones vislab itself plugs in."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import VislabError
from ..files import atomic_write_text, write_jsonl
from .checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from .trainer import Trainer


log = logging.getLogger(__name__)


class Callback:
    """No-op hooks; subclass and override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_batch_end(self, trainer: Trainer, batch_idx: int, loss: torch.Tensor) -> None: ...

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_save_checkpoint(self, trainer: Trainer, name: str) -> None:
        """After the trainer saved a checkpoint inside an epoch (`partial`, `interrupted`): a resume may start
        there, so what a callback has logged up to now must be on disk."""

    def on_train_end(self, trainer: Trainer) -> None: ...


class MetricsLogger(Callback):
    """Keeps `metrics.jsonl` equal to the history: one JSON row per finished epoch."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        # Rewritten whole and atomically (a few KB): a kill mid-write never leaves a torn row.
        write_jsonl(self.path, trainer.history)


class LRMonitor(Callback):
    """Records the learning rate of every optimizer step (for the LR plot), saved per epoch."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None

    def on_batch_end(self, trainer: Trainer, batch_idx: int, loss: torch.Tensor) -> None:
        # The LR that was used by the step that just ran was recorded before the scheduler stepped.
        trainer.lr_steps.append(trainer.step_lr)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps(trainer.lr_steps))


# Checkpoint folders inside a run's checkpoints/ folder. `partial`: saved inside an epoch every
# trainer.checkpoint_minutes, so that a killed run resumes from there; gone once that epoch has ended.
BEST, LAST, INTERRUPTED, PARTIAL = "best", "last", "interrupted", "partial"


def metric_mode(metric: str) -> str:
    """ "min" when a lower value of the metric is better (any loss), else "max" (accuracies)."""
    return "min" if metric.endswith("loss") else "max"


def best_row(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """The row with the best finite value of `metric` (the first of equals, as the checkpointer keeps it), or None."""
    rows = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not rows:
        return None
    return (min if metric_mode(metric) == "min" else max)(rows, key=lambda r: r[metric])


class Checkpointer(Callback):
    """Saves `last` after every epoch and `best` whenever the chosen metric improves (checkpoint folders)."""

    def __init__(self, folder: str | Path, metric: str = "test_acc"):
        self.folder = Path(folder)
        self.metric = metric
        self.mode = metric_mode(metric)

    def _better(self, value: float, best: float | None) -> bool:
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        value = row[self.metric]
        improved = self._better(value, trainer.best_metric)
        if improved:
            trainer.best_metric = value
            trainer.best_epoch = row["epoch"]
        state = trainer.state_dict()
        # best before last: a kill between the two must not leave `last` claiming a best that was never saved.
        if improved:
            save_checkpoint(self.folder / BEST, state)
        save_checkpoint(self.folder / LAST, state)
        # `partial` and `interrupted` checkpoints are from inside an epoch that has now ended (one run never
        # saves `last` after its own interrupt): they are stale, and would mislead.
        for name in (PARTIAL, INTERRUPTED):
            stale = self.folder / name
            shutil.rmtree(self.folder / f".{name}.old", ignore_errors=True)  # left by a kill inside a swap
            if stale.exists():
                shutil.rmtree(stale, ignore_errors=True)
                if name == INTERRUPTED:
                    log.info("removed %s: the resumed run has gone past it", stale)
        # A kill inside a save leaves its half-written `.NAME.*.tmp` folder (save_checkpoint builds there, then
        # renames); this process's own saves have all finished here, so any such folder is a dead one.
        for name in (BEST, LAST, PARTIAL, INTERRUPTED):
            for dead in self.folder.glob(f".{name}.*.tmp"):
                shutil.rmtree(dead, ignore_errors=True)


def resume_checkpoint(
    folder: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any] | None, str | None]:
    """(state, name) of the checkpoint a resumed run continues from, or (None, None) when there is none yet.

    That is the latest of: `last` (the end of the last complete epoch) and the mid-epoch checkpoints
    (`partial`, saved every trainer.checkpoint_minutes; `interrupted`, saved on SIGINT / SIGTERM) taken
    inside the epoch after it, which carry the loader's position and the epoch's running sums. A
    mid-epoch checkpoint from an earlier epoch, or without a position, is not resumed from.
    """
    folder = Path(folder)
    best: tuple[dict[str, Any] | None, str | None] = (None, None)
    if checkpoint_exists(folder / LAST):
        best = (load_checkpoint(folder / LAST, map_location=map_location), LAST)
    epoch = int(best[0]["epoch"]) if best[0] is not None else 0
    step = int(best[0]["global_step"]) if best[0] is not None else 0
    for name in (PARTIAL, INTERRUPTED):
        if not checkpoint_exists(folder / name):
            continue
        try:
            state = load_checkpoint(folder / name, map_location=map_location)
        except VislabError as e:  # a damaged mid-epoch checkpoint costs the minutes since `last`, not the run
            log.warning("%s; resuming from an earlier checkpoint instead", e)
            continue
        if "partial" in state and int(state["epoch"]) == epoch and int(state["global_step"]) > step:
            best, step = (state, name), int(state["global_step"])
    return best
