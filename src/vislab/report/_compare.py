"""`vislab compare`: several runs' curves overlaid in one figure and a table of their best and final metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..engine.checkpoint import atomic_write_text
from ..errors import ConfigError
from ..plots import plot_compare
from ._render import Document
from ._rundir import RunFolder, read_run

COMPARE_ROOT = "runs"


@dataclass
class Comparison:
    markdown: Path
    html: Path
    figure: Path
    rows: list[dict[str, Any]]


def _labels(folders: Sequence[RunFolder]) -> list[str]:
    # Runs of the same name in different parents (a/quick, b/quick) are told apart by their parent folder.
    names = [f.name for f in folders]
    out = []
    for f in folders:
        label = f.name if names.count(f.name) == 1 else f"{f.run_dir.parent.name}/{f.name}"
        while label in out:
            label += "'"
        out.append(label)
    return out


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None) -> Comparison:
    """Write compare.md, compare.html (self-contained) and compare.png into `out` (default runs/compare-<time>)."""
    if len(run_dirs) < 1:
        raise ConfigError("compare: give at least one RUN_DIR (two or more to compare).")
    folders = [read_run(d) for d in run_dirs]
    labels = _labels(folders)
    out_dir = Path(out) if out is not None else Path(COMPARE_ROOT) / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    for label, f in zip(labels, folders):
        best, final = f.best_row() or {}, f.final_row() or {}
        m = f.config.model
        rows.append({
            "run": label, "run_dir": str(f.run_dir), "model": f"{m.name} w{m.width:g} {m.norm}",
            "optimizer": f"{f.config.optim.name} / {f.config.sched.name}", "epochs": f"{len(f.history)}/{f.config.trainer.epochs}",
            "best_test_acc": best.get("test_acc"), "best_epoch": best.get("epoch"), "final_test_acc": final.get("test_acc"),
            "final_test_loss": final.get("test_loss"), "train_seconds": sum(float(r.get("seconds", 0.0)) for r in f.history),
        })

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "n/a"

    doc = Document(f"vislab compare: {len(folders)} runs")
    doc.para(f"Written by vislab on {datetime.now():%Y-%m-%d %H:%M}. Best = the epoch picked by each run's trainer.checkpoint_metric.")
    doc.table(
        ["run", "model", "optimizer / schedule", "epochs", "best test acc (%)", "best epoch", "final test acc (%)", "final test loss", "train seconds"],
        [[r["run"], r["model"], r["optimizer"], r["epochs"], num(r["best_test_acc"], ".2f"), r["best_epoch"] if r["best_epoch"] is not None else "n/a",
          num(r["final_test_acc"], ".2f"), num(r["final_test_loss"], ".4f"), num(r["train_seconds"], ".0f")] for r in rows],
    )
    fig = plot_compare({label: f.history for label, f in zip(labels, folders)})
    doc.image("compare.png", fig, "loss and accuracy per epoch of every run")
    doc.para("Run folders: " + "; ".join(f"{r['run']} = {r['run_dir']}" for r in rows), note=True)

    md, html = out_dir / "compare.md", out_dir / "compare.html"
    # The markdown's PNG sits beside it (image folder = the output folder itself).
    doc.write(md, html, out_dir)
    atomic_write_text(out_dir / "compare.json", json.dumps(rows, indent=1) + "\n")
    return Comparison(markdown=md, html=html, figure=out_dir / "compare.png", rows=rows)
