"""`vislab.train` and `vislab.lr_find`: config -> data -> model -> engine -> run folder, and resume.

The wiring only: config turns into objects in `build`, the machine is described by `env`, and the
run folder's names and readers live in `rundir`. Nothing but the CLI and the package's public API
imports this module.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .build import (
    build_loggers,
    build_lr_finder,
    build_mixer,
    build_training,
    check_distributed,
    check_loggers,
    load_data,
    optimizer_kwargs,
    range_test_kwargs,
    scheduler_kwargs,
    step_kwargs,
)
from .config import Config, config_to_yaml, load_config
from .engine import (
    Callback,
    Checkpointer,
    DistInfo,
    LRMonitor,
    MetricsLogger,
    ModelEma,
    TensorBoardLogger,
    Trainer,
    best_row,
    broadcast_object,
    create_optimizer,
    create_scheduler,
    init_distributed,
    launched_by_torchrun,
    onecycle_peak_fraction,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    resume_checkpoint,
    shutdown,
)
from .env import determinism, device_name, setup_logging, versions
from .errors import ConfigError, Interrupted, VislabError
from .files import atomic_write_text, auto_note, config_header, write_jsonl
from .rundir import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    LR_STEPS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    check_writable,
    new_run_dir,
    read_resume_config,
    run_html,
    run_repr,
    write_data_info,
)
from .version import __version__

if TYPE_CHECKING:
    from .tuner import LRFinder

log = logging.getLogger(__name__)


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

    def __repr__(self) -> str:  # the dataclass default would print the whole config and model
        return run_repr("Run", self.run_dir, self.config, self.history)

    def _repr_html_(self) -> str:
        return run_html("Run", self.run_dir, self.config, self.history)


def _summary(
    run_dir: Path, name: str, cfg: Config, trainer: Trainer, device, precision, channels_last, started: float, ds, model
) -> dict[str, Any]:
    hist = trainer.history
    return {
        "recipe": name,
        "run_dir": str(run_dir),
        "status": "finished" if trainer.epoch >= cfg.trainer.epochs else "stopped",
        "epochs_completed": trainer.epoch,
        "epochs": cfg.trainer.epochs,
        "best_metric": cfg.trainer.checkpoint_metric,
        "best": best_row(hist, cfg.trainer.checkpoint_metric),
        "final": hist[-1] if hist else None,
        "train_seconds": sum(r["seconds"] for r in hist),
        "wall_seconds": time.perf_counter() - started,
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision.name,
        "channels_last": channels_last,
        "threads": torch.get_num_threads(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "dataset": {
            "name": ds.name,
            "train_images": int(ds.train_x.shape[0]),
            "val_images": 0 if ds.val_y is None else int(ds.val_y.shape[0]),
            "test_images": int(ds.test_x.shape[0]),
            "classes": ds.classes,
        },
        "versions": versions(),
    }


def _auto_fields(cfg: Config) -> list[str]:
    fields = ["optim.lr"] if cfg.optim.lr == "auto" else []
    if cfg.sched.max_lr == "auto":
        fields.append("sched.max_lr")
    return fields


def _range_test(
    cfg: Config, model: nn.Module, train_loader, val_loader, gen, device: torch.device, precision, channels_last: bool
) -> LRFinder:
    """The config's LR range test (section lr_find) with the config's optimizer; state is restored after."""
    finder = build_lr_finder(cfg, model, train_loader, gen, device, precision, channels_last)
    finder.range_test(**range_test_kwargs(cfg, val_loader))
    return finder


def _resolve_auto_lr(cfg: Config, fields: list[str], finder: LRFinder) -> float:
    """Put the range test's chosen LR into the `auto` fields of `cfg`; a flat or too short sweep is an error."""
    from .tuner import RangeTestError, format_suggestions

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
    log.info(
        "%s = auto -> %.4g (%s suggestion of the LR range test; %s)",
        " and ".join(fields),
        lr,
        s["method"],
        format_suggestions(s),
    )
    return lr


