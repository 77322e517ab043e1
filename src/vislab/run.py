"""`vislab.train` and `lr_find`: wire config -> data -> augmentation -> model -> engine -> run folder."""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import yaml
from torch import nn

from . import __version__
from .config import Config, apply_overrides, config_to_yaml, load_config, validate_config
from .config._load import _read_yaml
from .engine import (
    Callback,
    Checkpointer,
    DeviceLoader,
    LRMonitor,
    MetricsLogger,
    Trainer,
    create_optimizer,
    create_scheduler,
    load_checkpoint,
    onecycle_peak_fraction,
    checkpoint_exists,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)
from .engine._dist import DistInfo, broadcast_object, init_distributed, launched_by_torchrun, shutdown
from .engine.checkpoint import atomic_write_text, write_jsonl
from .errors import ConfigError, Interrupted, VislabError

if TYPE_CHECKING:
    from .tuner import LRFinder

log = logging.getLogger(__name__)

RUNS_ROOT = "runs"


@dataclass
class Run:
    """What a training run leaves behind, for notebooks: history, model and the run folder."""

    run_dir: Path
    config: Config
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any] | None:
        return self.summary.get("best")


def setup_logging(level: int = logging.INFO) -> None:
    """Send vislab's log lines to stderr through tqdm, so that they do not break progress bars."""
    logger = logging.getLogger("vislab")
    if logger.handlers:
        return
    from tqdm.auto import tqdm

    class _TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


@contextmanager
def _determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the duration of a run, restored afterwards (no global leaks)."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    try:
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # Some CUDA kernels (e.g. adaptive max-pool backward) have no deterministic version:
            # warn there instead of failing, CPU kernels are all covered.
            torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _model_kwargs(cfg: Config) -> dict[str, Any]:
    m = cfg.model
    kwargs: dict[str, Any] = {"norm": m.norm, "width": m.width}
    if m.norm == "group":
        kwargs["groups"] = m.groups
    if m.last_stride is not None:
        kwargs["last_stride"] = m.last_stride
    if m.logit_scale is not None:
        kwargs["logit_scale"] = m.logit_scale
    return kwargs


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    from .models import create_model

    return create_model(cfg.model.name, num_classes=num_classes, **_model_kwargs(cfg))


def augment_spec(cfg: Config):
    from .augment import AugmentSpec

    a = cfg.augment
    return AugmentSpec(
        crop_pad=a.crop_pad, pad_mode=a.pad_mode, flip_p=a.flip_p, rotate_deg=a.rotate_deg,
        cutout_size=(a.cutout_size, a.cutout_size), cutout_p=a.cutout_p, cutout_fill=a.cutout_fill,
    )


# Devices whose tensors torch's SyncBatchNorm accepts during training.
SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")


