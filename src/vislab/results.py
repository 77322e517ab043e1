"""The course's reference figures and vislab's measured results, shipped as package data, and what a run is compared against."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .files import header_recipe, range_test_fields

if TYPE_CHECKING:  # matplotlib is imported only when something is drawn: `vislab recipes -v` stays light
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .config import Config

COURSE_FILE = "course.json"  # the course's per-epoch test accuracy, copied once from its logs
RESULTS_FILE = "results.json"  # vislab's measured figures: a copy of docs/results.json (a test keeps them equal)
# The keys of every measured entry, in this order (docs/results.json and the package copy).
RESULT_KEYS = (
    "recipe",
    "epochs_done",
    "epochs_planned",
    "final_test_acc",
    "best_test_acc",
    "tta_test_acc",  # the final weights with the recipe's test-time augmentation (trainer.tta), else None
    "wall_seconds",
    "time_note",  # what the time covers beyond what the run files say (e.g. a shared CPU), or None
    "machine",
    "data",
    "date",
    "commit",
    "course_test_acc",
)
_NUMBER = (int, float)
_RESULT_TYPES: dict[str, tuple[type, ...]] = {
    "recipe": (str,),
    "epochs_done": (int,),
    "epochs_planned": (int,),
    "final_test_acc": _NUMBER,
    "best_test_acc": _NUMBER,
    "tta_test_acc": (*_NUMBER, type(None)),
    "wall_seconds": _NUMBER,
    "time_note": (str, type(None)),
    "machine": (str,),
    "data": (str,),
    "date": (str,),
    "commit": (str,),
    "course_test_acc": (*_NUMBER, type(None)),
}
COURSE_SETUP = "canonical CIFAR-10 (50,000 train / 10,000 test images) on a Colab GPU"

# A published curve that is not the run of the course's final figure, and how it differs. The
# LayerNorm write-up logged only its patience-10 attempt; the recipe follows the patience-2 one.
_CURVE_VARIANTS = {
    "patience10": "the course's patience-10 attempt (ReduceLROnPlateau patience 10), unlike the recipe's patience 2: the two curves "
    "compare unlike runs",
}

# Settings that say where and how a run ran, not what it computed: ignored when a run's config is
# matched against a recipe. The data section is reported on its own (the data column).
_WHERE_NOT_WHAT = {
    "trainer.device",
    "trainer.progress",
    "trainer.report",
    "trainer.compile",
    "trainer.eval_batch_size",
    "trainer.loggers",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_minutes",  # mid-epoch checkpoints: a resumed run computes the same numbers (tested)
    "augment.workers",
}


@dataclass(frozen=True)
class CourseReference:
    """What the course's run logged for the run a recipe follows (percent, canonical CIFAR-10, GPU)."""

    recipe: str
    final: float  # final test accuracy of the course run the recipe follows
    settings: str  # the settings as the course's write-up stated them
    curve: tuple[float, ...] = ()  # per-epoch test accuracy, epoch 1 first; empty when none was published
    curve_final: float | None = None  # final figure of the run the curve comes from
    curve_note: str = ""  # empty when the curve is the run of `final`; otherwise how that run differs

    def at_epoch(self, epoch: int) -> float | None:
        return self.curve[epoch - 1] if 1 <= epoch <= len(self.curve) else None


def _package_json(name: str) -> Any:
    return json.loads((resources.files("vislab") / "recipes" / name).read_text())


@lru_cache(maxsize=1)
def course_references() -> dict[str, CourseReference]:
    """Recipe name -> the course's reference, from the shipped course.json."""
    refs = {}
    for recipe, d in _package_json(COURSE_FILE).items():
        if not isinstance(d, dict):
            continue  # "about", "origin": text
        curve, curve_final, note = d.get("test_acc", ()), d.get("final"), ""
        for variant, text in _CURVE_VARIANTS.items():
            if not curve and f"test_acc_{variant}" in d:
                curve, curve_final, note = d[f"test_acc_{variant}"], d[f"final_{variant}"], text
        refs[recipe] = CourseReference(
            recipe,
            float(d["final"]),
            d["settings"],
            tuple(float(v) for v in curve),
            float(curve_final) if curve else None,
            note,
        )
    return refs