def lr_find(
    recipe: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    *,
    save: bool = False,
    dataset=None,
) -> LRFinder:
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
    ds = load_data(cfg, dataset)
    run_dir = None
    if out is not None or save:
        run_dir = new_run_dir(out, f"lr-find-{name}", overwrite=False)
        check_writable(run_dir)
    with determinism(t.deterministic, device):
        model, train_loader, _, val_loader, gen = build_training(cfg, ds, device, channels_last)
        log.info(
            "LR range test of %s: %s on %s (%s, %s, channels_last=%s), %s optimizer, lr %.3g..%.3g over %d steps",
            name,
            cfg.model.name,
            ds.name,
            device_name(device),
            precision.name,
            channels_last,
            cfg.optim.name,
            cfg.lr_find.start_lr,
            cfg.lr_find.end_lr,
            cfg.lr_find.num_iter,
        )
        finder = _range_test(cfg, model, train_loader, val_loader, gen, device, precision, channels_last)
    if run_dir is not None:
        finder.save(run_dir)
        header = f"# vislab {__version__} config of the LR range test of recipe {name!r}\n"
        atomic_write_text(run_dir / CONFIG_FILE, header + config_to_yaml(cfg))
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
        name, cfg, auto_notes = read_resume_config(run_dir, overrides)
    else:
        name, cfg = load_config(recipe, overrides)
        auto_notes = []
    check_loggers(cfg)
    auto = _auto_fields(cfg)
    if auto and resume is not None:
        raise ConfigError(
            f"{' and '.join(auto)} = auto cannot be combined with --resume: a resumed run keeps the LR stored in its config.yaml."
        )
    t = cfg.trainer
    dist = DistInfo()
    if distributed or (distributed is None and launched_by_torchrun()):
        if auto:
            raise ConfigError(
                f"{' and '.join(auto)} = auto is not supported under torchrun (each rank would sweep on its own); run `vislab lr-find` first and set the LR it prints."
            )
        dist, device = init_distributed(t.device)
        check_distributed(cfg, dist, device)
        if not dist.is_main:
            logging.getLogger("vislab").setLevel(logging.WARNING)  # one log, from rank 0
    else:
        device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    channels_last = resolve_channels_last(t.channels_last, device)

    ds = load_data(cfg, dataset)
    if resume is None:
        if dist.is_main:
            run_dir = new_run_dir(out, name, overwrite)
            check_writable(run_dir)
        # Rank 0 names the folder (its clock and suffix choice); every rank writes nothing else.
        run_dir = Path(broadcast_object(str(run_dir) if dist.is_main else None))

    with determinism(t.deterministic, device):
        model, train_loader, test_loader, val_loader, gen = build_training(
            cfg, ds, device, channels_last, dist, fresh=resume is None
        )
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
        optimizer = create_optimizer(model, **optimizer_kwargs(o))
        scheduler = create_scheduler(
            optimizer, epochs=t.epochs, steps_per_epoch=len(train_loader), **scheduler_kwargs(s)
        )
        forward_model = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # Gradients are averaged over ranks: with equal shards that is the global-batch mean.
            forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        compiled = torch.compile(forward_model) if t.compile else (forward_model if dist.enabled else None)

        # Only now, with config, data and model known good, does the run folder come to be.
        ckpt_dir = run_dir / CHECKPOINTS_DIR
        if dist.is_main:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
        files = (
            [
                MetricsLogger(run_dir / METRICS_FILE),
                LRMonitor(run_dir / LR_STEPS_FILE),
                Checkpointer(ckpt_dir, t.checkpoint_metric),
            ]
            if dist.is_main
            else []
        )
        # After the checkpointer: an epoch reaches the loggers only once its checkpoint has landed.
        loggers = build_loggers(cfg, run_dir, dist, recipe=name, precision=precision.name)
        trainer = Trainer(
            model,
            optimizer,
            scheduler,
            train_loader=train_loader,
            test_loader=test_loader,
            val_loader=val_loader,
            epochs=t.epochs,
            device=device,
            precision=precision,
            channels_last=channels_last,
            progress=t.progress,
            **step_kwargs(o),
            generator=gen,
            compiled_model=compiled,
            callbacks=[*files, *loggers, *callbacks],
            eval_model=model if dist.enabled else None,
            distributed=dist.enabled,
            interrupt_dir=ckpt_dir if dist.is_main else None,
            # After the range test (which restores the model): the average starts from the weights training starts from.
            ema=ModelEma(model, t.ema_decay, warmup=t.ema_warmup) if t.ema_decay is not None else None,
            mix=build_mixer(cfg.augment, gen),
            mix_off_epochs=cfg.augment.mix_off_epochs,
            checkpoint_seconds=60 * t.checkpoint_minutes if t.checkpoint_minutes is not None else None,
        )
        if resume is not None:
            state, source = resume_checkpoint(ckpt_dir, map_location=device)
            if state is not None:
                try:
                    trainer.load_state_dict(state)
                except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
                    raise VislabError(
                        f"--resume {str(run_dir)!r}: the checkpoint does not fit the run's config.yaml ({str(e).splitlines()[0][:160]}); was config.yaml edited? Start a new run instead."
                    ) from None
                if trainer.partial is not None:
                    log.info(
                        "resuming %s inside epoch %d of %d, after its step %d (checkpoints/%s)",
                        run_dir,
                        trainer.epoch + 1,
                        t.epochs,
                        trainer.partial["totals"]["batches"],
                        source,
                    )
                else:
                    log.info("resuming %s after epoch %d of %d", run_dir, trainer.epoch, t.epochs)
            else:
                log.info("resuming %s from the start: it stopped before its first epoch ended", run_dir)
            # Rows of an epoch whose checkpoint never landed are dropped: that epoch runs again.
            if dist.is_main:
                write_jsonl(run_dir / METRICS_FILE, trainer.history)
        # What the first run noted under its header (e.g. which LR an `auto` became) stays on resume.
        header = config_header(__version__, name) + "".join(auto_notes)
        if finder is not None:
            finder.save(run_dir)
            sugg = finder.suggestions()
            for field_name in auto:
                header += auto_note(field_name, sugg["chosen"], sugg["method"])
        if dist.is_main:
            atomic_write_text(run_dir / CONFIG_FILE, header + config_to_yaml(cfg))
            write_data_info(run_dir, ds)
        log.info(
            "run %s: %s on %s (%s, %s, channels_last=%s), %d train / %d test images",
            run_dir,
            cfg.model.name,
            ds.name,
            device_name(device),
            precision.name,
            channels_last,
            ds.train_x.shape[0],
            ds.test_x.shape[0],
        )
        try:
            trainer.fit()
        except Interrupted as e:
            e.run_dir = str(run_dir)
            # The run so far stays usable: summary and report of the completed epochs, then stop.
            summary = _summary(run_dir, name, cfg, trainer, device, precision, channels_last, started, ds, model)
            summary["status"] = "interrupted"
            _finish(run_dir, summary, ds, dist, t.report and bool(trainer.history), loggers)
            raise
        except BaseException:
            _close(loggers)  # what was logged until the failure stays, flushed
            raise

    summary = _summary(run_dir, name, cfg, trainer, device, precision, channels_last, started, ds, model)
    if t.tta != "none" and dist.is_main:
        tta_start = time.perf_counter()
        summary["tta"] = _tta_figures(cfg, ds, trainer, device, precision, channels_last)
        summary["tta"]["seconds"] = time.perf_counter() - tta_start
        summary["wall_seconds"] = time.perf_counter() - started  # the whole command, its TTA evaluation included
    if dist.enabled:
        summary["world_size"] = dist.world_size
    if finder is not None:
        summary["lr_find"] = {"fields": auto, **finder.to_dict()["chosen"], "seconds": finder.results["seconds"]}
    _finish(run_dir, summary, ds, dist, t.report, loggers)
    return Run(run_dir=run_dir, config=cfg, model=model, history=trainer.history, summary=summary)


