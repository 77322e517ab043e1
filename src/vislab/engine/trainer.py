"""The training engine: `train_one_epoch`, `evaluate` and a `Trainer` that runs epochs with hooks."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import Interrupted, TrainingDiverged, VislabError
from ._device import Precision
from ._dist import reduce_sums
from .checkpoint import nonfinite_tensors, rng_state, save_checkpoint, set_rng_state
from .ema import ModelEma
from .hooks import INTERRUPTED, PARTIAL, Callback
from .optim import Scheduler

log = logging.getLogger(__name__)

# (x, y) -> (x_mixed, y_a, y_b, lam): MixUp / CutMix of one batch (vislab.augment.mixup, cutmix)
Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]

# Seconds between progress-bar refreshes: each refresh reads the loss back from the device
# (a host sync), so it is throttled instead of done every step.
PROGRESS_INTERVAL = 0.5


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to stop after the current step; a second SIGINT aborts at once."""
    if threading.current_thread() is not threading.main_thread() or trainer.distributed:
        # Handlers can only be installed from the main thread. Under torchrun, ranks would stop at
        # different steps and wait on each other forever; torchrun ends the whole job instead.
        yield
        return

    def handler(signum, frame):
        if trainer.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_signal = signum
        log.warning(
            "%s received: stopping after the current step (Ctrl-C again to abort now)", signal.Signals(signum).name
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, prev in previous.items():
            signal.signal(sig, prev)


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm  # notebook-aware bar

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not enabled, dynamic_ncols=True, initial=initial)