def course_reference(recipe: str) -> CourseReference | None:
    return course_references().get(recipe)


def check_result_entries(entries: Any, where: str) -> list[dict[str, Any]]:
    """The measured entries, refused unless each has exactly RESULT_KEYS (a hand edit is caught here, not in a table)."""
    if not isinstance(entries, list):
        raise ConfigError(f"{where} must hold a list of result objects, got {type(entries).__name__}.")
    seen = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or set(e) != set(RESULT_KEYS):
            got = sorted(e) if isinstance(e, dict) else type(e).__name__
            raise ConfigError(f"{where}: entry {i} must have exactly the keys {', '.join(RESULT_KEYS)}; got {got}.")
        for key, kinds in _RESULT_TYPES.items():
            value = e[key]
            if isinstance(value, bool) or not isinstance(value, kinds):
                allowed = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise ConfigError(f"{where}: entry {i} ({e['recipe']!r}) has {key} = {value!r}; it must be {allowed}.")
        if e["recipe"] in seen:
            raise ConfigError(f"{where}: recipe {e['recipe']!r} has two entries; keep one (its latest run).")
        seen.add(e["recipe"])
    return entries


def measured_results() -> list[dict[str, Any]]:
    """vislab's measured figures (the package's copy of docs/results.json), one entry per recipe run."""
    return check_result_entries(_package_json(RESULTS_FILE), f"vislab/recipes/{RESULTS_FILE}")


def measured_result(recipe: str) -> dict[str, Any] | None:
    return next((e for e in measured_results() if e["recipe"] == recipe), None)


def describe_result(entry: Mapping[str, Any], course: CourseReference | None = None) -> str:
    """One line: the measured figure with epochs, time, data, machine and date (and the course's at the same epoch if unfinished)."""
    done, planned = entry["epochs_done"], entry["epochs_planned"]
    where = f"{entry['data']}, {entry['machine']}, {entry['date']}"
    tta = entry.get("tta_test_acc")
    note = f": {entry['time_note']}" if entry.get("time_note") else ""
    if done >= planned:
        return (
            f"{entry['final_test_acc']:.2f}% final"
            + (f" ({tta:.2f}% with test-time augmentation)" if tta is not None else "")
            + f", best {entry['best_test_acc']:.2f}% ({done}/{planned} epochs, "
            f"{entry['wall_seconds']:,.0f} s{note}) on {where}"
        )
    same = course.at_epoch(done) if course else None
    beside = f"; the {course_label(course)} had {same:.2f}% at epoch {done}" if course and same is not None else ""
    return (
        f"{entry['final_test_acc']:.2f}% at epoch {done} of {planned} (run not finished{beside}; "
        f"{entry['wall_seconds']:,.0f} s so far{note}) on {where}"
    )


# --- what a run ran and on what -------------------------------------------------------------------------------