def _tta_figures(cfg: Config, ds, trainer: Trainer, device, precision, channels_last: bool) -> dict[str, Any]:
    """Test accuracy and loss of the final weights (and their EMA) with test-time augmentation, beside the plain
    figures of the same weights: reported apart (summary.json "tta"), never in place of metrics.jsonl's."""
    import torch.nn.functional as F

    from .augment import TensorAugment
    from .build import augment_spec
    from .explain import predict

    normalize = TensorAugment(augment_spec(cfg), ds.mean, ds.std).normalize_only
    labels = ds.test_y.long()
    last = trainer.history[-1]
    out: dict[str, Any] = {"mode": cfg.trainer.tta, "epoch": trainer.epoch}
    models = {"": trainer.model, **({"ema_": trainer.ema.module} if trainer.ema is not None else {})}
    for prefix, model in models.items():
        # The plain figures of these weights are the last epoch's evaluation: taken from it, not predicted again.
        out[f"{prefix}test_acc"], out[f"{prefix}test_loss"] = last[f"{prefix}test_acc"], last[f"{prefix}test_loss"]
        logits = predict(
            model,
            ds.test_x,
            normalize,
            device=device,
            autocast_dtype=precision.dtype,
            channels_last=channels_last,
            tta=cfg.trainer.tta,
        )
        out[f"{prefix}tta_test_acc"] = 100.0 * float((logits.argmax(1) == labels).double().mean())
        out[f"{prefix}tta_test_loss"] = float(F.cross_entropy(logits, labels))
    log.info(
        "test-time augmentation (%s): test accuracy %.2f%% -> %.2f%%%s",
        cfg.trainer.tta,
        out["test_acc"],
        out["tta_test_acc"],
        f"; EMA weights {out['ema_test_acc']:.2f}% -> {out['ema_tta_test_acc']:.2f}%" if "ema_test_acc" in out else "",
    )
    return out