@dataclass
class EpochTotals:
    """The running sums of an epoch in progress, kept on the device; saved by mid-epoch checkpoints."""

    loss_sum: torch.Tensor  # float64: sum over samples of the minimised loss
    ce_sum: torch.Tensor  # float64: sum of the plain cross-entropy
    correct: torch.Tensor  # int64: correct predictions (unmixed batches)
    correct_mixed: torch.Tensor  # float64: lam-weighted agreement, under MixUp / CutMix
    first_bad: torch.Tensor  # int64: the first step of the epoch with a non-finite loss, or -1
    seen: int = 0  # samples
    batches: int = 0  # steps of the epoch done
    lr: float = float("nan")  # the LR of the last step

    @classmethod
    def zeros(cls, device: torch.device) -> EpochTotals:
        f64 = {"device": device, "dtype": torch.float64}
        i64 = {"device": device, "dtype": torch.int64}
        return cls(
            torch.zeros((), **f64),
            torch.zeros((), **f64),
            torch.zeros((), **i64),
            torch.zeros((), **f64),
            torch.full((), -1, **i64),
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            **{
                k: getattr(self, k).detach().to("cpu")
                for k in ("loss_sum", "ce_sum", "correct", "correct_mixed", "first_bad")
            },
            "seen": self.seen,
            "batches": self.batches,
            "lr": self.lr,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochTotals:
        tensors = {k: state[k].to(device) for k in ("loss_sum", "ce_sum", "correct", "correct_mixed", "first_bad")}
        return cls(**tensors, seen=int(state["seen"]), batches=int(state["batches"]), lr=float(state["lr"]))


def _l1_penalty(model: nn.Module) -> torch.Tensor:
    return sum(p.abs().sum() for p in model.parameters() if p.ndim > 1)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    precision: Precision,
    scheduler: Scheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    label_smoothing: float = 0.0,
    l1: float = 0.0,
    grad_clip: float | None = None,
    channels_last: bool = False,
    trainer: Trainer | None = None,
    callbacks: Sequence[Callback] = (),
    on_step: Callable[[float], None] | None = None,
    on_optimizer_step: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    epoch: int | None = None,
    progress: bool = False,
    desc: str = "train",
    stop_on_nonfinite: bool = True,
    mix: Mixer | None = None,
    totals: EpochTotals | None = None,
    after_batch: Callable[[EpochTotals], None] | None = None,
) -> dict[str, float]:
    """One pass over `loader`; returns mean per-sample train loss, accuracy (%) and the LR of its last step.

    train_loss is the objective that was minimised (cross-entropy with label smoothing, plus the L1
    term); train_ce is the plain cross-entropy of the same logits, the quantity a test loss measures.

    The loop reports to its caller instead of writing into it: `callbacks` get `trainer` (read
    only) at each batch end, `on_step(lr)` follows every batch, `on_optimizer_step()` only the steps the
    optimizer really took (a GradScaler skips overflowed ones: an EMA must not average a step that never
    happened), `should_stop()` is asked after each step, and `epoch` names the epoch in error messages.

    A NaN/inf loss raises `TrainingDiverged` (checked twice a second and at the end, without a
    host sync per step) unless `stop_on_nonfinite=False`, as the LR range test needs.

    `mix(x, y) -> (x_mixed, y_a, y_b, lam)` (MixUp / CutMix) mixes each batch after augmentation; the loss
    is then lam * CE(y_a) + (1 - lam) * CE(y_b), and train_acc is the lam-weighted agreement with y_a and
    y_b, an accuracy on mixed data (the row says so with train_mixed).

    `totals` continues an epoch that a resumed run had begun (the loader then gives only the rest of its
    batches); `after_batch(totals)` is called after every step, the callbacks included, with the epoch's
    running sums (the trainer's mid-epoch checkpoints save them).
    """
    model.train()
    # Sums stay on the device (no host sync per step) and become Python floats once per epoch;
    # they are detached, so no autograd graph is kept alive. `totals` carries them over from a run
    # resumed inside this epoch.
    t = totals if totals is not None else EpochTotals.zeros(device)
    start = t.batches
    lrs: list[float] = []  # LRs of this call's steps, from batch `start` on
    last_check = last_refresh = time.monotonic()
    total = len(loader) if hasattr(loader, "__len__") else None
    bar = _progress(loader, total, desc, progress, initial=start)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    for batch_idx, (x, y) in enumerate(bar, start=start):
        x = x.to(device, non_blocking=True, memory_format=memory_format)  # (B, 3, H, W)
        y = y.to(device, non_blocking=True)
        lr = optimizer.param_groups[0]["lr"]
        if mix is not None:
            x, y, y_b, lam = mix(x, y)  # lam: 0-dim tensor on the device, never read back
        with precision.autocast(device):
            logits = model(x)  # (B, num_classes)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
            if mix is not None:
                loss = lam * loss + (1 - lam) * F.cross_entropy(logits, y_b, label_smoothing=label_smoothing)
        if l1:
            loss = loss + l1 * _l1_penalty(model)
        optimizer.zero_grad(set_to_none=True)
        stepped = True
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            # The scaler skips the optimizer step when the scaled gradients overflowed, and then (and
            # only then) lowers its scale. The schedule must not advance for a step that never
            # happened (fp16 runs skip their first few). For the optimizers vislab builds (not fused),
            # scaler.step already syncs with the host to decide, so reading the scale back adds no stall.
            stepped = scaler.get_scale() >= scale
        else:
            loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if scheduler is not None and stepped:
            scheduler.step_batch()
        if on_optimizer_step is not None and stepped:
            on_optimizer_step()
        n = y.shape[0]
        lrs.append(lr)
        # Recorded on the device without a host sync; read back twice a second at most.
        t.first_bad = torch.where(~torch.isfinite(loss.detach()) & (t.first_bad < 0), batch_idx, t.first_bad)
        t.loss_sum += loss.detach().double() * n
        if mix is not None:
            plain = logits.detach().float()
            ce = lam * F.cross_entropy(plain, y, reduction="sum") + (1 - lam) * F.cross_entropy(
                plain, y_b, reduction="sum"
            )
            t.ce_sum += ce.double()
            pred = plain.argmax(1)
            t.correct_mixed += (lam * (pred == y).sum() + (1 - lam) * (pred == y_b).sum()).double()
        elif label_smoothing or l1:  # from the same logits, no extra forward pass
            t.ce_sum += F.cross_entropy(logits.detach().float(), y, reduction="sum").double()
        else:
            t.ce_sum += loss.detach().double() * n
        if mix is None:
            t.correct += (logits.detach().argmax(1) == y).sum()
        t.seen += n
        t.batches = batch_idx + 1
        t.lr = lr
        if on_step is not None:
            on_step(lr)
        for cb in callbacks:
            cb.on_batch_end(trainer, batch_idx, loss.detach())
        now = time.monotonic()
        if now - last_check > PROGRESS_INTERVAL:
            last_check = now
            if stop_on_nonfinite:
                _check_finite(t.first_bad, lrs, start, epoch)
        if progress and now - last_refresh > PROGRESS_INTERVAL:
            last_refresh = now
            bar.set_postfix(
                loss=f"{t.loss_sum.item() / t.seen:.3f}",
                acc=f"{100 * (t.correct.item() + t.correct_mixed.item()) / t.seen:.1f}",
                lr=f"{lr:.2e}",
            )
        if after_batch is not None:
            after_batch(t)
        if should_stop is not None and should_stop():
            break
    bar.close()
    if stop_on_nonfinite:
        _check_finite(t.first_bad, lrs, start, epoch)
    lr = t.lr
    correct_all = t.correct.double() + t.correct_mixed
    loss_total, ce_total, correct_total, seen = reduce_sums(
        t.loss_sum, t.ce_sum, correct_all, t.seen
    )  # over all ranks under DDP
    if seen == 0:
        raise VislabError(
            "The training loader produced no batch: the training set is smaller than trainer.batch_size with trainer.drop_last=true."
        )
    # The LR the last step used; the optimizer's current value is already the next step's.
    out = {
        "train_loss": loss_total / seen,
        "train_ce": ce_total / seen,
        "train_acc": 100.0 * correct_total / seen,
        "lr": lr,
    }
    if mix is not None:
        out["train_mixed"] = True  # train_loss, train_ce and train_acc are those of the mixed batches
    return out


