"""Optimizer and LR-scheduler factories taking plain keywords (timm style)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("onecycle", "plateau", "step", "cosine", "none")


# Layers whose parameters are a normalization's per-channel scale and shift.
NORM_LAYERS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
# Kinds of parameters, in the order their groups come: the plain weights first, so that param_groups[0]["lr"]
# (what the trainer logs and the LR range test records) is the base LR.
PARAM_KINDS = ("weights", "norm", "norm_bias", "bias")


def _kind(module: nn.Module, name: str) -> str:
    norm = isinstance(module, NORM_LAYERS)
    if name == "bias":
        return "norm_bias" if norm else "bias"
    return "norm" if norm else "weights"


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    *,
    bias_lr_scale: float = 1.0,
    bias_weight_decay: float | None = None,
    norm_weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """The trainable parameters of `model` as optimizer groups, one per distinct (LR scale, weight decay).

    Biases (a norm layer's shift included) train at `lr * bias_lr_scale`. Weight decay: a bias gets
    `bias_weight_decay`, else, if it is a norm layer's shift, `norm_weight_decay`, else `weight_decay`; a
    norm layer's scale gets `norm_weight_decay`, else `weight_decay`; every other weight `weight_decay`.
    Each group carries `name` (the kinds it holds, "+"-joined) and `lr_scale`, by which schedulers and
    the LR range test keep the groups' LR ratio. Parameters keep the model's order inside a group, so
    with the defaults there is one group in `model.parameters()` order, the optimizer the course recipes
    used (and which their checkpoints hold).
    """
    settings = {
        "weights": (1.0, weight_decay),
        "norm": (1.0, weight_decay if norm_weight_decay is None else norm_weight_decay),
        "norm_bias": (
            bias_lr_scale,
            next(wd for wd in (bias_weight_decay, norm_weight_decay, weight_decay) if wd is not None),
        ),
        "bias": (bias_lr_scale, weight_decay if bias_weight_decay is None else bias_weight_decay),
    }
    kinds = {id(p): _kind(m, n) for m in model.modules() for n, p in m.named_parameters(recurse=False)}
    order = list(dict.fromkeys(settings[k] for k in PARAM_KINDS))  # the weights' group first
    members: dict[tuple[float, float], list[nn.Parameter]] = {key: [] for key in order}
    for p in model.parameters():  # the model's order inside each group
        if p.requires_grad:
            members[settings[kinds[id(p)]]].append(p)
    out = []
    for (scale, wd), params in members.items():
        if params:
            present = {kinds[id(p)] for p in params}
            name = "+".join(k for k in PARAM_KINDS if k in present)
            out.append({"params": params, "name": name, "lr": lr * scale, "lr_scale": scale, "weight_decay": wd})
    return out


def create_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.05,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
    betas: Iterable[float] = (0.9, 0.999),
    bias_lr_scale: float = 1.0,
    bias_weight_decay: float | None = None,
    norm_weight_decay: float | None = None,
) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters in `parameter_groups` (one group unless biases or norms differ).

    By default every parameter is decayed, as in the course recipes this reproduces.
    """
    params = parameter_groups(
        model,
        lr,
        weight_decay,
        bias_lr_scale=bias_lr_scale,
        bias_weight_decay=bias_weight_decay,
        norm_weight_decay=norm_weight_decay,
    )
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    if name == "adam":
        # torch's Adam adds weight decay to the gradient (L2), as the course recipes do.
        return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    raise ConfigError(f"optim.name = {name!r} is not a known optimizer; choose one of {', '.join(OPTIMIZERS)}.")


def lr_scales(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each parameter group's LR relative to the base LR (1 for groups not made by `parameter_groups`)."""
    return [g.get("lr_scale", 1.0) for g in optimizer.param_groups]


class Scheduler:
    """A torch LR scheduler plus when it steps: per batch ("batch") or per epoch ("epoch").

    ReduceLROnPlateau also needs the monitored metric at each epoch end.
    """

    def __init__(self, inner: Any | None, interval: str, monitor: str | None = None):
        self.inner = inner
        self.interval = interval
        self.monitor = monitor

    def step_batch(self) -> None:
        if self.inner is not None and self.interval == "batch":
            self.inner.step()

    def step_epoch(self, metrics: dict[str, float]) -> None:
        if self.inner is None or self.interval != "epoch":
            return
        if self.monitor is not None:
            self.inner.step(metrics[self.monitor])
        else:
            self.inner.step()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.inner is None else self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.inner is not None and state:
            self.inner.load_state_dict(state)


def onecycle_peak_fraction(
    epochs: int, steps_per_epoch: int, peak_epoch: float | None = None, peak_fraction: float | None = None
) -> float:
    """OneCycle's pct_start from a peak epoch or fraction (neither: 0.3, torch's default), checked against the real step count.

    torch's OneCycleLR divides by (pct_start * total_steps - 1), so a peak at or before the first optimizer step
    dies in a ZeroDivisionError (or runs a negative warm-up) instead of saying why.
    """
    if peak_epoch is not None and peak_fraction is not None:
        raise ConfigError(
            f"sched.peak_epoch = {peak_epoch:g} and sched.peak_fraction = {peak_fraction:g} both place the OneCycle peak; set one of them to null."
        )
    if peak_epoch is not None:
        if not 0 < peak_epoch < epochs:
            raise ConfigError(
                f"sched.peak_epoch = {peak_epoch:g} must lie strictly between 0 and trainer.epochs = {epochs}."
            )
        pct, where = peak_epoch / epochs, f"sched.peak_epoch = {peak_epoch:g}"
    else:
        pct = 0.3 if peak_fraction is None else peak_fraction
        where = (
            f"sched.peak_fraction = {pct:g}"
            if peak_fraction is not None
            else "the default OneCycle peak (30% of the run)"
        )
        if not 0 < pct < 1:
            raise ConfigError(f"sched.peak_fraction = {pct:g} must lie strictly between 0 and 1.")
    total = epochs * steps_per_epoch
    warmup = pct * total
    if warmup <= 1 or total - warmup < 1:
        raise ConfigError(
            f"{where} puts the OneCycle peak at optimizer step {warmup:g} of {total} ({epochs} epoch(s) x {steps_per_epoch} "
            f"step(s) after drop_last): the warm-up needs more than one step and the decay at least one. Train on more data "
            f"or more epochs, lower trainer.batch_size, or move the peak (sched.peak_epoch / sched.peak_fraction); with so "
            f"few steps sched.name=none or step may suit better."
        )
    return pct


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "none",
    *,
    epochs: int,
    steps_per_epoch: int,
    max_lr: float | None = None,
    peak_epoch: float | None = None,
    peak_fraction: float | None = None,
    div_factor: float = 10.0,
    final_div_factor: float = 100.0,
    anneal: str = "linear",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    monitor: str = "test_loss",
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 2,
    threshold: float = 1e-4,
    threshold_mode: str = "abs",
    min_lr: float = 0.0,
    step_size: int = 10,
    gamma: float = 0.1,
) -> Scheduler:
    sched = torch.optim.lr_scheduler
    if name == "none":
        return Scheduler(None, "epoch")
    if name == "onecycle":
        pct = onecycle_peak_fraction(epochs, steps_per_epoch, peak_epoch, peak_fraction)
        first = optimizer.param_groups[0]
        peak = max_lr if max_lr is not None else first["lr"] / first.get("lr_scale", 1.0)
        inner = sched.OneCycleLR(
            optimizer,
            max_lr=[peak * scale for scale in lr_scales(optimizer)],  # a list keeps the groups' LR ratio
            total_steps=epochs * steps_per_epoch,
            pct_start=pct,
            anneal_strategy=anneal,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            three_phase=False,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
        )
        return Scheduler(inner, "batch")
    if name == "plateau":
        inner = sched.ReduceLROnPlateau(
            optimizer,
            mode=mode,
            factor=factor,
            patience=patience,
            threshold=threshold,
            threshold_mode=threshold_mode,
            min_lr=[min_lr * scale for scale in lr_scales(optimizer)],  # the floor keeps the ratio too
        )
        return Scheduler(inner, "epoch", monitor=monitor)
    if name == "step":
        return Scheduler(sched.StepLR(optimizer, step_size=step_size, gamma=gamma), "epoch")
    if name == "cosine":
        # eta_min is one value for every group: with min_lr > 0 a scaled group ends at min_lr, not at its ratio.
        return Scheduler(sched.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch, eta_min=min_lr), "batch")
    raise ConfigError(f"sched.name = {name!r} is not a known scheduler; choose one of {', '.join(SCHEDULERS)}.")