def _albu_common(cfg: Config, device: torch.device, seed: int, dist: DistInfo) -> dict:
    workers = cfg.augment.workers
    if workers is None:
        # The processes of a torchrun job on one machine share its cores: N ranks x all cores would oversubscribe N-fold.
        workers = max(1, (os.cpu_count() or 1) // dist.local_world_size)
    return dict(num_workers=workers, seed=seed, pin_memory=device.type == "cuda", rank=dist.rank, world_size=dist.world_size)


def _eval_loader(cfg: Config, ds, x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool, seed: int, dist: DistInfo):
    """Normalized, unaugmented, unshuffled batches of (x, y), sharded over the ranks under DDP."""
    t = cfg.trainer
    eval_bs = t.eval_batch_size or 2 * t.batch_size
    if cfg.augment.backend == "tensor":
        from .augment import TensorAugment

        aug = TensorAugment(augment_spec(cfg), ds.mean, ds.std, channels_last=channels_last)
        return DeviceLoader(x.to(device), y.to(device), eval_bs, lambda b, g: aug.normalize_only(b), rank=dist.rank, world_size=dist.world_size)
    from .augment import albumentations_loader

    per_rank = max(1, eval_bs // dist.world_size)
    return albumentations_loader(x, y, augment_spec(cfg), ds.mean, ds.std, batch_size=per_rank, shuffle=False, train=False, **_albu_common(cfg, device, seed, dist))


def build_loaders(cfg: Config, ds, device: torch.device, channels_last: bool, seed: int, dist: DistInfo = DistInfo()):
    """(train_loader, test_loader, generator whose state drives all data randomness).

    Under DDP every rank draws the same global order from the same seed and takes its share of
    each global batch, so `trainer.batch_size` stays the global batch size.
    """
    t = cfg.trainer
    spec = augment_spec(cfg)
    test = _eval_loader(cfg, ds, ds.test_x, ds.test_y, device, channels_last, seed, dist)
    if cfg.augment.backend == "tensor":
        from .augment import TensorAugment

        # The CPU generator is used on CPU; on CUDA, drawing on the device avoids a copy per batch.
        gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
        gen.manual_seed(seed)
        aug = TensorAugment(spec, ds.mean, ds.std, channels_last=channels_last)
        train_x, train_y = ds.train_x.to(device), ds.train_y.to(device)
        train = DeviceLoader(train_x, train_y, t.batch_size, aug, shuffle=True, drop_last=t.drop_last, generator=gen, rank=dist.rank, world_size=dist.world_size)
        return train, test, gen
    from .augment import albumentations_loader

    per_rank = t.batch_size // dist.world_size
    train = albumentations_loader(ds.train_x, ds.train_y, spec, ds.mean, ds.std, batch_size=per_rank, shuffle=True, train=True, drop_last=t.drop_last, **_albu_common(cfg, device, seed, dist))
    return train, test, getattr(train, "generator", None)


def build_val_loader(cfg: Config, ds, device: torch.device, channels_last: bool, seed: int, dist: DistInfo = DistInfo()):
    """Batches of the validation split held out of train (data.val_size), or None without one."""
    if ds.val_x is None:
        return None
    return _eval_loader(cfg, ds, ds.val_x, ds.val_y, device, channels_last, seed, dist)


def _new_run_dir(out: str | Path | None, name: str, overwrite: bool) -> Path:
    if out is None:
        out = Path(RUNS_ROOT) / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a folder; choose another run folder.")
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        else:
            # Never overwrite an earlier run: take the first free suffixed name instead.
            i = 1
            while Path(f"{out}-{i}").exists():
                i += 1
            log.warning("run folder %s exists; writing to %s-%d instead (use --overwrite to replace it)", out, out, i)
            out = Path(f"{out}-{i}")
    return out


def _check_writable(path: Path) -> None:
    """Fail before any work if the run folder cannot be created (probe with a temp folder, removed at once)."""
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"Output folder {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder. Choose another --out.")
    try:
        probe = tempfile.mkdtemp(dir=parent, prefix=".vislab-probe-")
        os.rmdir(probe)
    except OSError as e:
        raise ConfigError(f"Output folder {str(path)!r} cannot be created: {str(parent)!r} is not writable ({e.strerror}). Choose another --out.") from None


def _versions() -> dict[str, str]:
    import albumentations

    return {
        "vislab": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "albumentations": albumentations.__version__, "python": platform.python_version(),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def _summary(run_dir: Path, name: str, cfg: Config, trainer: Trainer, device, precision, channels_last, started: float, ds, model) -> dict[str, Any]:
    hist = trainer.history
    metric = cfg.trainer.checkpoint_metric
    best_row = None
    if hist:
        pick = min if metric.endswith("_loss") else max
        best_row = pick(hist, key=lambda r: r[metric])
    return {
        "recipe": name,
        "run_dir": str(run_dir),
        "status": "finished" if trainer.epoch >= cfg.trainer.epochs else "stopped",
        "epochs_completed": trainer.epoch,
        "epochs": cfg.trainer.epochs,
        "best_metric": metric,
        "best": best_row,
        "final": hist[-1] if hist else None,
        "train_seconds": sum(r["seconds"] for r in hist),
        "wall_seconds": time.perf_counter() - started,
        "device": str(device),
        "device_name": _device_name(device),
        "precision": precision.name,
        "channels_last": channels_last,
        "threads": torch.get_num_threads(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "dataset": {
            "name": ds.name, "train_images": int(ds.train_x.shape[0]), "val_images": 0 if ds.val_y is None else int(ds.val_y.shape[0]),
            "test_images": int(ds.test_x.shape[0]), "classes": ds.classes,
        },
        "versions": _versions(),
    }


# What a resumed run may change: where and how it runs, never what it computes (the checkpoint's
# model, optimizer and schedule state must fit the config). Epochs may grow only where the
# schedule does not depend on the total length.
RESUME_OVERRIDABLE = {
    "trainer.progress", "trainer.report", "trainer.device", "trainer.compile", "trainer.eval_batch_size",
    "data.root", "data.cache_dir", "data.download", "augment.workers",
}


def _resume_config(run_dir: Path, overrides) -> tuple[str, Config]:
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise VislabError(f"--resume {str(run_dir)!r}: no config.yaml there; give the folder of an earlier `vislab train` run.")
    try:
        text = cfg_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--resume {str(run_dir)!r}: config.yaml cannot be read ({e}).") from None
    raw = _read_yaml(text, f"{cfg_path}")
    cfg = validate_config(apply_overrides(raw, overrides), f"{cfg_path}")
    if overrides:
        keys = list(overrides) if isinstance(overrides, Mapping) else [o.partition("=")[0].strip() for o in overrides]
        for key in (k if isinstance(k, str) else ".".join(k) for k in keys):
            epochs_ok = key == "trainer.epochs" and cfg.sched.name in ("plateau", "step", "none")
            if key not in RESUME_OVERRIDABLE and not epochs_ok:
                raise ConfigError(
                    f"--resume with --set {key}: a resumed run keeps the settings its checkpoint was made with. "
                    f"Allowed on resume: {', '.join(sorted(RESUME_OVERRIDABLE))}, and trainer.epochs for the plateau, step "
                    f"and none schedules; start a new run to change {key}."
                )
    return run_dir.name, cfg


def _load_data(cfg: Config, dataset):
    from .data import load_dataset

    d = cfg.data
    if dataset is not None:
        if d.val_size and dataset.val_x is None:
            from .data import with_validation_split

            return with_validation_split(dataset, d.val_size, d.val_seed)
        return dataset
    return load_dataset(
        d.name, d.root, train_size=d.train_size, test_size=d.test_size, download=d.download, cache_dir=d.cache_dir,
        image_size=d.image_size, val_size=d.val_size, val_seed=d.val_seed,
    )


def _setup(cfg: Config, ds, device: torch.device, channels_last: bool, dist: DistInfo = DistInfo()):
    """Seeded model and loaders, exactly as training starts: (model, train_loader, test_loader, val_loader or None, generator)."""
    t = cfg.trainer
    seed_everything(t.seed)
    model = build_model(cfg, ds.num_classes)
    if dist.enabled and t.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader, test_loader, gen = build_loaders(cfg, ds, device, channels_last, t.seed, dist)
    val_loader = build_val_loader(cfg, ds, device, channels_last, t.seed, dist)
    if len(train_loader) == 0:
        raise ConfigError(f"trainer.batch_size = {t.batch_size} is larger than the training set ({ds.train_x.shape[0]} images); lower it or set trainer.drop_last=false.")
    return model, train_loader, test_loader, val_loader, gen


def _auto_fields(cfg: Config) -> list[str]:
    fields = ["optim.lr"] if cfg.optim.lr == "auto" else []
    if cfg.sched.max_lr == "auto":
        fields.append("sched.max_lr")
    return fields


def _range_test(cfg: Config, model: nn.Module, train_loader, val_loader, gen, device: torch.device, precision, channels_last: bool) -> "LRFinder":
    """The config's LR range test (section lr_find) with the config's optimizer; state is restored after."""
    from .tuner import LRFinder

    o, f = cfg.optim, cfg.lr_find
    if f.measure != "loss" and val_loader is None:
        # The test split judges the finished model; choosing an LR on it would leak it into training.
        raise ConfigError(
            f"lr_find.measure = {f.measure} needs a validation split, and the range test never reads the test split: set "
            f"data.val_size (e.g. 5000 images held out of train; at least {f.val_batches} batches of "
            f"{cfg.trainer.eval_batch_size or 2 * cfg.trainer.batch_size}), or use lr_find.measure=loss."
        )
    suggestion = f.suggestion or ("onecycle" if cfg.sched.name == "onecycle" else "valley")
    # The sweep sets every step's LR itself; the optimizer's own LR is never used.
    momentum, betas = o.momentum, o.betas
    if cfg.sched.name == "onecycle" and cfg.sched.cycle_momentum:
        # The suggestion becomes OneCycle's peak LR, where OneCycle trains with base_momentum: sweep with that.
        momentum, betas = cfg.sched.base_momentum, (cfg.sched.base_momentum, o.betas[1])
    optimizer = create_optimizer(model, o.name, f.start_lr, weight_decay=o.weight_decay, momentum=momentum, nesterov=o.nesterov, betas=betas)
    finder = LRFinder(
        model, optimizer, train_loader, device=device, precision=precision, channels_last=channels_last, generator=gen,
        label_smoothing=o.label_smoothing, l1=o.l1, grad_clip=o.grad_clip, progress=cfg.trainer.progress, suggestion=suggestion,
    )
    # The held-out batches of val_loss / accuracy come from the validation split (data.val_size).
    finder.range_test(
        f.start_lr, f.end_lr, f.num_iter, mode=f.mode, smooth_f=f.smooth_f, diverge_th=f.diverge_th,
        val_loader=val_loader if f.measure != "loss" else None, val_batches=f.val_batches, accuracy=f.measure == "accuracy",
    )
    return finder


def _format_suggestions(s: dict[str, Any]) -> str:
    lo, hi = s["onecycle"]
    return f"valley {s['valley']:.3g}, steepest {s['steepest']:.3g}, min_loss_div10 {s['min_loss_div10']:.3g}, onecycle {lo:.3g} .. {hi:.3g}"


def _resolve_auto_lr(cfg: Config, fields: list[str], finder: "LRFinder") -> float:
    """Put the range test's chosen LR into the `auto` fields of `cfg`; a flat or too short sweep is an error."""
    from .tuner import RangeTestError

    hint = "Run `vislab lr-find` with the same settings to see the curve, adjust the lr_find section, or set the LR yourself."
    try:
        s = finder.suggestions()
    except RangeTestError as e:
        raise RangeTestError(f"{' and '.join(fields)} = auto: {e} {hint}") from None
    if s["flat"]:
        raise RangeTestError(f"{' and '.join(fields)} = auto: {s['warnings'][0]} {hint}")
    for w in s["warnings"]:
        log.warning("LR range test: %s", w)
    lr = s["chosen"]
    if "optim.lr" in fields:
        cfg.optim.lr = lr
    if "sched.max_lr" in fields:
        cfg.sched.max_lr = lr
    log.info("%s = auto -> %.4g (%s suggestion of the LR range test; %s)", " and ".join(fields), lr, s["method"], _format_suggestions(s))
    return lr


def lr_find(
    recipe: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    save: bool = False,
    dataset=None,
) -> "LRFinder":
    """The LR range test of a recipe (its lr_find section) on its model, optimizer, data, augmentation and precision.

    Returns the `vislab.tuner.LRFinder` (`.results`, `.suggestion()`, `.plot()`). With `out` or
    `save=True` (folder runs/lr-find-<recipe>-<time>) it writes lr_find.json, lr_find.png and the
    resolved config.yaml there, and sets `finder.run_dir`.
    """
    setup_logging()
    name, cfg = load_config(recipe, overrides)
    t = cfg.trainer
    device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    channels_last = resolve_channels_last(t.channels_last, device)
    ds = _load_data(cfg, dataset)
    run_dir = None
    if out is not None or save:
        run_dir = _new_run_dir(out, f"lr-find-{name}", overwrite=False)
        _check_writable(run_dir)
    with _determinism(t.deterministic, device):
        model, train_loader, _, val_loader, gen = _setup(cfg, ds, device, channels_last)
        log.info(
            "LR range test of %s: %s on %s (%s, %s, channels_last=%s), %s optimizer, lr %.3g..%.3g over %d steps",
            name, cfg.model.name, ds.name, _device_name(device), precision.name, channels_last, cfg.optim.name,
            cfg.lr_find.start_lr, cfg.lr_find.end_lr, cfg.lr_find.num_iter,
        )
        finder = _range_test(cfg, model, train_loader, val_loader, gen, device, precision, channels_last)
    if run_dir is not None:
        finder.save(run_dir)
        header = f"# vislab {__version__} config of the LR range test of recipe {name!r}\n"
        atomic_write_text(run_dir / "config.yaml", header + config_to_yaml(cfg))
        finder.run_dir = run_dir
    return finder


def train(
    recipe: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
    dataset=None,
    distributed: bool | None = None,
) -> Run:
    """Train a recipe (name or YAML path) with `section.key` overrides; returns a `Run`.

    Everything is validated and loaded before the run folder is created, so a bad config or
    data set leaves nothing behind. `dataset` (a `vislab.data.ImageDataset`) replaces the
    config's data section, for notebooks that already hold their data in memory. With
    `optim.lr: auto` (or OneCycle's `sched.max_lr: auto`) the LR range test runs first, on the
    same model, data and precision; its chosen LR goes into the config and its sweep into
    lr_find.json / lr_find.png beside the run.

    Launched by torchrun (`distributed=None` detects it; True requires it), each process trains
    its share of every global batch with DistributedDataParallel; only rank 0 writes files.
    """
    started = time.perf_counter()
    setup_logging()
    if resume is not None:
        run_dir = Path(resume)
        name, cfg = _resume_config(run_dir, overrides)
    else:
        name, cfg = load_config(recipe, overrides)
    auto = _auto_fields(cfg)
    if auto and resume is not None:
        raise ConfigError(f"{' and '.join(auto)} = auto cannot be combined with --resume: a resumed run keeps the LR stored in its config.yaml.")
    t = cfg.trainer
    dist = DistInfo()
    if distributed or (distributed is None and launched_by_torchrun()):
        if auto:
            raise ConfigError(f"{' and '.join(auto)} = auto is not supported under torchrun (each rank would sweep on its own); run `vislab lr-find` first and set the LR it prints.")
        dist, device = init_distributed(t.device)
        if not t.drop_last:
            raise ConfigError("trainer.drop_last = false is not supported under torchrun: a short last batch would split unevenly across the ranks.")
        if t.batch_size % dist.world_size:
            raise ConfigError(f"trainer.batch_size = {t.batch_size} must be divisible by the {dist.world_size} processes of the torchrun job (it is the global batch size).")
        if t.sync_bn and device.type not in SYNC_BN_DEVICES:
            # torch's SyncBatchNorm raises mid-step for any other device; refuse before a folder exists.
            raise ConfigError(
                f"trainer.sync_bn = true needs GPU processes (SyncBatchNorm runs on {', '.join(SYNC_BN_DEVICES)}), but this "
                f"torchrun job trains on {device.type}. Set trainer.sync_bn=false: each process then normalizes with its "
                f"own share of the batch ({t.batch_size // dist.world_size} images), or use a norm without batch "
                "statistics (model.norm=group or layer)."
            )
        if not dist.is_main:
            logging.getLogger("vislab").setLevel(logging.WARNING)  # one log, from rank 0
    else:
        device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    channels_last = resolve_channels_last(t.channels_last, device)

    ds = _load_data(cfg, dataset)
    if resume is None:
        if dist.is_main:
            run_dir = _new_run_dir(out, name, overwrite)
            _check_writable(run_dir)
        # Rank 0 names the folder (its clock and suffix choice); every rank writes nothing else.
        run_dir = Path(broadcast_object(str(run_dir) if dist.is_main else None))

    with _determinism(t.deterministic, device):
        model, train_loader, test_loader, val_loader, gen = _setup(cfg, ds, device, channels_last, dist)
        s = cfg.sched
        if s.name == "onecycle":  # before a range test spends minutes: the schedule must fit the real step count
            onecycle_peak_fraction(t.epochs, len(train_loader), s.peak_epoch, s.peak_fraction)
        finder = None
        if auto:
            # Model, RNG and data-order state are restored after the sweep: training then starts
            # exactly as it would have with the chosen LR written in the recipe.
            finder = _range_test(cfg, model, train_loader, val_loader, gen, device, precision, channels_last)
            _resolve_auto_lr(cfg, auto, finder)
        o, s = cfg.optim, cfg.sched
        optimizer = create_optimizer(model, o.name, o.lr, weight_decay=o.weight_decay, momentum=o.momentum, nesterov=o.nesterov, betas=o.betas)
        scheduler = create_scheduler(
            optimizer, s.name, epochs=t.epochs, steps_per_epoch=len(train_loader), max_lr=s.max_lr,
            peak_epoch=s.peak_epoch, peak_fraction=s.peak_fraction, div_factor=s.div_factor, final_div_factor=s.final_div_factor,
            anneal=s.anneal, cycle_momentum=s.cycle_momentum, base_momentum=s.base_momentum, max_momentum=s.max_momentum,
            monitor=s.monitor, mode=s.mode, factor=s.factor, patience=s.patience, threshold=s.threshold,
            threshold_mode=s.threshold_mode, min_lr=s.min_lr, step_size=s.step_size, gamma=s.gamma,
        )
        forward_model = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Gradients are averaged over ranks: with equal shards that is the global-batch mean.
            forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        compiled = torch.compile(forward_model) if t.compile else (forward_model if dist.enabled else None)

        # Only now, with config, data and model known good, does the run folder come to be.
        ckpt_dir = run_dir / "checkpoints"
        if dist.is_main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        files = [MetricsLogger(run_dir / "metrics.jsonl"), LRMonitor(run_dir / "lr_steps.json"), Checkpointer(ckpt_dir, t.checkpoint_metric)] if dist.is_main else []
        trainer = Trainer(
            model, optimizer, scheduler, train_loader=train_loader, test_loader=test_loader, val_loader=val_loader, epochs=t.epochs,
            device=device, precision=precision, channels_last=channels_last, label_smoothing=o.label_smoothing,
            l1=o.l1, grad_clip=o.grad_clip, progress=t.progress, generator=gen, compiled_model=compiled,
            callbacks=[*files, *callbacks],
        )
        trainer.distributed = dist.enabled
        if dist.enabled:
            trainer.eval_model = model
        if resume is not None:
            if checkpoint_exists(ckpt_dir / "last"):
                state = load_checkpoint(ckpt_dir / "last", map_location=device)
                try:
                    trainer.load_state_dict(state)
                except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
                    raise VislabError(f"--resume {str(run_dir)!r}: the checkpoint does not fit the run's config.yaml ({str(e).splitlines()[0][:160]}); was config.yaml edited? Start a new run instead.") from None
                log.info("resuming %s after epoch %d of %d", run_dir, trainer.epoch, t.epochs)
            else:
                log.info("resuming %s from the start: it stopped before its first epoch ended", run_dir)
            # Rows of an epoch whose checkpoint never landed are dropped: that epoch runs again.
            if dist.is_main:
                write_jsonl(run_dir / "metrics.jsonl", trainer.history)
        header = f"# vislab {__version__} resolved config of recipe {name!r}\n"
        if finder is not None:
            finder.save(run_dir)
            sugg = finder.suggestions()
            for field_name in auto:
                header += f"# {field_name}: auto -> {sugg['chosen']!r} (LR range test, {sugg['method']} suggestion; sweep in lr_find.json)\n"
        if dist.is_main:
            atomic_write_text(run_dir / "config.yaml", header + config_to_yaml(cfg))
        log.info(
            "run %s: %s on %s (%s, %s, channels_last=%s), %d train / %d test images",
            run_dir, cfg.model.name, ds.name, _device_name(device), precision.name, channels_last, ds.train_x.shape[0], ds.test_x.shape[0],
        )
        trainer.interrupt_dir = ckpt_dir if dist.is_main else None
        try:
            trainer.fit()
        except Interrupted as e:
            e.run_dir = str(run_dir)
            # The run so far stays usable: summary and report of the completed epochs, then stop.
            summary = _summary(run_dir, name, cfg, trainer, device, precision, channels_last, started, ds, model)
            summary["status"] = "interrupted"
            _finish(run_dir, summary, ds, dist, t.report and bool(trainer.history))
            raise

    summary = _summary(run_dir, name, cfg, trainer, device, precision, channels_last, started, ds, model)
    if dist.enabled:
        summary["world_size"] = dist.world_size
    if finder is not None:
        summary["lr_find"] = {"fields": auto, **finder.to_dict()["chosen"], "seconds": finder.results["seconds"]}
    _finish(run_dir, summary, ds, dist, t.report)
    return Run(run_dir=run_dir, config=cfg, model=model, history=trainer.history, summary=summary)


def _finish(run_dir: Path, summary: dict[str, Any], ds, dist: DistInfo, report: bool) -> None:
    """summary.json and the report, written by rank 0 only, after the process group is closed."""
    if dist.is_main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    shutdown()  # a no-op outside torchrun
    if dist.is_main and report:
        _write_report(run_dir, ds)


def _write_report(run_dir: Path, ds) -> None:
    from .report import write_report

    try:
        path = write_report(run_dir, dataset=ds)  # reuses the data set already in memory
        log.info("report: %s", path)
    except Exception as e:  # noqa: BLE001 - a finished run must not fail on its report
        log.warning("report not written (%s: %s); `vislab report %s` retries", type(e).__name__, e, run_dir)