def _check_finite(first_bad: torch.Tensor, lrs: list[float], start: int, epoch: int | None) -> None:
    """Raise TrainingDiverged if a loss of the epoch was not finite; `lrs` holds the LRs from batch `start` on."""
    bad = int(first_bad.item())
    if bad < 0:
        return
    epoch = "?" if epoch is None else epoch
    # A resumed epoch's earlier steps were all finite (their checkpoint was checked before it was saved).
    lr = f"{lrs[bad - start]:.3g}" if 0 <= bad - start < len(lrs) else "?"
    raise TrainingDiverged(
        f"Training diverged in epoch {epoch} at step {bad + 1} of the epoch: the loss became NaN or infinite "
        f"at learning rate {lr}. Lower optim.lr (or sched.max_lr), or set optim.grad_clip (e.g. 1.0); "
        f"the last good checkpoint (checkpoints/last) is kept."
    )


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    precision: Precision,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean per-sample cross-entropy over the whole set and accuracy (%) over all samples."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with precision.autocast(device):
            logits = model(x)
        # Summed in fp32 per sample: the mean of batch means would weight a short last batch wrongly.
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        seen += y.shape[0]
    model.train(was_training)
    # Under DDP each rank saw its shard of the test set: the sums cover the whole set.
    loss_total, correct_total, seen = reduce_sums(loss_sum, correct, seen)
    if seen == 0:
        raise VislabError("The test loader produced no batch: the test set is empty.")
    return {"test_loss": loss_total / seen, "test_acc": 100.0 * correct_total / seen}


