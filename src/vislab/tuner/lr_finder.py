"""Leslie Smith's LR range test, run through the training engine: sweep, suggestions, plot, restore."""

from __future__ import annotations

import copy
import io
import itertools
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..engine import Callback, Precision, evaluate, lr_scales, resolve_precision, train_one_epoch
from ..engine.checkpoint import rng_state, set_rng_state
from ..errors import ConfigError, VislabError
from ..files import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

SUGGESTIONS = ("valley", "steepest", "min_loss", "min_loss_div10", "onecycle")
DEFAULT_SUGGESTION = "valley"  # fastai's default since 2.4: less fragile than the steepest point
MEASURES = ("loss", "val_loss", "accuracy")
MIN_POINTS = 10  # fewest usable points a suggestion is computed from
SKIP_START = 0.1  # fraction of num_iter left out of the suggestions: the smoothed curve is still settling
FLAT_TOL = 0.05  # a curve whose best point lies less than 5% below its start has not shown a usable range
ONECYCLE_RISE = 0.1  # OneCycle min: where the curve has covered 10% of its way to its best point
LR_FIND_JSON, LR_FIND_PNG = "lr_find.json", "lr_find.png"  # what LRFinder.save writes into a folder
# fp16 sweeps: consecutive steps the GradScaler may skip (halving its scale each time) before the
# sweep gives up. From the default 65536, 32 halvings reach 2**-16: gradients that still overflow
# fp16 there are diverging, not waiting for a smaller scale.
MAX_SKIPPED_STEPS = 32


class RangeTestError(VislabError):
    """The range test cannot give a suggestion (too few usable points, or not run yet)."""


def sweep_lrs(start_lr: float, end_lr: float, num_iter: int, mode: str = "exp") -> list[float]:
    """The LR of each step: lr_i = start * (end/start)^(i/(n-1)) ("exp") or start + (end-start) * i/(n-1).

    The same schedule as torch-lr-finder and fastai: the first step uses start_lr, the last end_lr.
    """
    if mode not in ("exp", "linear"):
        raise ConfigError(f"LR range test mode = {mode!r} is not known; choose exp or linear.")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 2:
        raise ConfigError(f"LR range test num_iter = {num_iter!r} must be an integer >= 2.")
    if not (math.isfinite(start_lr) and start_lr > 0 and math.isfinite(end_lr) and end_lr > start_lr):
        raise ConfigError(
            f"LR range test needs 0 < start_lr < end_lr (finite), got start_lr = {start_lr!r}, end_lr = {end_lr!r}."
        )
    steps = num_iter - 1
    if mode == "exp":
        return [start_lr * (end_lr / start_lr) ** (i / steps) for i in range(num_iter)]
    return [start_lr + (end_lr - start_lr) * (i / steps) for i in range(num_iter)]


class _Smoother:
    """Exponential moving average with fastai's bias correction, fed one value at a time.

    avg_i = (1 - f) * avg_{i-1} + f * x_i with avg_{-1} = 0, reported as avg_i / (1 - (1 - f)^(i+1)):
    without the correction the first values would be pulled towards 0. f = 0 disables smoothing
    (torch-lr-finder's convention), since the corrected average would otherwise be undefined.
    """

    def __init__(self, smooth_f: float):
        self.beta = 1.0 - smooth_f
        self.avg = 0.0
        self.n = 0

    def __call__(self, x: float) -> float:
        if self.beta == 1.0:
            return x
        self.n += 1
        self.avg = self.beta * self.avg + (1.0 - self.beta) * x
        return self.avg / (1.0 - self.beta**self.n)


def smooth(values: Iterable[float], smooth_f: float = 0.05) -> list[float]:
    """Bias-corrected exponential moving average of `values` (see `_Smoother`)."""
    if not 0.0 <= smooth_f < 1.0:
        raise ConfigError(f"LR range test smooth_f = {smooth_f!r} must lie in [0, 1).")
    s = _Smoother(smooth_f)
    return [s(float(v)) for v in values]


