"""`vislab compare`: several runs' curves overlaid in one figure, a table of their data and metrics, and the course's reference."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import list_recipes, load_config
from ..errors import ConfigError
from ..files import atomic_write_text, range_test_fields, read_json
from ..plots import legend_below, plot_compare
from ..results import (
    COURSE_SETUP,
    CourseReference,
    course_references,
    plot_course_curve,
    recipe_differences,
    run_data,
    run_recipe,
)
from ..rundir import CALIBRATION_FILE, ROBUSTNESS_FILE
from ._render import Document
from ._rundir import RunFolder, read_run

COMPARE_ROOT = "runs"


@dataclass
class Comparison:
    markdown: Path
    html: Path
    figure: Path
    rows: list[dict[str, Any]]
    references: list[dict[str, Any]] = field(default_factory=list)  # one per run, when asked for the course's reference


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


def _reference_rows(folders: Sequence[RunFolder], labels: Sequence[str], reference: bool | str) -> list[dict[str, Any]]:
    """Per run: which recipe it ran (and how that was found), the course's reference for it, and where it differs from the recipe."""
    refs = course_references()
    allowed = ", ".join(sorted(refs))
    if isinstance(reference, str) and reference not in refs:
        raise ConfigError(
            f"--reference = {reference!r}: no course reference of that name; course references exist for {allowed} "
            "(the other recipes are vislab's own). Give one of them, or --reference alone after the RUN_DIRs to use the recipe each run ran."
        )
    recipes = {name: load_config(name)[1] for name in list_recipes()}
    out = []
    for label, f in zip(labels, folders):
        if isinstance(reference, str):
            recipe, how = reference, "given with --reference"
        else:
            recipe, how = run_recipe(f.config, f.config_text, f.summary, recipes)
            if recipe is None:
                raise ConfigError(
                    f"compare --reference: cannot tell which recipe {str(f.run_dir)!r} ran ({how}). Name the recipe whose course "
                    f"reference to show: --reference RECIPE, one of {allowed}."
                )
        ref = refs.get(recipe)
        done = len(f.history)
        final = (f.final_row() or {}).get("test_acc")
        out.append(
            {
                "run": label,
                "recipe": recipe,
                "found": how,
                "reference": ref,
                "epochs_done": done,
                "final_test_acc": final,
                "course_final_test_acc": ref.final if ref else None,
                "course_test_acc_at_epoch": ref.at_epoch(done) if ref else None,
                "differences": (
                    recipe_differences(f.config, recipes[recipe], range_test_fields(f.config_text))
                    if recipe in recipes
                    else []
                ),
            }
        )
    if not any(r["reference"] for r in out):
        names = ", ".join(sorted({r["recipe"] for r in out}))
        raise ConfigError(
            f"compare --reference: the runs ran {names}, which has no course reference (course references exist for {allowed}). "
            "Drop --reference, or name one of those recipes: --reference RECIPE."
        )
    return out


