"""The run folder: its file names, creating it, and reading it back (config, history, summary, checkpoints).

Every writer (run, engine hooks) and reader (report, compare, results) takes the names from here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import Config, apply_overrides, load_config, parse_config_yaml, validate_config
from .engine import BEST, INTERRUPTED, LAST, best_row, checkpoint_exists, metric_mode
from .errors import ConfigError, DataError, VislabError
from .explain import checkpoint_key
from .files import atomic_write_text, header_auto_notes, header_recipe, read_json, read_jsonl
from .tuner import LR_FIND_JSON

log = logging.getLogger(__name__)

RUNS_ROOT = "runs"  # where run folders go by default: runs/<recipe>-<YYYYmmdd-HHMMSS>
CONFIG_FILE = "config.yaml"  # the resolved config, with the recipe name in its header
METRICS_FILE = "metrics.jsonl"  # one row per finished epoch
LR_STEPS_FILE = "lr_steps.json"  # the LR of every optimizer step
SUMMARY_FILE = "summary.json"  # best and final metrics, timings, device, versions (written at the end)
CHECKPOINTS_DIR = "checkpoints"  # best/, last/ and interrupted/ checkpoint folders
CHECKPOINT_NAMES = (BEST, LAST)  # the ones a report or explanation may pick by name, in order of preference
CALIBRATION_FILE = "calibration.json"  # calibration metrics and the temperature fitted on the validation split
ROBUSTNESS_FILE = "robustness.json"  # accuracy per corruption and severity (vislab robust, the report)
SWEEP_FILE = "cam_sweep.json"  # CAM method x layer faithfulness scores (vislab explain --sweep); the report's choice
DATA_FILE = "data.json"  # the data set's classes, image size and training mean/std: predict and export need no data
TENSORBOARD_DIR = "tensorboard"  # event files (trainer.loggers: [tensorboard]); one TensorBoard run per run folder

__all__ = [
    "BEST",
    "CALIBRATION_FILE",
    "CHECKPOINTS_DIR",
    "CHECKPOINT_NAMES",
    "CONFIG_FILE",
    "DATA_FILE",
    "INTERRUPTED",
    "LAST",
    "LR_STEPS_FILE",
    "METRICS_FILE",
    "RESUME_OVERRIDABLE",
    "ROBUSTNESS_FILE",
    "RUNS_ROOT",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "TENSORBOARD_DIR",
    "RunFolder",
    "check_writable",
    "data_info",
    "find_checkpoint",
    "is_lr_find_folder",
    "metric_mode",
    "new_run_dir",
    "read_resume_config",
    "read_run",
    "read_temperature",
    "write_data_info",
    "refuse_lr_find_folder",
]


def new_run_dir(out: str | Path | None, name: str, overwrite: bool) -> Path:
    """The folder a new run writes to: `out`, or runs/<name>-<time>; never an earlier run's unless `overwrite`."""
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


def check_writable(path: Path) -> None:
    """Fail before any work if the run folder cannot be created (probe with a temp folder, removed at once)."""
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(
            f"Output folder {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder. Choose another --out."
        )
    try:
        probe = tempfile.mkdtemp(dir=parent, prefix=".vislab-probe-")
        os.rmdir(probe)
    except OSError as e:
        raise ConfigError(
            f"Output folder {str(path)!r} cannot be created: {str(parent)!r} is not writable ({e.strerror}). Choose another --out."
        ) from None


@dataclass
class RunFolder:
    """The files of a run folder, read without building the model (cheap: used by `compare` too)."""

    run_dir: Path
    config: Config
    config_text: str
    history: list[dict[str, Any]]  # metrics.jsonl rows
    lr_steps: list[float]
    summary: dict[str, Any] | None  # summary.json; None for an interrupted run
    lr_find: dict[str, Any] | None  # lr_find.json when the LR range test ran

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def finished(self) -> bool:
        return len(self.history) >= self.config.trainer.epochs

    def best_row(self) -> dict[str, Any] | None:
        """The epoch the `best` checkpoint keeps (by trainer.checkpoint_metric)."""
        return best_row(self.history, self.config.trainer.checkpoint_metric)

    def final_row(self) -> dict[str, Any] | None:
        return self.history[-1] if self.history else None


def is_lr_find_folder(path: str | Path) -> bool:
    """A folder `vislab lr-find` wrote: its sweep, and none of a training run's epochs or checkpoints.

    (A training run with an `auto` LR keeps its sweep too, but it made checkpoints/ before its sweep was saved.)
    """
    path = Path(path)
    return (
        (path / LR_FIND_JSON).is_file() and not (path / CHECKPOINTS_DIR).exists() and not (path / METRICS_FILE).exists()
    )