def _valley_index(y: np.ndarray) -> int:
    # fastai's "valley": the longest strictly decreasing subsequence marks the valley; the suggestion
    # sits about halfway down it. O(n^2) comparisons, vectorized over the earlier points.
    n = len(y)
    run = np.ones(n, dtype=np.int64)  # longest decreasing subsequence ending at each point
    for i in range(1, n):
        higher = y[:i] > y[i]
        if higher.any():
            run[i] = run[:i][higher].max() + 1
    end = int(np.argmax(run))  # first point with the longest run
    # fastai's formula; the clamp keeps a valley that starts at the first point from wrapping to the last.
    start = max(end - int(run[end]), 0)
    third = (end - start) / 3
    return start + int(third) + int(third / 2)


def suggest(lrs: Sequence[float], values: Sequence[float]) -> dict[str, Any]:
    """Suggestions from a curve to minimize (smoothed loss or error rate) over increasing LRs.

    Points must already be finite and trimmed. Returns the LR of each method, the OneCycle pair and
    the curve's relative drop (the flatness check): steepest = steepest descent against log10(LR);
    valley = fastai's valley; min_loss = LR of the lowest point (the argmin of the loss history);
    min_loss_div10 = that / 10; onecycle = (LR where the
    curve has covered ONECYCLE_RISE of its fall, LR of the lowest point), after Smith's CLR bounds.
    """
    lr = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if len(y) < MIN_POINTS:
        raise RangeTestError(f"A suggestion needs at least {MIN_POINTS} finite points, got {len(y)}.")
    slope = np.gradient(y, np.log10(lr))  # uneven spacing (linear sweeps) is handled by np.gradient
    i_best = int(np.argmin(y))
    # Only up to the lowest point: past it the loss is diverging, and a fall there is the curve
    # recovering from a spike (seen on ResNet9 with Adam), not an LR to train with.
    i_steep = int(np.argmin(slope[: i_best + 1]))
    i_valley = _valley_index(y)
    fall = y[0] - y[i_best]
    i_low = i_best
    if fall > 0:
        i_low = int(np.argmax(y[: i_best + 1] <= y[0] - ONECYCLE_RISE * fall))
    return {
        "valley": float(lr[i_valley]),
        "steepest": float(lr[i_steep]),
        "min_loss": float(lr[i_best]),
        "min_loss_div10": float(lr[i_best] / 10),
        "onecycle": (float(lr[i_low]), float(lr[i_best])),
        "relative_drop": float(fall / max(abs(y[0]), 1e-12)),
        "best_is_last": i_best == len(y) - 1,
    }


def format_suggestions(s: Mapping[str, Any]) -> str:
    """Every suggestion of `LRFinder.suggestions()` on one line (the CLI and the training log print it)."""
    lo, hi = s["onecycle"]
    readings = ", ".join(f"{k} {s[k]:.3g}" for k in SUGGESTIONS if k != "onecycle")
    return f"{readings}, onecycle {lo:.3g} .. {hi:.3g}"


class _Feed:
    """One training batch per sweep step, with that step's LR set first; stops when told to.

    The sweep moves to the next LR only once the recorder has taken a step at the current one: a
    step the fp16 GradScaler skipped (overflowing gradients) is repeated at the same LR with the next
    batch, as a training schedule only advances when the optimizer stepped. Restarts the loader when
    it runs out, as training's next epoch would (fresh order, fresh augmentation), so a sweep may be
    longer than an epoch.
    """

    def __init__(self, loader: Iterable, optimizer: torch.optim.Optimizer, lrs: Sequence[float], recorder: _Recorder):
        self.loader, self.optimizer, self.lrs, self.recorder = loader, optimizer, lrs, recorder

    def __len__(self) -> int:
        return len(self.lrs)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while self.recorder.stop_reason is None and len(self.recorder.lrs) < len(self.lrs):
            lr = self.lrs[len(self.recorder.lrs)]
            for group, scale in zip(self.optimizer.param_groups, lr_scales(self.optimizer)):
                group["lr"] = lr * scale  # the sweep moves the base LR; scaled groups (biases) keep their ratio
            try:
                batch = next(it)
            except StopIteration:
                it = iter(self.loader)
                batch = next(it, None)
                if batch is None:
                    raise VislabError(
                        "The LR range test's training loader produced no batch; is the training set smaller than one batch?"
                    ) from None
            self.recorder.pending_lr = lr
            yield batch


