"""The typed experiment config: sections data / augment / model / optim / sched / trainer / lr_find."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# A learning rate, or "auto": `vislab train` runs the LR range test (section lr_find) and uses its suggestion.
LearningRate = Annotated[float, Field(gt=0.0)] | Literal["auto"]
# Where `trainer.loggers` can send the metrics besides metrics.jsonl (which stays the canonical log).
LoggerName = Literal["tensorboard"]


class _Section(BaseModel):
    # Unknown keys are typos more often than not: reject them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    name: Literal["cifar10", "cifar100", "imagefolder"] = "cifar10"  # data set family
    root: str | None = None  # folder holding the data (None: the cache folder for cifar*)
    download: bool = True  # fetch the official archive when cifar* is missing
    cache_dir: str | None = None  # where downloads and decoded caches live (None: user cache dir)
    train_size: int | None = Field(None, gt=0)  # class-balanced number of training images (None: all)
    test_size: int | None = Field(None, gt=0)  # class-balanced number of test images (None: all)
    val_size: int = Field(
        0, ge=0
    )  # class-balanced random validation images held out of train (0: none, as the course ran)
    val_seed: int = 0  # seed of the validation draw (apart from trainer.seed, so the split stays put when that changes)
    image_size: int | None = Field(None, gt=0)  # resize imagefolder images to this square size


class AugmentConfig(_Section):
    backend: Literal["tensor", "albumentations"] = "tensor"  # batched on-device, or per-sample DataLoader
    crop_pad: int = Field(4, ge=0, le=64)  # pad by this many pixels then random-crop back; 0 disables
    pad_mode: Literal["reflect", "constant"] = "reflect"  # border filling of the pad
    flip_p: float = Field(0.5, ge=0.0, le=1.0)  # probability of a horizontal flip
    flip: Literal["random", "alternate"] = "random"  # alternate (airbench): epoch 1 draws, later epochs invert
    rotate_deg: float = Field(0.0, ge=0.0, le=180.0)  # rotate by an angle drawn in [-deg, +deg]
    cutout_size: int = Field(0, ge=0)  # side of the square cutout hole in pixels; 0 disables
    cutout_p: float = Field(1.0, ge=0.0, le=1.0)  # probability an image gets a hole
    cutout_fill: Literal["mean"] | float = "mean"  # hole value in pixel units, or the data mean
    trivial_augment: bool = False  # TrivialAugment (wide) per image, before crop / flip / rotate / cutout
    mixup_alpha: float = Field(0.0, ge=0.0, allow_inf_nan=False)  # MixUp, lam ~ Beta(alpha, alpha) per batch; 0: off
    cutmix_alpha: float = Field(0.0, ge=0.0, allow_inf_nan=False)  # CutMix, lam ~ Beta(alpha, alpha) per batch; 0: off
    mix_off_epochs: int = Field(0, ge=0)  # the last N epochs train without MixUp / CutMix
    workers: int | None = Field(
        None, ge=0
    )  # DataLoader workers per process (albumentations backend; None: cores / processes on this machine)

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        if self.flip == "alternate" and self.flip_p == 0:
            raise ValueError(
                "augment.flip = alternate with augment.flip_p = 0: flip_p is the share of images the first epoch flips "
                "(every later epoch inverts the one before), and 0 reads as 'no flipping'; set augment.flip_p=0.5 "
                "(airbench's), or augment.flip=random to keep flipping off"
            )
        if self.backend == "albumentations" and self.flip == "alternate":
            # Per-sample transforms see one image at a time, never its index in the data set or the epoch.
            raise ValueError(
                "augment.flip = alternate needs each image's index in the data set and the epoch, which the per-sample "
                "albumentations backend never sees: use augment.backend=tensor (the default) for alternating flips, "
                "or augment.flip=random with augment.backend=albumentations"
            )
        if self.backend == "albumentations" and self.trivial_augment:
            raise ValueError(
                "augment.trivial_augment = true runs in the tensor backend only (albumentations 2.x has no "
                "TrivialAugment): use augment.backend=tensor (the default), or augment.trivial_augment=false with "
                "augment.backend=albumentations"
            )
        return self


class ModelConfig(_Section):
    name: str = "resnet9"  # a name from `vislab.models.list_models()`
    norm: Literal["batch", "group", "layer"] = "batch"  # layer = GroupNorm with one group
    groups: int = Field(32, gt=0)  # groups of GroupNorm when norm == "group"
    width: float = Field(1.0, gt=0.0, le=8.0)  # channel multiplier (1.0 = the reference widths)
    last_stride: int | None = Field(None, ge=1, le=2)  # resnet18/34: 1 keeps an 8x8 final map
    logit_scale: float | None = Field(None, gt=0.0)  # resnet9/airbench: logits x this (None: 1; airbench 1/9)
    bn_momentum: float | None = Field(None, gt=0.0, le=1.0)  # BatchNorm running-stat momentum (None: 0.1; airbench 0.4)
    widths: tuple[int, int, int] | None = None  # airbench: its three blocks' channels before width (None: 64, 256, 256)


class OptimConfig(_Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: LearningRate = 0.05  # base learning rate, or auto (OneCycle: see sched.max_lr)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD momentum
    nesterov: bool = False  # SGD Nesterov momentum
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW betas
    weight_decay: float = Field(5e-4, ge=0.0)
    bias_lr_scale: float = Field(1.0, gt=0.0)  # LR multiplier of all biases, norm shifts included (airbench: 64)
    bias_weight_decay: float | None = Field(None, ge=0.0)  # of biases (None: norm_weight_decay / weight_decay)
    norm_weight_decay: float | None = Field(None, ge=0.0)  # of normalization scales and shifts (None: weight_decay)
    l1: float = Field(0.0, ge=0.0)  # L1 penalty on the weights, added to the loss
    grad_clip: float | None = Field(None, gt=0.0)  # clip the gradient norm to this value
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        # momentum and nesterov are SGD settings (Adam has betas); like timm, other optimizers ignore them.
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov=true needs optim.momentum > 0")
        return self


class SchedConfig(_Section):
    name: Literal["onecycle", "plateau", "step", "cosine", "none"] = "onecycle"
    # OneCycle, stated in epochs and stepped per batch
    max_lr: LearningRate | None = None  # peak LR (None: optim.lr; auto: from the LR range test)
    peak_epoch: float | None = Field(
        None, gt=0.0
    )  # epoch at which the LR peaks (5 of 24 in the course); fixed when the run is shortened
    peak_fraction: float | None = Field(
        None, gt=0.0, lt=1.0
    )  # or: the peak as a share of the run (torch's pct_start); None and no peak_epoch: 0.3
    div_factor: float = Field(10.0, gt=0.0)  # start LR = max_lr / div_factor
    final_div_factor: float = Field(100.0, gt=0.0)  # final LR = start LR / final_div_factor
    anneal: Literal["linear", "cos"] = "linear"  # shape of both OneCycle phases
    cycle_momentum: bool = True  # OneCycle moves SGD momentum / Adam beta1 against the LR (torch's default); false keeps optim.momentum / betas[0]
    base_momentum: float = Field(0.85, ge=0.0, lt=1.0)  # momentum at the peak LR when cycle_momentum
    max_momentum: float = Field(0.95, ge=0.0, lt=1.0)  # momentum at the start and end when cycle_momentum
    # ReduceLROnPlateau, stepped per epoch on a test metric
    monitor: Literal["test_loss", "test_acc", "val_loss", "val_acc"] = "test_loss"
    mode: Literal["min", "max"] = "min"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(2, ge=0)
    threshold: float = Field(1e-4, ge=0.0)
    threshold_mode: Literal["rel", "abs"] = "abs"
    min_lr: float = Field(0.0, ge=0.0)  # plateau floor; cosine end value
    # StepLR
    step_size: int = Field(10, gt=0)  # epochs between decays
    gamma: float = Field(0.1, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> SchedConfig:
        if self.peak_epoch is not None and self.peak_fraction is not None:
            raise ValueError(
                f"sched.peak_epoch = {self.peak_epoch:g} and sched.peak_fraction = {self.peak_fraction:g} both place the OneCycle "
                "peak; set one of them to null"
            )
        if self.base_momentum > self.max_momentum:
            raise ValueError(
                f"sched.base_momentum = {self.base_momentum:g} must not exceed sched.max_momentum = {self.max_momentum:g}"
            )
        if self.max_lr == "auto" and self.name != "onecycle":
            raise ValueError(
                f"sched.max_lr=auto only applies to sched.name=onecycle (got {self.name}); use optim.lr=auto instead"
            )
        if self.name == "plateau":
            wanted = "max" if self.monitor.endswith("_acc") else "min"
            if self.mode != wanted:
                raise ValueError(f"sched.monitor={self.monitor} needs sched.mode={wanted}, got {self.mode}")
        return self


class TrainerConfig(_Section):
    epochs: int = Field(5, gt=0, le=10_000)
    batch_size: int = Field(512, gt=0, le=65_536)
    eval_batch_size: int | None = Field(None, gt=0)  # None: 2 x batch_size
    device: str = "auto"  # auto (CUDA when present, else CPU), cpu, cuda, cuda:N, mps
    precision: Literal["auto", "bf16", "fp16", "fp32"] = (
        "auto"  # auto: bf16 on CUDA sm80+ and CPUs with native bf16 (avx512_bf16 / amx_bf16), fp16 + GradScaler on older GPUs, else fp32
    )
    channels_last: Literal["auto", True, False] = "auto"
    compile: bool = False  # torch.compile the model (slow start; pays off on long GPU runs)
    seed: int = Field(0, ge=0)
    deterministic: bool = False  # deterministic algorithms (exact resume; slower on GPU)
    checkpoint_metric: Literal[
        "test_acc", "test_loss", "val_acc", "val_loss", "ema_test_acc", "ema_test_loss", "ema_val_acc", "ema_val_loss"
    ] = "test_acc"  # what picks the `best` checkpoint (val_*: needs data.val_size; ema_*: trainer.ema_decay)
    ema_decay: float | None = Field(None, gt=0.0, lt=1.0)  # keep an EMA of the weights with this decay; None: off
    ema_warmup: bool = True  # EMA decay min(decay, (1 + t) / (10 + t)) at update t, as timm's ModelEmaV3
    tta: Literal["none", "flip", "flip_translate"] = (
        "none"  # also evaluate the final weights with test-time augmentation (summary.json, report)
    )
    progress: bool = True  # per-step progress bar
    drop_last: bool = True  # drop the last incomplete training batch
    report: bool = True  # write report.md / report.html into the run folder at the end
    sync_bn: bool = False  # under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)
    loggers: list[
        LoggerName
    ] = []  # also write the metrics to: tensorboard (event files in `RUN/tensorboard/`; needs `pip install 'vislab[tensorboard]'`, see [tensorboard.md](tensorboard.md)); `--set trainer.loggers=[tensorboard]`; may change on `--resume`
    log_every_n_steps: int = Field(50, gt=0)  # loggers: training loss and LR every this many optimizer steps
    checkpoint_minutes: float | None = Field(
        None, gt=0.0
    )  # also save `checkpoints/partial` inside an epoch every this many minutes (tensor backend): a killed run then resumes from there, exactly, instead of repeating the whole epoch; None: at epoch ends only; may change on `--resume`

    @field_validator("loggers", mode="before")
    @classmethod
    def _one_logger(cls, v: object) -> object:
        # `--set trainer.loggers=tensorboard` and `loggers: tensorboard` name one logger without YAML's brackets.
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        dev = self.device
        ok = dev in ("auto", "cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())
        if not ok:
            raise ValueError(f"trainer.device must be auto, cpu, cuda, cuda:N or mps, got {dev!r}")
        if self.checkpoint_metric.startswith("ema_") and self.ema_decay is None:
            raise ValueError(
                f"trainer.checkpoint_metric = {self.checkpoint_metric} picks the best epoch by the EMA weights, which exist only "
                "with trainer.ema_decay set (e.g. 0.999)"
            )
        return self


class LRFindConfig(_Section):
    """The LR range test of `vislab lr-find`, and of `vislab train` when optim.lr or sched.max_lr is auto."""

    start_lr: float = Field(1e-7, gt=0.0)  # LR of the first step
    end_lr: float = Field(10.0, gt=0.0)  # LR of the last step (the sweep usually diverges before)
    num_iter: int = Field(
        100, ge=11, le=100_000
    )  # steps, one batch each (>= 11: a suggestion needs 10 after the first 10% are skipped)
    mode: Literal["exp", "linear"] = "exp"  # spacing of the LRs between start_lr and end_lr
    measure: Literal["loss", "val_loss", "accuracy"] = (
        "loss"  # training-batch loss, or loss / accuracy on validation batches (needs data.val_size)
    )
    val_batches: int = Field(4, gt=0)  # batches of the validation split (data.val_size) for val_loss / accuracy
    smooth_f: float = Field(
        0.05, ge=0.0, lt=1.0
    )  # weight of the newest value in the smoothed curve; 0 disables smoothing
    diverge_th: float = Field(5.0, gt=1.0)  # stop once the smoothed loss exceeds diverge_th x its best value
    suggestion: Literal["valley", "steepest", "min_loss", "min_loss_div10", "onecycle"] | None = (
        None  # what auto uses; None: onecycle's peak under OneCycle, else valley
    )

    @model_validator(mode="after")
    def _check(self) -> LRFindConfig:
        if self.end_lr <= self.start_lr:
            raise ValueError(f"lr_find.end_lr ({self.end_lr}) must be larger than lr_find.start_lr ({self.start_lr})")
        return self


class Config(_Section):
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    sched: SchedConfig = SchedConfig()
    trainer: TrainerConfig = TrainerConfig()
    lr_find: LRFindConfig = LRFindConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        s, epochs = self.sched, self.trainer.epochs
        if not self.data.val_size:
            for field, metric in (
                ("sched.monitor", s.monitor if s.name == "plateau" else ""),
                ("trainer.checkpoint_metric", self.trainer.checkpoint_metric),
            ):
                if metric.removeprefix("ema_").startswith("val_"):
                    raise ValueError(
                        f"{field} = {metric} needs a validation split: set data.val_size (e.g. 5000 images held out of train), or monitor test_loss / test_acc"
                    )
        a = self.augment
        if self.trainer.checkpoint_minutes is not None and a.backend != "tensor":
            raise ValueError(
                f"trainer.checkpoint_minutes = {self.trainer.checkpoint_minutes:g} saves checkpoints inside an epoch, which only "
                f"the tensor backend can resume exactly (it saves its data order and position); augment.backend = {a.backend}. "
                "Use augment.backend=tensor (the default), or trainer.checkpoint_minutes=null (checkpoints at epoch ends)"
            )
        if (a.mixup_alpha or a.cutmix_alpha) and a.mix_off_epochs >= epochs:
            raise ValueError(
                f"augment.mix_off_epochs = {a.mix_off_epochs} switches MixUp / CutMix off for the last {a.mix_off_epochs} "
                f"epochs of {epochs}, so no epoch would mix: use fewer (e.g. {max(epochs // 5, 0)}) or set the alphas to 0"
            )
        if s.name == "onecycle" and s.peak_epoch is not None and not s.peak_epoch < epochs:
            raise ValueError(
                f"sched.peak_epoch = {s.peak_epoch:g} must lie strictly between 0 and trainer.epochs = {epochs}. To shorten a run and "
                f"keep the schedule's shape, state the peak as a share of the run: --set sched.peak_epoch=null --set "
                f"sched.peak_fraction=0.3 (torch's default), or give a sched.peak_epoch below {epochs}"
            )
        return self