class Trainer:
    """Runs epochs of `train_one_epoch` + `evaluate`, keeps the history, calls the hooks.

    Holds everything a checkpoint needs (model, optimizer, scheduler, scaler, RNG states, epoch,
    history), so `state_dict()` / `load_state_dict()` resume a run exactly.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Scheduler,
        *,
        train_loader: Iterable,
        test_loader: Iterable,
        epochs: int,
        device: torch.device,
        precision: Precision,
        channels_last: bool = False,
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        grad_clip: float | None = None,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        generator: torch.Generator | None = None,
        compiled_model: nn.Module | None = None,
        val_loader: Iterable | None = None,
        eval_model: nn.Module | None = None,
        distributed: bool = False,
        interrupt_dir: str | Path | None = None,
        ema: ModelEma | None = None,
        mix: Mixer | None = None,
        mix_off_epochs: int = 0,
        checkpoint_seconds: float | None = None,
    ):
        self.model = model  # the module whose state is saved (never the compiled or DDP wrapper)
        self.forward_model = compiled_model if compiled_model is not None else model
        # What evaluates: under DDP the bare model (evaluation needs no gradient sync), else what trains.
        self.eval_model = eval_model if eval_model is not None else self.forward_model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = torch.amp.GradScaler(device.type) if precision.use_scaler else None
        self.train_loader = train_loader
        self.test_loader = test_loader
        self.val_loader = val_loader  # a split held out of train (data.val_size): val_loss / val_acc columns
        self.epochs = epochs
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.label_smoothing = label_smoothing
        self.l1 = l1
        self.grad_clip = grad_clip
        self.callbacks = list(callbacks)
        self.progress = progress
        self.generator = generator
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.step_lr = optimizer.param_groups[0]["lr"]
        self.lr_steps: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.should_stop = False  # a hook may set this to end training after the current epoch
        self.stop_signal: int | None = None  # set by SIGINT/SIGTERM: stop after the current step
        self.interrupt_dir = (
            Path(interrupt_dir) if interrupt_dir is not None else None
        )  # where an interrupted epoch's checkpoint goes
        self.distributed = distributed  # under torchrun: no graceful signal handling (see _stop_on_signals)
        # Averaged weights, updated from the bare model after each optimizer step and evaluated beside it
        # (ema_* columns); checkpointed with the run, so a resume continues the same average.
        self.ema = ema
        self.mix = mix  # MixUp / CutMix of each training batch, off for the last `mix_off_epochs` epochs
        self.mix_off_epochs = mix_off_epochs
        # Inside an epoch, save a resumable checkpoint (`partial`, in interrupt_dir) every this many seconds, so
        # that a killed run loses at most that much; needs a loader that can say where it stands (DeviceLoader).
        self.checkpoint_seconds = checkpoint_seconds
        if checkpoint_seconds is not None and not self.resumes_mid_epoch:
            raise ValueError(
                "checkpoint_seconds needs a training loader with position() / resume_from() (the tensor backend's DeviceLoader)"
            )
        self.partial: dict[str, Any] | None = None  # set by load_state_dict from a mid-epoch checkpoint
        self._epoch_start = self._last_save = 0.0
        self._epoch_mixed = False  # whether the epoch in progress mixes (set at its start; saved in `partial`)

    @property
    def resumes_mid_epoch(self) -> bool:
        """Whether a checkpoint taken inside an epoch can be resumed exactly: the loader saves its position."""
        return hasattr(self.train_loader, "position") and hasattr(self.train_loader, "resume_from")

    def fit(self) -> list[dict[str, Any]]:
        for cb in self.callbacks:
            cb.on_train_start(self)
        with _stop_on_signals(self):
            while self.epoch < self.epochs and not self.should_stop:
                self._run_epoch()
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history

    def _run_epoch(self) -> None:
        epoch = self.epoch + 1
        if hasattr(self.train_loader, "set_epoch"):
            # Augmentations that depend on the epoch (alternating flips) follow the epoch count, not how many
            # epochs this loader object has served: a resumed run, or one that ran a range test first, stays exact.
            self.train_loader.set_epoch(self.epoch)
        resume, self.partial = self.partial, None
        # Whether this epoch mixes (MixUp / CutMix). An epoch resumed from its middle keeps what it started
        # with, even if the resume changed trainer.epochs and so moved the mix_off_epochs boundary.
        mixed = resume.get("mixed") if resume is not None else None
        self._epoch_mixed = bool(mixed) if mixed is not None else epoch <= self.epochs - self.mix_off_epochs
        if resume is not None:  # continue the epoch a mid-epoch checkpoint was taken in
            self.train_loader.resume_from(resume["loader"])
            totals = EpochTotals.from_state(resume["totals"], self.device)
            if self.distributed and torch.distributed.get_rank() != 0:
                # The saved sums (of a one-process run) are the whole batches' so far: counted once, on rank 0,
                # as the epoch's end adds them up over the ranks.
                totals = EpochTotals.zeros(self.device)
                totals.batches, totals.lr = int(resume["totals"]["batches"]), float(resume["totals"]["lr"])
            elapsed = float(resume["seconds"])
        else:
            totals, elapsed = EpochTotals.zeros(self.device), 0.0
        start = self._epoch_start = time.perf_counter() - elapsed
        self._last_save = time.monotonic()
        try:
            train = train_one_epoch(
                self.forward_model,
                self.train_loader,
                self.optimizer,
                device=self.device,
                precision=self.precision,
                scheduler=self.scheduler,
                scaler=self.scaler,
                label_smoothing=self.label_smoothing,
                l1=self.l1,
                grad_clip=self.grad_clip,
                channels_last=self.channels_last,
                trainer=self,
                callbacks=self.callbacks,
                on_step=self._count_step,
                on_optimizer_step=(lambda: self.ema.update(self.model)) if self.ema is not None else None,
                should_stop=lambda: self.stop_signal is not None,
                epoch=epoch,
                progress=self.progress,
                desc=f"epoch {epoch}/{self.epochs}",
                mix=self.mix if self._epoch_mixed else None,
                totals=totals,
                after_batch=self._save_partial_if_due if self.checkpoint_seconds is not None else None,
            )
            # The loss check cannot see an update that broke the weights after the last loss was
            # computed (the epoch's final step); such weights must never become a checkpoint.
            self._check_finite_weights(epoch)
            if self.stop_signal is not None:
                self._save_interrupted(totals)
                raise Interrupted(
                    self.stop_signal,
                    epoch,
                    totals.batches,
                    mid_epoch=self.resumes_mid_epoch and self.interrupt_dir is not None,
                )
            test = evaluate(
                self.eval_model,
                self.test_loader,
                device=self.device,
                precision=self.precision,
                channels_last=self.channels_last,
            )
            val = {}
            if self.val_loader is not None:
                m = evaluate(
                    self.eval_model,
                    self.val_loader,
                    device=self.device,
                    precision=self.precision,
                    channels_last=self.channels_last,
                )
                val = {"val_loss": m["test_loss"], "val_acc": m["test_acc"]}
            ema = self._evaluate_ema() if self.ema is not None else {}
        except torch.OutOfMemoryError:
            bs = getattr(self.train_loader, "batch_size", "?")
            raise VislabError(
                f"Out of {self.device.type.upper()} memory in epoch {epoch} (step {totals.batches + 1}) with "
                f"trainer.batch_size = {bs}. Lower trainer.batch_size (e.g. to {bs // 2 if isinstance(bs, int) else 'half'}), "
                f"use trainer.precision=bf16, or a smaller model.width; the last good checkpoint is kept."
            ) from None
        self.scheduler.step_epoch({**train, **val, **test, **ema})
        self.epoch = epoch
        row = {
            "epoch": epoch,
            "lr": train["lr"],
            "train_loss": train["train_loss"],
            "train_ce": train["train_ce"],
            "train_acc": train["train_acc"],
            **({"train_mixed": True} if train.get("train_mixed") else {}),
            **val,
            "test_loss": test["test_loss"],
            "test_acc": test["test_acc"],
            **ema,
            "seconds": time.perf_counter() - start,
        }
        self.history.append(row)
        log.info(
            "epoch %d/%d  train loss %.4f acc %.2f%%%s  test loss %.4f acc %.2f%%%s  lr %.3g  %.1fs",
            epoch,
            self.epochs,
            row["train_loss"],
            row["train_acc"],
            f"  val loss {val['val_loss']:.4f} acc {val['val_acc']:.2f}%" if val else "",
            row["test_loss"],
            row["test_acc"],
            f" (EMA {ema['ema_test_acc']:.2f}%)" if ema else "",
            train["lr"],
            row["seconds"],
        )
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)

    def _evaluate_ema(self) -> dict[str, float]:
        """ema_test_* (and ema_val_*) columns: the averaged weights on the same splits."""
        kw = {"device": self.device, "precision": self.precision, "channels_last": self.channels_last}
        m = evaluate(self.ema.module, self.test_loader, **kw)
        out = {"ema_test_loss": m["test_loss"], "ema_test_acc": m["test_acc"]}
        if self.val_loader is not None:
            m = evaluate(self.ema.module, self.val_loader, **kw)
            out.update({"ema_val_loss": m["test_loss"], "ema_val_acc": m["test_acc"]})
        return out

    def _count_step(self, lr: float) -> None:
        self.global_step += 1
        self.step_lr = lr

    def _check_finite_weights(self, epoch: int) -> None:
        bad = nonfinite_tensors(self.model.state_dict())
        if self.ema is not None:
            bad += [f"ema.{k}" for k in nonfinite_tensors(self.ema.module.state_dict())]
        if bad:
            raise TrainingDiverged(
                f"Training diverged in epoch {epoch}: after its last step {len(bad)} weight tensor(s) hold NaN or infinite "
                f"values (first: {bad[0]}) although every loss was finite, at learning rate {self.step_lr:.3g}. Lower optim.lr "
                f"(or sched.max_lr), or set optim.grad_clip (e.g. 1.0); the last good checkpoint (checkpoints/last) is kept."
            )

    def _save_interrupted(self, totals: EpochTotals) -> None:
        # The weights at the moment of the interrupt, for inspection or export. `--resume` continues from
        # here when the loader can say where it stands (exact), else from `last` (the end of the last epoch).
        if self.interrupt_dir is not None:
            save_checkpoint(self.interrupt_dir / INTERRUPTED, self.state_dict(totals))
            for cb in self.callbacks:
                cb.on_save_checkpoint(self, INTERRUPTED)

    def _save_partial_if_due(self, totals: EpochTotals) -> None:
        if self.interrupt_dir is None or time.monotonic() - self._last_save < self.checkpoint_seconds:
            return
        if int(totals.first_bad.item()) >= 0:
            return  # a non-finite loss: the epoch's divergence check raises, the checkpoints already there stay
        self._check_finite_weights(self.epoch + 1)
        save_checkpoint(self.interrupt_dir / PARTIAL, self.state_dict(totals))
        for cb in self.callbacks:
            cb.on_save_checkpoint(self, PARTIAL)
        self._last_save = time.monotonic()
        log.debug("saved %s at step %d of epoch %d", PARTIAL, totals.batches, self.epoch + 1)

    def state_dict(self, totals: EpochTotals | None = None) -> dict[str, Any]:
        """Everything an exact resume needs. With `totals` (the epoch in progress) and a loader that can say
        where it stands, also the epoch's position ("partial"): a resume then continues inside the epoch."""
        partial = {}
        if totals is not None and self.resumes_mid_epoch:
            partial = {
                "partial": {
                    "loader": self.train_loader.position(),
                    "totals": totals.state_dict(),
                    "seconds": time.perf_counter() - self._epoch_start,
                    "mixed": self._epoch_mixed,
                }
            }
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": self.history,
            "lr_steps": self.lr_steps,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "precision": self.precision.name,  # what auto resolved to: the report evaluates the weights in it
            "rng": rng_state(self.generator),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **partial,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.lr_steps = list(state.get("lr_steps", []))
        self.best_metric = state.get("best_metric")
        self.best_epoch = state.get("best_epoch")
        set_rng_state(state["rng"], self.generator)
        if self.ema is not None:
            if "ema" not in state:
                raise VislabError("The checkpoint holds no EMA weights, but the run averages them (trainer.ema_decay).")
            self.ema.load_state_dict(state["ema"])
        self.partial = state.get("partial")
        if self.partial is not None and not self.resumes_mid_epoch:
            raise ValueError(
                "the checkpoint was taken inside an epoch, and this run's training loader cannot resume there"
            )