class _Recorder(Callback):
    """Records each step's LR and losses, smooths them and ends the sweep on divergence or a non-finite loss.

    With a GradScaler, a step it skipped (the scale went down) is not a point of the curve: no
    optimizer step was taken at that LR.
    """

    def __init__(
        self,
        finder: LRFinder,
        smooth_f: float,
        diverge_th: float,
        held_out: list | None,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.finder = finder
        self.diverge_th = diverge_th
        self.held_out = held_out
        self.scaler = scaler
        self.scale = scaler.get_scale() if scaler is not None else None
        self.pending_lr = math.nan  # the LR of the step in flight, set by _Feed
        self.skipped = 0  # steps the scaler skipped, in all
        self.skipped_in_a_row = 0
        self.lrs: list[float] = []
        self.series: dict[str, list[float]] = {"loss": [], "smoothed_loss": []}
        if held_out is not None:
            for k in ("val_loss", "smoothed_val_loss", "val_acc", "smoothed_val_acc"):
                self.series[k] = []
        self.smoothers = {k: _Smoother(smooth_f) for k in ("loss", "val_loss", "val_acc")}
        self.best = math.inf
        self.stop_reason: str | None = None

    def _add(self, key: str, value: float) -> float:
        smoothed = self.smoothers[key](value) if math.isfinite(value) else value
        self.series[key].append(value)
        self.series[f"smoothed_{key}"].append(smoothed)
        return smoothed

    def on_batch_end(self, trainer, batch_idx: int, loss: torch.Tensor) -> None:
        f = self.finder
        train_loss = float(loss)  # one host sync per step: the divergence check needs the value now
        before, self.scale = self.scale, (self.scaler.get_scale() if self.scaler is not None else None)
        # The scaler lowers its scale exactly when it skipped the step (overflowing gradients). A
        # non-finite loss is not skipped over: it ends the sweep below.
        if math.isfinite(train_loss) and before is not None and self.scale < before:
            self.skipped += 1
            self.skipped_in_a_row += 1
            if self.skipped_in_a_row > MAX_SKIPPED_STEPS:
                self.stop_reason = "scaler_skipped"
            return
        self.skipped_in_a_row = 0
        self.lrs.append(self.pending_lr)
        watched = self._add("loss", train_loss)
        if self.held_out is not None:
            m = evaluate(f.model, self.held_out, device=f.device, precision=f.precision, channels_last=f.channels_last)
            watched = self._add("val_loss", m["test_loss"])
            self._add("val_acc", m["test_acc"])
        if not (math.isfinite(train_loss) and math.isfinite(watched)):
            self.stop_reason = "non_finite"
            return
        self.best = min(self.best, watched)
        if watched > self.diverge_th * self.best:
            self.stop_reason = "diverged"


class LRFinder:
    """The LR range test on a model, optimizer and training loader (Smith 2015, fastai, Lightning).

    Every step trains one batch with `vislab.engine.train_one_epoch` (same precision, memory format,
    label smoothing, L1 and clipping as training) at an LR that grows from `start_lr` to `end_lr`.
    Model, optimizer, scheduler, RNG and data-order state are restored when `range_test` returns or
    raises, so training afterwards is the same as without the sweep. The sweep sets the base LR: a
    parameter group with an `lr_scale` (`vislab.engine.parameter_groups`) gets it times that scale.
    The model must already live on `device` (default: the device of its parameters).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_loader: Iterable,
        *,
        device: torch.device | str | None = None,
        precision: Precision | str = "fp32",
        channels_last: bool = False,
        scheduler: Any | None = None,
        generator: torch.Generator | None = None,
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        grad_clip: float | None = None,
        progress: bool = False,
        suggestion: str = DEFAULT_SUGGESTION,
    ):
        if suggestion not in SUGGESTIONS:
            raise ConfigError(
                f"LR range test suggestion = {suggestion!r} is not known; choose one of {', '.join(SUGGESTIONS)}."
            )
        self.model = model
        self.optimizer = optimizer
        self.train_loader = train_loader
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device) if isinstance(precision, str) else precision
        self.channels_last = channels_last
        self.scheduler = scheduler  # anything with state_dict()/load_state_dict(); restored, never stepped
        # The generator behind the loader's order and augmentation (DeviceLoader and DataLoader expose it).
        self.generator = generator if generator is not None else getattr(train_loader, "generator", None)
        self.label_smoothing = label_smoothing
        self.l1 = l1
        self.grad_clip = grad_clip
        self.progress = progress
        self.method = suggestion
        self.results: dict[str, Any] = {}
        self.run_dir: Path | None = None  # where `vislab.lr_find` saved the sweep, if it did

    # -- state ---------------------------------------------------------------------------------

    def _snapshot(self, extra_generators: Sequence[torch.Generator]) -> dict[str, Any]:
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "training": self.model.training,
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()) if self.scheduler is not None else None,
            "rng": rng_state(self.generator),
            "generators": [(g, g.get_state()) for g in extra_generators],
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.model.train(saved["training"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        set_rng_state(saved["rng"], self.generator)
        for g, state in saved["generators"]:
            g.set_state(state)

    # -- the sweep -----------------------------------------------------------------------------

    def range_test(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_iter: int = 100,
        mode: str = "exp",
        smooth_f: float = 0.05,
        diverge_th: float = 5.0,
        val_loader: Iterable | None = None,
        val_batches: int | None = None,
        accuracy: bool = False,
    ) -> dict[str, Any]:
        """Sweep the LR; returns (and keeps in `.results`) the LRs, raw and smoothed curves, and why it stopped.

        With `val_loader`, each step also measures loss and accuracy on its first `val_batches`
        batches (all when None), held fixed for the whole sweep; the suggestions then follow the
        held-out loss, or with `accuracy=True` the held-out accuracy. Stops early when the smoothed
        loss that the suggestions follow exceeds `diverge_th` x its best value, or any loss is NaN/inf.
        """
        lrs = sweep_lrs(start_lr, end_lr, num_iter, mode)
        usable = num_iter - int(num_iter * SKIP_START)
        if usable < MIN_POINTS:
            fewest = next(n for n in itertools.count(MIN_POINTS) if n - int(n * SKIP_START) >= MIN_POINTS)
            raise ConfigError(
                f"LR range test num_iter (lr_find.num_iter) = {num_iter} leaves {usable} points after the first {int(num_iter * SKIP_START)} "
                f"(still settling) are skipped; a suggestion needs {MIN_POINTS}. Use num_iter >= {fewest} (100 is usual)."
            )
        if not 0.0 <= smooth_f < 1.0:
            raise ConfigError(f"LR range test smooth_f = {smooth_f!r} must lie in [0, 1).")
        if not diverge_th > 1.0:
            raise ConfigError(f"LR range test diverge_th = {diverge_th!r} must be > 1.")
        if accuracy and val_loader is None:
            raise ConfigError(
                "The LR range test's accuracy mode measures accuracy on held-out batches: pass val_loader (lr_find.measure=accuracy uses the validation split, data.val_size)."
            )
        if val_batches is not None and val_batches < 1:
            raise ConfigError(
                f"LR range test val_batches = {val_batches!r} must be >= 1 (or None for the whole val_loader)."
            )
        measure = "accuracy" if accuracy else ("val_loss" if val_loader is not None else "loss")
        val_gen = getattr(val_loader, "generator", None)
        extra = [g for g in (val_gen,) if g is not None and g is not self.generator]
        saved = self._snapshot(extra)
        started = time.perf_counter()
        try:
            held_out = None
            if val_loader is not None:
                # Materialized once, so every step sees the same images (and augmentation, if any).
                held_out = [tuple(b) for b in itertools.islice(val_loader, val_batches)]
                if not held_out:
                    raise VislabError("The LR range test's val_loader produced no batch.")
            scaler = torch.amp.GradScaler(self.device.type) if self.precision.use_scaler else None
            rec = _Recorder(self, smooth_f, diverge_th, held_out, scaler)
            train_one_epoch(
                self.model,
                _Feed(self.train_loader, self.optimizer, lrs, rec),
                self.optimizer,
                device=self.device,
                precision=self.precision,
                scaler=scaler,
                label_smoothing=self.label_smoothing,
                l1=self.l1,
                grad_clip=self.grad_clip,
                channels_last=self.channels_last,
                callbacks=[rec],
                progress=self.progress,
                desc="lr-find",
                stop_on_nonfinite=False,  # divergence is data here
            )
        finally:
            self._restore(saved)
        seconds = time.perf_counter() - started
        steps = len(rec.series["loss"])
        self.results = {
            "measure": measure,
            "mode": mode,
            "start_lr": start_lr,
            "end_lr": end_lr,
            "num_iter": num_iter,
            "smooth_f": smooth_f,
            "diverge_th": diverge_th,
            "steps": steps,
            "stop_reason": rec.stop_reason or "completed",
            "skipped_steps": rec.skipped,  # fp16: steps the GradScaler skipped, repeated at the same LR
            "seconds": seconds,
            "lr": rec.lrs[:steps],
            **rec.series,
        }
        log.info(
            "LR range test: %d of %d steps (%s), lr %.3g..%.3g, %.1f s",
            steps,
            num_iter,
            self.results["stop_reason"],
            lrs[0],
            rec.lrs[steps - 1] if steps else lrs[0],
            seconds,
        )
        return self.results

    # -- suggestions ---------------------------------------------------------------------------

    def _curve(self) -> tuple[str, list[float], list[float]]:
        """(label, raw, smoothed) of the curve the suggestions follow."""
        r = self.results
        if r["measure"] == "accuracy":
            return "held-out accuracy (%)", r["val_acc"], r["smoothed_val_acc"]
        if r["measure"] == "val_loss":
            return "held-out loss", r["val_loss"], r["smoothed_val_loss"]
        return "training loss", r["loss"], r["smoothed_loss"]

    def suggestions(self) -> dict[str, Any]:
        """Every suggestion (LR floats; "onecycle" a (min, max) pair) plus "chosen", "method", "flat", "warnings".

        Raises `RangeTestError` (never returns None) when the sweep left too few finite points.
        """
        if not self.results:
            raise RangeTestError("No LR range test has run yet: call range_test() first.")
        r = self.results
        _, _, smoothed = self._curve()
        y = np.asarray(smoothed, dtype=np.float64)
        if r["measure"] == "accuracy":
            y = 100.0 - y  # error rate: every method then looks for a minimum
        lr = np.asarray(r["lr"], dtype=np.float64)
        keep = np.isfinite(y)
        keep[: int(r["num_iter"] * SKIP_START)] = False
        if keep.sum() < MIN_POINTS:
            raise RangeTestError(
                f"The LR range test left {int(keep.sum())} usable points (it ran {r['steps']} of {r['num_iter']} steps and "
                f"stopped: {r['stop_reason']}; the first {int(r['num_iter'] * SKIP_START)} are skipped, non-finite ones dropped); "
                f"a suggestion needs {MIN_POINTS}. Lower start_lr, raise num_iter, or raise diverge_th (now {r['diverge_th']})."
            )
        s = suggest(lr[keep], y[keep])
        warnings = []
        if s["relative_drop"] < FLAT_TOL:
            warnings.append(
                f"flat curve: the smoothed {r['measure']} never got more than {100 * FLAT_TOL:.0f}% better than where it started "
                f"({100 * s['relative_drop']:.1f}%; its best point was at lr {s['min_loss']:.3g}), so no suggestion is reliable. "
                f"Give the loss more steps where it moves: "
                f"raise num_iter (now {r['num_iter']}), or narrow start_lr..end_lr (now {r['start_lr']:.3g}..{r['end_lr']:.3g}) "
                f"to the LRs where it falls and then rises; or check that the model learns at all."
            )
        if s["best_is_last"] and r["stop_reason"] == "completed":
            warnings.append(
                f"still improving at end_lr = {r['end_lr']:.3g}: the best LR may lie beyond the sweep; raise end_lr."
            )
        out = {k: s[k] for k in SUGGESTIONS}
        out["chosen"] = self._pick(out, self.method)
        out["method"] = self.method
        out["flat"] = s["relative_drop"] < FLAT_TOL
        out["warnings"] = warnings
        return out

    @staticmethod
    def _pick(sugg: dict[str, Any], method: str) -> float:
        # OneCycle's peak is the number a recipe needs (sched.max_lr); its min is max_lr / div_factor.
        return sugg[method][1] if method == "onecycle" else sugg[method]

    def suggestion(self, method: str | None = None) -> float:
        """The suggested LR by `method` (default: the finder's `suggestion`); "onecycle" gives its max."""
        method = method or self.method
        if method not in SUGGESTIONS:
            raise ConfigError(
                f"LR range test suggestion = {method!r} is not known; choose one of {', '.join(SUGGESTIONS)}."
            )
        return self._pick(self.suggestions(), method)

    # -- outputs -------------------------------------------------------------------------------

    def plot(self, ax: Axes | None = None) -> Figure:
        """Loss (or accuracy) against LR on a log axis, raw and smoothed, with the suggestions marked."""
        if not self.results:
            raise RangeTestError("No LR range test has run yet: call range_test() first.")
        if ax is None:
            from matplotlib.figure import Figure  # no pyplot: no global state, works headless

            fig = Figure(figsize=(7.5, 4.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        r = self.results
        label, raw, smoothed = self._curve()
        lrs = np.asarray(r["lr"], dtype=np.float64)
        raw_y, sm_y = np.asarray(raw, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
        ax.plot(lrs, raw_y, color="0.75", lw=1, label="raw")
        ax.plot(lrs, sm_y, color="C0", lw=2, label="smoothed")
        try:
            sugg = self.suggestions()
        except RangeTestError as e:
            sugg = None
            ax.text(0.02, 0.04, str(e).split(";")[0], transform=ax.transAxes, fontsize=8, color="C3", wrap=True)
        if sugg is not None:
            lo, hi = sugg["onecycle"]
            ax.axvspan(lo, hi, color="C2", alpha=0.12, label=f"onecycle {lo:.2g} .. {hi:.2g}")
            for i, name in enumerate(k for k in SUGGESTIONS if k != "onecycle"):  # onecycle: the span above
                lr = sugg[name]
                chosen = " (chosen)" if self.method == name else ""
                ax.axvline(
                    lr,
                    color=f"C{i + 3}",
                    ls="-" if chosen else "--",
                    lw=1.5 if chosen else 1,
                    label=f"{name} {lr:.2g}{chosen}",
                )
                y_at = np.interp(math.log10(lr), np.log10(lrs[np.isfinite(sm_y)]), sm_y[np.isfinite(sm_y)])
                ax.plot([lr], [y_at], "o", color=f"C{i + 3}", ms=6 if chosen else 4)
            if self.method == "onecycle":
                ax.axvline(hi, color="C2", lw=1.5, label=f"onecycle max {hi:.2g} (chosen)")
        self._set_ylim(ax, sm_y, raw_y, r["measure"] == "accuracy")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(label)
        ax.set_title(f"LR range test: {r['steps']} of {r['num_iter']} steps, {r['stop_reason']}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        return fig

    @staticmethod
    def _set_ylim(ax: Axes, smoothed: np.ndarray, raw: np.ndarray, higher_is_better: bool) -> None:
        # The diverging tail would squash the interesting part: show from the start value to the best one,
        # with room for the noise of the raw curve, and let the tail leave the plot.
        finite = smoothed[np.isfinite(smoothed)]
        if len(finite) < 2:
            return
        first, best = finite[0], (finite.max() if higher_is_better else finite.min())
        span = max(abs(first - best), 1e-3 * max(abs(first), 1.0))
        if higher_is_better:
            ax.set_ylim(first - 1.0 * span, best + 0.3 * span)
        else:
            ax.set_ylim(best - 0.3 * span, first + 1.0 * span)

    def to_dict(self) -> dict[str, Any]:
        """What `lr_find.json` holds: the sweep, every suggestion and the chosen one (or the error)."""
        out = dict(self.results)
        try:
            sugg = self.suggestions()
        except RangeTestError as e:
            out.update(suggestions=None, chosen=None, warnings=[], error=str(e))
        else:
            out["suggestions"] = {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in sugg.items() if k in SUGGESTIONS
            }
            out["chosen"] = {"method": sugg["method"], "lr": sugg["chosen"]}
            out["warnings"] = sugg["warnings"]
        return out

    def save(self, folder: str | Path) -> Path:
        """Write lr_find.json (non-finite values as null) and lr_find.png into `folder`; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            folder / LR_FIND_JSON, json.dumps(_finite_or_none(self.to_dict()), indent=1, allow_nan=False) + "\n"
        )
        buf = io.BytesIO()
        self.plot().savefig(buf, format="png", dpi=120)
        atomic_write_bytes(folder / LR_FIND_PNG, buf.getvalue())
        return folder


def _finite_or_none(obj: Any) -> Any:
    # Strict JSON has no NaN/Infinity: a diverged step is written as null.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj
