"""The training engine: loaders, loop, hooks, optimizers, schedulers and checkpoints."""

from ._device import Precision, resolve_channels_last, resolve_device, resolve_precision
from ._dist import DistInfo, broadcast_object, init_distributed, launched_by_torchrun, shutdown
from .checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint
from .ema import ModelEma, ema_decay_at
from .hooks import (
    BEST,
    INTERRUPTED,
    LAST,
    PARTIAL,
    Callback,
    Checkpointer,
    LRMonitor,
    MetricsLogger,
    best_row,
    metric_mode,
    resume_checkpoint,
)
from .loaders import DeviceLoader
from .loggers import TensorBoardLogger
from .optim import (
    OPTIMIZERS,
    SCHEDULERS,
    Scheduler,
    create_optimizer,
    create_scheduler,
    lr_scales,
    onecycle_peak_fraction,
    parameter_groups,
)
from .trainer import Trainer, TrainingDiverged, evaluate, train_one_epoch

__all__ = [
    "BEST",
    "INTERRUPTED",
    "PARTIAL",
    "LAST",
    "DistInfo",
    "best_row",
    "broadcast_object",
    "init_distributed",
    "launched_by_torchrun",
    "metric_mode",
    "shutdown",
    "Callback",
    "checkpoint_exists",
    "Checkpointer",
    "DeviceLoader",
    "LRMonitor",
    "MetricsLogger",
    "ModelEma",
    "ema_decay_at",
    "OPTIMIZERS",
    "Precision",
    "SCHEDULERS",
    "Scheduler",
    "TensorBoardLogger",
    "Trainer",
    "TrainingDiverged",
    "create_optimizer",
    "create_scheduler",
    "lr_scales",
    "onecycle_peak_fraction",
    "parameter_groups",
    "evaluate",
    "load_checkpoint",
    "resolve_channels_last",
    "resolve_device",
    "resolve_precision",
    "resume_checkpoint",
    "save_checkpoint",
    "train_one_epoch",
]
