"""Config -> objects: model, augmentation spec, data, loaders, optimizer and scheduler keywords.

The libraries (data, augment, models, engine) never see a Config; this module is the one adapter
between the typed config and their plain keyword arguments, as timm's `optimizer_kwargs(cfg)`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, OptimConfig, SchedConfig
from .engine import DeviceLoader, DistInfo, TensorBoardLogger
from .errors import ConfigError
from .rundir import TENSORBOARD_DIR

SINGLE_PROCESS = DistInfo()  # rank 0 of 1: a run outside torchrun (frozen, so safe as a default)
# Devices whose tensors torch's SyncBatchNorm accepts during training.
SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")
# trainer.loggers name -> (module it needs, the extra that installs it)
LOGGER_PACKAGES = {"tensorboard": ("tensorboardX", "tensorboard")}
# Training images a data-dependent first layer is computed from (airbench's 5,000; a 12x12 patch matrix needs few).
WHITENING_IMAGES = 5000


def model_kwargs(cfg: Config) -> dict[str, Any]:
    """`create_model` keywords of the model section (only those the architecture takes)."""
    m = cfg.model
    kwargs: dict[str, Any] = {"norm": m.norm, "width": m.width}
    if m.norm == "group":
        kwargs["groups"] = m.groups
    if m.last_stride is not None:
        kwargs["last_stride"] = m.last_stride
    if m.logit_scale is not None:
        kwargs["logit_scale"] = m.logit_scale
    if m.bn_momentum is not None:
        kwargs["bn_momentum"] = m.bn_momentum
    if m.widths is not None:
        kwargs["widths"] = m.widths
    return kwargs


def build_model(cfg: Config, num_classes: int) -> nn.Module:
    from .models import create_model

    return create_model(cfg.model.name, num_classes=num_classes, **model_kwargs(cfg))


def augment_spec(cfg: Config):
    """The augment section as the `AugmentSpec` both augmentation backends read."""
    from .augment import AugmentSpec

    a = cfg.augment
    return AugmentSpec(
        crop_pad=a.crop_pad,
        pad_mode=a.pad_mode,
        flip_p=a.flip_p,
        flip=a.flip,
        rotate_deg=a.rotate_deg,
        cutout_size=(a.cutout_size, a.cutout_size),
        cutout_p=a.cutout_p,
        cutout_fill=a.cutout_fill,
        trivial_augment=a.trivial_augment,
    )


def data_kwargs(cfg: Config) -> dict[str, Any]:
    """`load_dataset` keywords of the data section (besides its name and root)."""
    d = cfg.data
    return dict(
        train_size=d.train_size,
        test_size=d.test_size,
        download=d.download,
        cache_dir=d.cache_dir,
        image_size=d.image_size,
        val_size=d.val_size,
        val_seed=d.val_seed,
    )


def load_data(cfg: Config, dataset=None, root: str | None = None):
    """The config's data set; `dataset` (an ImageDataset already in memory) replaces loading, and gets
    the config's validation split when it has none. `root` overrides data.root (another machine's path)."""
    from .data import load_dataset, with_validation_split

    d = cfg.data
    if dataset is not None:
        if d.val_size and dataset.val_x is None:
            return with_validation_split(dataset, d.val_size, d.val_seed)
        return dataset
    return load_dataset(d.name, root if root is not None else d.root, **data_kwargs(cfg))


def build_mixer(a: Any, generator: torch.Generator | None) -> Any:
    """MixUp / CutMix of each training batch as the augment section asks (None when both alphas are 0).

    With both on, each batch takes one of them with even odds (timm's switch_prob 0.5); choosing reads one
    number back from the generator's device, a host sync per batch that only this combination pays.
    """
    from .augment import cutmix, mixup

    if not (a.mixup_alpha or a.cutmix_alpha):
        return None

    def mix(x: torch.Tensor, y: torch.Tensor):
        use_cutmix = a.cutmix_alpha > 0 and (
            a.mixup_alpha == 0
            or bool(
                torch.rand((), generator=generator, device=generator.device if generator is not None else None) < 0.5
            )
        )
        if use_cutmix:
            return cutmix(x, y, a.cutmix_alpha, generator)
        return mixup(x, y, a.mixup_alpha, generator)

    return mix


def step_kwargs(o: OptimConfig) -> dict[str, Any]:
    """What one training step does besides the optimizer (label smoothing, the L1 term, gradient clipping):
    the same for the Trainer and the LR range test, so that the sweep measures the loss training minimises."""
    return dict(label_smoothing=o.label_smoothing, l1=o.l1, grad_clip=o.grad_clip)


def optimizer_kwargs(o: OptimConfig) -> dict[str, Any]:
    """`create_optimizer` keywords of the optim section."""
    return dict(
        name=o.name,
        lr=o.lr,
        weight_decay=o.weight_decay,
        momentum=o.momentum,
        nesterov=o.nesterov,
        betas=o.betas,
        bias_lr_scale=o.bias_lr_scale,
        bias_weight_decay=o.bias_weight_decay,
        norm_weight_decay=o.norm_weight_decay,
    )


def range_test_optimizer_kwargs(cfg: Config, start_lr: float) -> dict[str, Any]:
    """The optimizer an LR range test sweeps with: training's, with the momentum training will use at the suggested LR."""
    kwargs = {**optimizer_kwargs(cfg.optim), "lr": start_lr}
    s = cfg.sched
    if s.name == "onecycle" and s.cycle_momentum:
        # The suggestion becomes OneCycle's peak LR, where OneCycle trains with base_momentum: sweep with that.
        kwargs.update(momentum=s.base_momentum, betas=(s.base_momentum, cfg.optim.betas[1]))
    return kwargs


def build_lr_finder(
    cfg: Config, model: nn.Module, train_loader, generator, device: torch.device, precision, channels_last: bool
):
    """An LRFinder with the config's optimizer (at the momentum training will use at the suggested LR) and loss settings."""
    from .engine import create_optimizer
    from .tuner import LRFinder

    o, f = cfg.optim, cfg.lr_find
    suggestion = f.suggestion or ("onecycle" if cfg.sched.name == "onecycle" else "valley")
    # The sweep sets every step's LR itself; the optimizer's own LR is never used.
    optimizer = create_optimizer(model, **range_test_optimizer_kwargs(cfg, f.start_lr))
    return LRFinder(
        model,
        optimizer,
        train_loader,
        device=device,
        precision=precision,
        channels_last=channels_last,
        generator=generator,
        progress=cfg.trainer.progress,
        suggestion=suggestion,
        **step_kwargs(o),
    )


def range_test_kwargs(cfg: Config, val_loader) -> dict[str, Any]:
    """`LRFinder.range_test` keywords of the lr_find section; held-out measures read the validation split, never the test split."""
    f = cfg.lr_find
    if f.measure != "loss" and val_loader is None:
        # The test split judges the finished model; choosing an LR on it would leak it into training.
        raise ConfigError(
            f"lr_find.measure = {f.measure} needs a validation split, and the range test never reads the test split: set "
            f"data.val_size (e.g. 5000 images held out of train; at least {f.val_batches} batches of "
            f"{cfg.trainer.eval_batch_size or 2 * cfg.trainer.batch_size}), or use lr_find.measure=loss."
        )
    return dict(
        start_lr=f.start_lr,
        end_lr=f.end_lr,
        num_iter=f.num_iter,
        mode=f.mode,
        smooth_f=f.smooth_f,
        diverge_th=f.diverge_th,
        val_loader=val_loader if f.measure != "loss" else None,
        val_batches=f.val_batches,
        accuracy=f.measure == "accuracy",
    )


def check_distributed(cfg: Config, dist: DistInfo, device: torch.device) -> None:
    """Refuse, before any folder exists, what a torchrun job of `dist.world_size` processes on `device` cannot run."""
    t = cfg.trainer
    if not t.drop_last:
        raise ConfigError(
            "trainer.drop_last = false is not supported under torchrun: a short last batch would split unevenly across the ranks."
        )
    if t.checkpoint_minutes is not None:
        # Each rank holds the sums of its share of every batch, and a save on rank 0's clock would need every
        # rank to join a reduction at the same step; torchrun restarts a job from epoch ends instead.
        raise ConfigError(
            f"trainer.checkpoint_minutes = {t.checkpoint_minutes:g} is not supported under torchrun: mid-epoch checkpoints "
            "are for one process. Set trainer.checkpoint_minutes=null (checkpoints at epoch ends), or train in one process."
        )
    if t.batch_size % dist.world_size:
        raise ConfigError(
            f"trainer.batch_size = {t.batch_size} must be divisible by the {dist.world_size} processes of the torchrun job "
            "(it is the global batch size)."
        )
    if t.sync_bn and device.type not in SYNC_BN_DEVICES:
        # torch's SyncBatchNorm raises mid-step for any other device.
        raise ConfigError(
            f"trainer.sync_bn = true needs GPU processes (SyncBatchNorm runs on {', '.join(SYNC_BN_DEVICES)}), but this "
            f"torchrun job trains on {device.type}. Set trainer.sync_bn=false: each process then normalizes with its "
            f"own share of the batch ({t.batch_size // dist.world_size} images), or use a norm without batch "
            "statistics (model.norm=group or layer)."
        )


def scheduler_kwargs(s: SchedConfig) -> dict[str, Any]:
    """`create_scheduler` keywords of the sched section (epochs and steps per epoch come from the run)."""
    return dict(
        name=s.name,
        max_lr=s.max_lr,
        peak_epoch=s.peak_epoch,
        peak_fraction=s.peak_fraction,
        div_factor=s.div_factor,
        final_div_factor=s.final_div_factor,
        anneal=s.anneal,
        cycle_momentum=s.cycle_momentum,
        base_momentum=s.base_momentum,
        max_momentum=s.max_momentum,
        monitor=s.monitor,
        mode=s.mode,
        factor=s.factor,
        patience=s.patience,
        threshold=s.threshold,
        threshold_mode=s.threshold_mode,
        min_lr=s.min_lr,
        step_size=s.step_size,
        gamma=s.gamma,
    )


def _albu_common(cfg: Config, device: torch.device, seed: int, dist: DistInfo) -> dict:
    workers = cfg.augment.workers
    if workers is None:
        # The processes of a torchrun job on one machine share its cores: N ranks x all cores would oversubscribe N-fold.
        workers = max(1, (os.cpu_count() or 1) // dist.local_world_size)
    return dict(
        num_workers=workers, seed=seed, pin_memory=device.type == "cuda", rank=dist.rank, world_size=dist.world_size
    )


def _eval_loader(
    cfg: Config,
    ds,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    channels_last: bool,
    seed: int,
    dist: DistInfo,
):
    """Normalized, unaugmented, unshuffled batches of (x, y), sharded over the ranks under DDP."""
    t = cfg.trainer
    eval_bs = t.eval_batch_size or 2 * t.batch_size
    if cfg.augment.backend == "tensor":
        from .augment import TensorAugment

        aug = TensorAugment(augment_spec(cfg), ds.mean, ds.std, channels_last=channels_last)
        return DeviceLoader(
            x.to(device),
            y.to(device),
            eval_bs,
            lambda b, g: aug.normalize_only(b),
            rank=dist.rank,
            world_size=dist.world_size,
        )
    from .augment import albumentations_loader

    per_rank = max(1, eval_bs // dist.world_size)
    return albumentations_loader(
        x,
        y,
        augment_spec(cfg),
        ds.mean,
        ds.std,
        batch_size=per_rank,
        shuffle=False,
        train=False,
        **_albu_common(cfg, device, seed, dist),
    )


def build_loaders(
    cfg: Config, ds, device: torch.device, channels_last: bool, seed: int, dist: DistInfo = SINGLE_PROCESS
):
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
        # seed keys alternating flips' first epoch: the same on every rank and after a resume.
        aug = TensorAugment(spec, ds.mean, ds.std, channels_last=channels_last, seed=seed)
        train_x, train_y = ds.train_x.to(device), ds.train_y.to(device)
        train = DeviceLoader(
            train_x,
            train_y,
            t.batch_size,
            aug,
            shuffle=True,
            drop_last=t.drop_last,
            generator=gen,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        return train, test, gen
    from .augment import albumentations_loader

    per_rank = t.batch_size // dist.world_size
    train = albumentations_loader(
        ds.train_x,
        ds.train_y,
        spec,
        ds.mean,
        ds.std,
        batch_size=per_rank,
        shuffle=True,
        train=True,
        drop_last=t.drop_last,
        **_albu_common(cfg, device, seed, dist),
    )
    return train, test, getattr(train, "generator", None)


def build_val_loader(
    cfg: Config, ds, device: torch.device, channels_last: bool, seed: int, dist: DistInfo = SINGLE_PROCESS
):
    """Batches of the validation split held out of train (data.val_size), or None without one."""
    if ds.val_x is None:
        return None
    return _eval_loader(cfg, ds, ds.val_x, ds.val_y, device, channels_last, seed, dist)


def whitening_images(ds, seed: int) -> torch.Tensor:
    """A seeded sample of the training images, normalized as training normalizes them: (n, C, H, W) float32 on the CPU."""
    from .augment import normalize

    # A random draw, not the first images: an image folder's training split comes sorted by class.
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(ds.train_x.shape[0], generator=g)[:WHITENING_IMAGES]
    return normalize(ds.train_x[idx], ds.mean, ds.std)


def build_training(
    cfg: Config,
    ds,
    device: torch.device,
    channels_last: bool,
    dist: DistInfo = SINGLE_PROCESS,
    *,
    fresh: bool = True,
):
    """Seeded model and loaders, exactly as training starts: (model, train_loader, test_loader, val_loader or None, generator).

    A model with a data-dependent first layer (`init_whitening`, airbench's) gets it from the training images
    when `fresh`; a resumed run passes False, as its checkpoint carries the weights.
    """
    from .env import seed_everything

    t = cfg.trainer
    seed_everything(t.seed)
    model = build_model(cfg, ds.num_classes)
    if fresh and hasattr(model, "init_whitening"):
        # Its own generator: the global RNG stream the rest of training draws from stays as without it.
        model.init_whitening(whitening_images(ds, t.seed))
    if dist.enabled and t.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader, test_loader, gen = build_loaders(cfg, ds, device, channels_last, t.seed, dist)
    val_loader = build_val_loader(cfg, ds, device, channels_last, t.seed, dist)
    if len(train_loader) == 0:
        raise ConfigError(
            f"trainer.batch_size = {t.batch_size} is larger than the training set ({ds.train_x.shape[0]} images); "
            "lower it or set trainer.drop_last=false."
        )
    return model, train_loader, test_loader, val_loader, gen


def check_loggers(cfg: Config) -> None:
    """Refuse, before any folder exists, a logger whose package is not installed."""
    for name in cfg.trainer.loggers:
        module, extra = LOGGER_PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"trainer.loggers = {cfg.trainer.loggers!r}: the {name} logger needs the {module} package, which is not "
                f"installed. Install it with `pip install 'vislab[{extra}]'`, or remove {name} from trainer.loggers "
                f"(--set trainer.loggers=[])."
            ) from None


def logger_hparams(cfg: Config, recipe: str, precision: str) -> dict[str, str | bool | int | float]:
    """The hyper-parameters a logger records beside the final metrics: the same keys for every run, none None
    (TensorBoard's HParams dashboard takes its columns from one run and drops a key whose value is missing)."""
    o, s, t, a = cfg.optim, cfg.sched, cfg.trainer, cfg.augment
    lr = float(o.lr)  # `auto` is resolved before the loggers are built
    return {
        "recipe": recipe,
        "data.name": cfg.data.name,
        "model.name": cfg.model.name,
        "model.norm": cfg.model.norm,
        "model.width": cfg.model.width,
        "optim.name": o.name,
        "optim.lr": lr,
        "optim.weight_decay": o.weight_decay,
        "optim.label_smoothing": o.label_smoothing,
        "sched.name": s.name,
        "sched.max_lr": float(s.max_lr) if s.name == "onecycle" and s.max_lr is not None else lr,  # OneCycle's peak
        "trainer.batch_size": t.batch_size,
        "trainer.epochs": t.epochs,
        "trainer.precision": precision,  # as resolved (auto -> bf16 / fp16 / fp32)
        "trainer.seed": t.seed,
        "augment": not augment_spec(cfg).is_identity(),  # on/off
        "augment.backend": a.backend,
        "augment.crop_pad": a.crop_pad,
        "augment.flip_p": a.flip_p,
        "augment.rotate_deg": a.rotate_deg,
        "augment.cutout_size": a.cutout_size,
        "augment.flip": a.flip,
        "augment.trivial_augment": a.trivial_augment,
        "augment.mixup_alpha": a.mixup_alpha,
        "augment.cutmix_alpha": a.cutmix_alpha,
        "trainer.ema_decay": t.ema_decay if t.ema_decay is not None else 0.0,  # 0: no EMA
        "trainer.tta": t.tta,
    }


def build_loggers(
    cfg: Config, run_dir: Path, dist: DistInfo = SINGLE_PROCESS, *, recipe: str, precision: str
) -> list[TensorBoardLogger]:
    """The trainer.loggers callbacks of a run: rank 0's only, as every other file the run writes."""
    if not dist.is_main:
        return []
    loggers = []
    for name in dict.fromkeys(cfg.trainer.loggers):
        if name == "tensorboard":
            loggers.append(
                TensorBoardLogger(
                    Path(run_dir) / TENSORBOARD_DIR,
                    every_n_steps=cfg.trainer.log_every_n_steps,
                    hparams=logger_hparams(cfg, recipe, precision),
                )
            )
    return loggers