def _finish(
    run_dir: Path,
    summary: dict[str, Any],
    ds,
    dist: DistInfo,
    report: bool,
    loggers: Sequence[TensorBoardLogger] = (),
) -> None:
    """summary.json and the report, written by rank 0 only, after the process group is closed; the report's
    figures then go to the loggers, which are closed."""
    try:
        if dist.is_main:
            atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        shutdown()  # a no-op outside torchrun
        if dist.is_main and report:
            md = _write_report(run_dir, ds, summary.get("device", "auto"))
            if md is not None and loggers:
                _log_figures(loggers, _report_figures(md))
    finally:
        _close(loggers)


def _log_figures(loggers: Sequence[TensorBoardLogger], figures: dict[str, Path]) -> None:
    for logger in loggers:
        try:
            logger.add_figures(figures)
        except Exception as e:  # noqa: BLE001 - as with the report: a finished run must not fail on its figures
            log.warning("report figures not logged (%s: %s)", type(e).__name__, e)


def _close(loggers: Sequence[TensorBoardLogger]) -> None:
    for logger in loggers:
        logger.close()


def _write_report(run_dir: Path, ds, device: str) -> Path | None:
    """The report's report.md, written on the device the run trained on; None when it could not be written."""
    from .report import write_report

    try:
        path = write_report(run_dir, dataset=ds, device=device)  # reuses the data set already in memory
        log.info("report: %s", path)
        return Path(path)
    except Exception as e:  # noqa: BLE001 - a finished run must not fail on its report
        log.warning("report not written (%s: %s); `vislab report %s` retries", type(e).__name__, e, run_dir)
        return None


# A Markdown image link to a PNG: ![alt](path.png)
_MD_PNG = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")


def _report_figures(md_path: Path) -> dict[str, Path]:
    """name -> PNG file of every figure report.md shows, in its order (the Markdown's links are where they live)."""
    try:
        text = md_path.read_text()
    except OSError:
        return {}
    return {Path(link).stem: md_path.parent / link for link in _MD_PNG.findall(text)}