def run_data(config: Config, summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """The data a run used: name (imagefolder with its folder's name), train and test image counts.

    The counts come from summary.json (written when a run ends or stops); before that, from the
    config's data.train_size / test_size, or "all" when those are unset.
    """
    d = config.data
    name = f"{d.name} ({Path(d.root).name})" if d.name == "imagefolder" and d.root else d.name
    ds = (summary or {}).get("dataset") or {}
    train = ds.get("train_images", d.train_size if d.train_size is not None else "all")
    test = ds.get("test_images", d.test_size if d.test_size is not None else "all")
    return {"name": name, "train_images": train, "test_images": test}


def describe_data(data: Mapping[str, Any]) -> str:
    def n(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else str(v)

    return f"{data['name']}, {n(data['train_images'])} train / {n(data['test_images'])} test images"


def _flat(cfg: Config) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, sec in cfg.model_dump(mode="json").items() for k, v in sec.items()}


def recipe_differences(config: Config, recipe: Config, resolved: frozenset[str] = frozenset()) -> list[str]:
    """The settings in which a run's `config` differs from a recipe's (data and where-it-ran settings aside).

    A recipe's `auto` learning rate matches the number a run resolved with the range test (`resolved`:
    `range_test_fields` of its config.yaml), not a number given by hand (`--set optim.lr=0.05`).
    """
    mine, theirs = _flat(config), _flat(recipe)
    out = []
    for key, want in theirs.items():
        if key.startswith("data.") or key in _WHERE_NOT_WHAT:
            continue
        got = mine.get(key)
        if want == "auto" and isinstance(got, (int, float)) and key in resolved:
            continue
        if got != want:
            how = ""
            if want == "auto" and isinstance(got, (int, float)):
                how = " (a number given, not the LR range test's)"
            elif key in resolved:  # the recipe fixes the LR that this run read from its range test
                how = " (the LR range test's reading)"
            out.append(f"{key} = {got!r} (recipe: {want!r}){how}")
    return out


def run_recipe(
    config: Config, config_text: str, summary: Mapping[str, Any] | None, recipes: Mapping[str, Config]
) -> tuple[str | None, str]:
    """(recipe, how it was found) for a run folder, among `recipes` (name -> today's config); (None, why not) when it cannot be told.

    summary.json's "recipe" and config.yaml's header name the recipe a run started from, but a YAML
    file's run records its file name there (and a run resumed before 2026-11-25 its folder's name): so a
    config equal to exactly one shipped recipe decides first, then a recorded name that is a recipe.
    """
    resolved = range_test_fields(config_text)
    exact = [name for name, cfg in recipes.items() if not recipe_differences(config, cfg, resolved)]
    if len(exact) == 1:
        return exact[0], "its config matches the recipe"
    named = []
    if summary and isinstance(summary.get("recipe"), str):
        named.append((summary["recipe"], "summary.json"))
    if (in_header := header_recipe(config_text)) is not None:
        named.append((in_header, "config.yaml's header"))
    for name, where in named:
        if name in recipes:
            return name, f"named in {where}"
    said = (
        "; ".join(f"{where} names {name!r}" for name, where in named)
        or "neither summary.json nor config.yaml names a recipe"
    )
    return None, f"{said}, which is not a shipped recipe, and its config matches none of them"


# --- plots ------------------------------------------------------------------------------------------------------


def course_label(ref: CourseReference) -> str:
    return "course (patience-10 attempt)" if ref.curve_note else "course"


def plot_course_curve(ref: CourseReference, ax: Axes) -> Figure:
    """Draw the course's per-epoch test accuracy onto `ax` (black, dashed); returns the axes' figure."""
    if ref.curve:
        ax.plot(
            range(1, len(ref.curve) + 1),
            ref.curve,
            ls="--",
            marker=".",
            ms=3,
            color="#000000",
            label=f"{course_label(ref)}, {ref.recipe} (GPU, canonical CIFAR-10)",
        )
    return ax.figure


def plot_vs_course(
    history: Sequence[Mapping[str, Any]], ref: CourseReference | None, ax: Axes | None = None, label: str = "vislab"
) -> Figure:
    """vislab's per-epoch test accuracy beside the course's (when a curve was published)."""
    from matplotlib.figure import Figure

    from .plots import PALETTE, epoch_axis, legend_below

    if ax is None:
        fig = Figure(figsize=(5.0, 3.2), dpi=110, layout="constrained")  # pyplot-free: safe headless
        ax = fig.add_subplot()
    pts = [(r["epoch"], r["test_acc"]) for r in history if isinstance(r.get("test_acc"), (int, float))]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=PALETTE[0], label=f"{label} (test)")
    if ref is not None:
        plot_course_curve(ref, ax)
        if not ref.curve:
            ax.axhline(ref.final, ls=":", color="#000000", label=f"course final {ref.final:.2f}% (no per-epoch log)")
    epoch_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    if ax.lines:
        legend_below(ax)
    return ax.figure