def _reference_section(doc: Document, refs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    def pct(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, (int, float)) else "n/a"

    doc.heading("Against the course's reference")
    doc.para(
        f"The course ran {COURSE_SETUP}. vislab's figures are on the data each run used (the data column, read from the run's "
        "config and summary) and on the machine it ran on, so a gap mixes the recipe's behaviour with those differences. "
        "The figure above overlays the course's per-epoch test accuracy (black, dashed) where the course published one."
    )
    doc.table(
        [
            "run",
            "recipe",
            "how the recipe was found",
            "data",
            "machine",
            "epochs",
            "vislab test acc at its last epoch (%)",
            "course at the same epoch (%)",
            "course final test acc (%)",
        ],
        [
            [
                r["run"],
                r["recipe"],
                r["found"],
                row["data"],
                row["machine"],
                row["epochs"],
                pct(r["final_test_acc"]),
                pct(r["course_test_acc_at_epoch"]),
                pct(r["course_final_test_acc"]),
            ]
            for r, row in zip(refs, rows)
        ],
    )
    for r in refs:
        ref: CourseReference | None = r["reference"]
        if ref is None:
            doc.para(f"{r['run']}: recipe {r['recipe']} has no course reference (it is vislab's own).", note=True)
            continue
        if not ref.curve:
            doc.para(
                f"{r['run']}: the course published no per-epoch log for {ref.recipe}; only the final figures are compared.",
                note=True,
            )
        if ref.curve_note:
            doc.para(
                f"{r['run']}: the course's {ref.recipe} curve is {ref.curve_note}. That attempt ended at {ref.curve_final:.2f}%; "
                f"the course's final figure for the recipe's settings is {ref.final:.2f}%.",
                note=True,
            )
        if r["differences"]:
            doc.para(
                f"{r['run']} differs from today's {r['recipe']} recipe in: " + "; ".join(r["differences"]) + ".",
                note=True,
            )
        doc.para(f"{r['run']}: the course's settings, as stated: {ref.settings}.", note=True)


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def trust_figures(run_dir: Path) -> dict[str, Any]:
    """Calibration and robustness figures a run folder holds (from `vislab report` / `vislab robust`), else None each."""
    out: dict[str, Any] = {"ece": None, "ece_scaled": None, "nll": None, "temperature": None, "robustness": None}
    cal = _dict(read_json(run_dir / CALIBRATION_FILE))
    test = (cal or {}).get("test") or {}
    if isinstance(test.get("plain"), dict):
        out["ece"], out["nll"] = test["plain"].get("ece"), test["plain"].get("nll")
    if isinstance(test.get("scaled"), dict):
        out["ece_scaled"] = test["scaled"].get("ece")
    if isinstance((cal or {}).get("temperature"), dict):
        out["temperature"] = cal["temperature"].get("value")
    rob = _dict(read_json(run_dir / ROBUSTNESS_FILE))
    if rob and isinstance(rob.get("accuracy"), dict):
        checkpoint = ((rob.get("key") or {}).get("prediction_key") or {}).get("checkpoint", "?")
        out["robustness"] = {
            "checkpoint": checkpoint,
            "images": rob.get("images"),
            "clean_acc": rob.get("clean_acc"),
            "mean_corruption_acc": rob.get("mean_corruption_acc"),
            "relative_drop": rob.get("relative_drop"),
            "per_corruption": {k: sum(v) / len(v) for k, v in rob["accuracy"].items() if v},
            "severities": rob.get("severities"),
            "source": rob.get("source"),
        }
    return out


def _trust_section(doc: Document, labels: Sequence[str], trust: Sequence[dict[str, Any]]) -> None:
    """Calibration and corruption robustness side by side, for the runs that have them."""
    if not any(t["ece"] is not None or t["robustness"] for t in trust):
        return

    def num(v: Any, fmt: str, scale: float = 1.0) -> str:
        return format(v * scale, fmt) if isinstance(v, (int, float)) else "n/a"

    doc.heading("Calibration and robustness")
    doc.para(
        "From each run's calibration.json (written by `vislab report`) and robustness.json (`vislab robust`, or the report's "
        "sample); n/a where a run has not computed them. ECE in percentage points over equal-width confidence bins; the "
        "scaled ECE is at the temperature fitted on the run's validation split. Mean corruption accuracy averages every "
        "corruption and severity computed; relative drop = (clean - mean corruption) / clean."
    )
    doc.table(
        [
            "run",
            "ECE (pp)",
            "ECE at T (pp)",
            "T",
            "NLL",
            "clean acc (%)",
            "mean corruption acc (%)",
            "relative drop (%)",
            "images",
        ],
        [
            [
                label,
                num(t["ece"], ".2f", 100),
                num(t["ece_scaled"], ".2f", 100),
                num(t["temperature"], ".3g"),
                num(t["nll"], ".4f"),
                num((t["robustness"] or {}).get("clean_acc"), ".2f"),
                num((t["robustness"] or {}).get("mean_corruption_acc"), ".2f"),
                num((t["robustness"] or {}).get("relative_drop"), ".1f", 100),
                num((t["robustness"] or {}).get("images"), ","),
            ]
            for label, t in zip(labels, trust)
        ],
    )
    robs = [(label, t["robustness"]) for label, t in zip(labels, trust) if t["robustness"]]
    if len(robs) > 1:
        names = list(dict.fromkeys(n for _, r in robs for n in r["per_corruption"]))
        doc.table(
            ["corruption (mean over severities, %)", *(label for label, _ in robs)],
            [[n.replace("_", " "), *(num(r["per_corruption"].get(n), ".1f") for _, r in robs)] for n in names],
        )
        if len({(r["images"], tuple(r["severities"] or ()), r["source"]) for _, r in robs}) > 1:
            doc.para(
                "The runs' robustness figures were computed on different image counts, severities or sources: compare "
                "them with care, or run `vislab robust` on each with the same options.",
                note=True,
            )


def compare_runs(
    run_dirs: Sequence[str | Path], out: str | Path | None = None, reference: bool | str = False
) -> Comparison:
    """Write compare.md, compare.html (self-contained) and compare.png into `out` (default runs/compare-<time>).

    `reference=True` adds the course's reference of the recipe each run ran (the per-epoch test
    accuracy overlaid, final figures side by side); a recipe name uses that recipe's for every run.
    """
    if len(run_dirs) < 1:
        raise ConfigError("compare: give at least one RUN_DIR (two or more to compare).")
    folders = [read_run(d) for d in run_dirs]
    labels = _labels(folders)
    # Before anything is written: a reference that cannot be found is the user's to name.
    refs = _reference_rows(folders, labels, reference) if reference else []
    out_dir = Path(out) if out is not None else Path(COMPARE_ROOT) / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    for label, f in zip(labels, folders):
        best, final = f.best_row() or {}, f.final_row() or {}
        m = f.config.model
        data = run_data(f.config, f.summary)
        rows.append(
            {
                "run": label,
                "run_dir": str(f.run_dir),
                "model": f"{m.name} w{m.width:g} {m.norm}",
                "optimizer": f"{f.config.optim.name} / {f.config.sched.name}",
                "epochs": f"{len(f.history)}/{f.config.trainer.epochs}",
                "data": data["name"],
                "train_images": data["train_images"],
                "test_images": data["test_images"],
                "machine": (f.summary or {}).get("device_name") or "not recorded (no summary.json yet)",
                "best_test_acc": best.get("test_acc"),
                "best_epoch": best.get("epoch"),
                "final_test_acc": final.get("test_acc"),
                "final_test_loss": final.get("test_loss"),
                "train_seconds": sum(float(r.get("seconds", 0.0)) for r in f.history),
                **trust_figures(f.run_dir),
            }
        )

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "n/a"

    def count(v: Any) -> str:  # an image count, or "all" when the run has not recorded it yet
        return f"{v:,}" if isinstance(v, int) else str(v)

    doc = Document(f"vislab compare: {len(folders)} runs")
    doc.para(
        f"Written by vislab on {datetime.now():%Y-%m-%d %H:%M}. Best = the epoch picked by each run's trainer.checkpoint_metric."
    )
    doc.table(
        [
            "run",
            "data",
            "train images",
            "test images",
            "model",
            "optimizer / schedule",
            "epochs",
            "best test acc (%)",
            "best epoch",
            "final test acc (%)",
            "final test loss",
            "train seconds",
        ],
        [
            [
                r["run"],
                r["data"],
                count(r["train_images"]),
                count(r["test_images"]),
                r["model"],
                r["optimizer"],
                r["epochs"],
                num(r["best_test_acc"], ".2f"),
                r["best_epoch"] if r["best_epoch"] is not None else "n/a",
                num(r["final_test_acc"], ".2f"),
                num(r["final_test_loss"], ".4f"),
                num(r["train_seconds"], ".0f"),
            ]
            for r in rows
        ],
    )
    if len({(r["data"], r["train_images"], r["test_images"]) for r in rows}) > 1:
        doc.para(
            "The runs used different data (see the data columns): their accuracies are not directly comparable.",
            note=True,
        )
    fig = plot_compare({label: f.history for label, f in zip(labels, folders)})
    if refs:
        acc = fig.axes[1]  # plot_compare's accuracy panel
        for ref in {r["reference"].recipe: r["reference"] for r in refs if r["reference"]}.values():
            plot_course_curve(ref, acc)
        legend_below(acc, "small")
    doc.image(
        "compare.png",
        fig,
        "loss and accuracy per epoch of every run" + (", with the course's test accuracy" if refs else ""),
    )
    if refs:
        _reference_section(doc, refs, rows)
    _trust_section(doc, labels, rows)
    doc.para("Run folders: " + "; ".join(f"{r['run']} = {r['run_dir']}" for r in rows), note=True)

    md, html = out_dir / "compare.md", out_dir / "compare.html"
    # The markdown's PNG sits beside it (image folder = the output folder itself).
    doc.write(md, html, out_dir)
    for row, r in zip(rows, refs):
        row.update({k: r[k] for k in ("recipe", "course_final_test_acc", "course_test_acc_at_epoch")})
    atomic_write_text(out_dir / "compare.json", json.dumps(rows, indent=1) + "\n")
    return Comparison(markdown=md, html=html, figure=out_dir / "compare.png", rows=rows, references=refs)