def refuse_lr_find_folder(path: str | Path, what: str) -> None:
    """One paragraph for a command that needs a training run and was given an LR range test's folder."""
    if is_lr_find_folder(path):
        raise ConfigError(
            f"{what} {str(path)!r} is the output of `vislab lr-find` (an LR range test: {LR_FIND_JSON} and lr_find.png), "
            "not a training run, so it has no epochs, checkpoints or report to show. Look at its lr_find.png, and train "
            "with the LR it printed (e.g. `vislab train RECIPE --set optim.lr=...`, or sched.max_lr under OneCycle)."
        )


def read_run(run_dir: str | Path) -> RunFolder:
    """Config and per-epoch files of a `vislab train` run folder (finished or interrupted)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    refuse_lr_find_folder(run_dir, "RUN_DIR")
    if not run_dir.is_dir():
        raise ConfigError(
            f"RUN_DIR {str(run_dir)!r} is not a folder; give the folder a `vislab train` run wrote (it holds {CONFIG_FILE})."
        )
    if not cfg_path.is_file():
        raise ConfigError(f"RUN_DIR {str(run_dir)!r} holds no {CONFIG_FILE}; give the folder of a `vislab train` run.")
    _, cfg = load_config(cfg_path)
    metrics = run_dir / METRICS_FILE
    try:
        history = read_jsonl(metrics) if metrics.is_file() else []
    except (OSError, ValueError) as e:
        raise DataError(
            f"{str(metrics)!r} cannot be read as JSON lines ({e}); it was not written by vislab or is damaged."
        ) from None
    lr_steps = read_json(run_dir / LR_STEPS_FILE)
    return RunFolder(
        run_dir=run_dir,
        config=cfg,
        config_text=cfg_path.read_text(),
        history=history,
        lr_steps=[float(v) for v in lr_steps] if isinstance(lr_steps, list) else [],
        summary=read_json(run_dir / SUMMARY_FILE),
        lr_find=read_json(run_dir / LR_FIND_JSON),
    )


def find_checkpoint(run_dir: Path, checkpoint: str | Path | None = None) -> Path:
    """`best` when present, else `last` (an interrupted run may have only that); or the one asked for."""
    folder = run_dir / CHECKPOINTS_DIR
    if checkpoint is None:
        for name in CHECKPOINT_NAMES:
            if checkpoint_exists(folder / name):
                return folder / name
        raise VislabError(
            f"{str(folder)!r} holds neither a best nor a last checkpoint: the run stopped before its first epoch ended, so there is "
            "no model to explain. Train it again (or `vislab train --resume`) for at least one epoch."
        )
    # The names of checkpoints/ (interrupted/ is written when a run is stopped mid-epoch), or a path.
    path = folder / str(checkpoint) if checkpoint in (*CHECKPOINT_NAMES, INTERRUPTED) else Path(checkpoint)
    if not checkpoint_exists(path):
        raise ConfigError(
            f"checkpoint = {str(checkpoint)!r}: {str(path)!r} is not a checkpoint folder; use {BEST}, {LAST}, {INTERRUPTED} or the "
            "path of a checkpoint folder."
        )
    return path


def write_data_info(run_dir: Path, ds: Any) -> None:
    """What a trained model needs to know of its data set to be used without it (an ImageDataset `ds`)."""
    h, w = ds.image_size
    info = {
        "name": ds.name,
        "classes": list(ds.classes),
        "image_size": [h, w],
        "channels": int(ds.train_x.shape[1]),
        "mean": [float(m) for m in ds.mean],
        "std": [float(s) for s in ds.std],
        "train_images": int(ds.train_y.numel()),
        "val_images": int(ds.val_y.numel()) if ds.val_y is not None else 0,
        "test_images": int(ds.test_y.numel()),
    }
    atomic_write_text(run_dir / DATA_FILE, json.dumps(info, indent=1) + "\n")


def data_info(run_dir: str | Path) -> Any:
    """An image-less ImageDataset with the run's classes, image size and mean/std (from data.json), or None.

    Enough for `vislab predict` and `vislab export`, which take their images elsewhere; None for runs
    trained before vislab wrote data.json, whose data set must then be loaded.
    """
    import torch

    from .data import ImageDataset

    d = read_json(Path(run_dir) / DATA_FILE)
    try:
        h, w = (int(v) for v in d["image_size"])
        empty = torch.empty(0, int(d.get("channels", 3)), h, w, dtype=torch.uint8)
        labels = torch.empty(0, dtype=torch.int64)
        mean, std = (tuple(float(v) for v in d[k]) for k in ("mean", "std"))
        return ImageDataset(str(d["name"]), empty, labels, empty, labels, [str(c) for c in d["classes"]], mean, std)
    except (TypeError, KeyError, ValueError):
        return None


def read_temperature(run_dir: str | Path, checkpoint: str | Path, weights: str = "raw") -> float | None:
    """The softmax temperature fitted for `checkpoint` (a folder under checkpoints/) on the run's validation split.

    None when the run has no fitted temperature (no validation split, report not written yet) or when it was
    fitted for another checkpoint or an earlier state of this one: a temperature belongs to the weights it was fitted on.
    """
    data = read_json(Path(run_dir) / CALIBRATION_FILE)
    if not isinstance(data, dict):
        return None
    fitted = data.get("temperature")
    if not isinstance(fitted, dict) or not isinstance(fitted.get("value"), (int, float)):
        return None
    key, now = fitted.get("checkpoint_key"), checkpoint_key(checkpoint)
    if not isinstance(key, dict) or any(key.get(k) != now[k] for k in ("checkpoint", "content")):
        return None
    if fitted.get("weights", "raw") != weights:  # fitted on the EMA weights, asked for the raw ones, or the reverse
        return None
    return float(fitted["value"])


# What a resumed run may change: where and how it runs, never what it computes (the checkpoint's
# model, optimizer and schedule state must fit the config). Epochs may grow only where the
# schedule does not depend on the total length.
RESUME_OVERRIDABLE = {
    "trainer.progress",
    "trainer.report",
    "trainer.device",
    "trainer.compile",
    "trainer.eval_batch_size",
    "data.root",
    "data.cache_dir",
    "data.download",
    "augment.workers",
    "trainer.loggers",
    "trainer.tta",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_minutes",
}


def read_resume_config(run_dir: Path, overrides=None) -> tuple[str, Config, list[str]]:
    """(recipe name, config, header auto notes) of a run folder to resume, with the overrides a resume may change;
    refuses the rest.

    The recipe is the one config.yaml's header names (the folder's own name for a file without that header), so a
    resumed variant in a folder of its own, e.g. runs/resnet9-onecycle-lr0027, still says which recipe it ran. The
    auto notes (which LR an `auto` field became) go into the resumed run's config.yaml again.
    """
    refuse_lr_find_folder(run_dir, "--resume")
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise VislabError(
            f"--resume {str(run_dir)!r}: no {CONFIG_FILE} there; give the folder of an earlier `vislab train` run."
        )
    try:
        text = cfg_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--resume {str(run_dir)!r}: config.yaml cannot be read ({e}).") from None
    raw = parse_config_yaml(text, f"{cfg_path}")
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
    return header_recipe(text) or run_dir.name, cfg, header_auto_notes(text)


def run_repr(kind: str, run_dir: Path, cfg: Config, history: list[dict[str, Any]]) -> str:
    """One line for a run in a notebook: folder, progress, best and final test accuracy (not the whole config and model)."""
    metric = cfg.trainer.checkpoint_metric
    best, final = best_row(history, metric), history[-1] if history else None
    parts = [f"{str(run_dir)!r}", f"{cfg.model.name}", f"{len(history)}/{cfg.trainer.epochs} epochs"]
    if best is not None and isinstance(best.get("test_acc"), (int, float)):
        parts.append(f"best test_acc {best['test_acc']:.2f}% (epoch {best['epoch']}, by {metric})")
    if final is not None and isinstance(final.get("test_acc"), (int, float)):
        parts.append(f"final test_acc {final['test_acc']:.2f}%")
    return f"{kind}({', '.join(parts)})"


def run_html(kind: str, run_dir: Path, cfg: Config, history: list[dict[str, Any]]) -> str:
    """Jupyter's view of a run: the one-line facts and a small loss/accuracy figure, inline."""
    import base64
    import html
    import io

    text = html.escape(run_repr(kind, run_dir, cfg, history))
    if not history:
        return f"<div><code>{text}</code></div>"
    from .plots import plot_curves

    fig = plot_curves(history)
    fig.set_size_inches(6.0, 2.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    img = base64.b64encode(buf.getvalue()).decode()
    return (
        f'<div><code>{text}</code><br><img src="data:image/png;base64,{img}" alt="loss and accuracy per epoch"></div>'
    )
