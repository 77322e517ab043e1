"""Record results runs: docs/results.json (+ the package's copy), docs/results/<recipe>/, docs/results.md and README's recipe table.

    python tools/results.py /work/results/runs/* --commit da73bf0 \\
        --machine "2-core AMD EPYC (AVX512-BF16), torch 2.13.0+cpu" --data "CIFAR-10 (JPEG copy)"
    python tools/results.py            # re-render the tables and plots from docs/results.json and docs/results/
    python tools/results.py /work/results/runs/resnet9-onecycle-lr0027 --as resnet9-onecycle-lr0027 --commit 4c95fbf ...
    python tools/results.py            # re-render the tables and plots from docs/results.json and docs/results/
    python tools/results.py --check    # exit 1 when a generated file, the package's copy or a figure is out of date

Each RUN_DIR (a `vislab train` folder, finished or not) replaces its recipe's entry; entries of
recipes not given are kept. Its config.yaml, metrics.jsonl, summary.json and lr_find.json are
copied to docs/results/<recipe>/; the tables' time labels and the curves are drawn from those
copies, and --check recomputes each entry's figures from them. A run whose config differs from
its recipe's (say `--set sched.max_lr=0.0027`) is refused unless it is recorded as a trial of the
recipe with `--as NAME` (docs/results/NAME/, its own table, no entry in results.json) or named
as the recipe's run on purpose with `--recipe NAME`. Everything is rendered in a scratch copy
first: a run that cannot be read leaves every file as it was.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "summary.json",
    "lr_find.json",
)  # small text files, enough to re-run and compare
CURVE = "curve.png"
TRIAL_FILE = "trial.json"  # what a trial's row shows (docs/results/<trial>/): a run that differs from its recipe
TABLE = "results table"  # the generated block of docs/results.md
TRIALS_TABLE = "trials table"  # the generated block of docs/results.md listing the trials
README_TABLE = "recipes table"  # the generated block of README.md

sys.path.insert(0, str(ROOT / "src"))  # the checkout's vislab, also when another one is installed

from vislab.config import DEFAULT_RECIPE, list_recipes, recipe_info  # noqa: E402
from vislab.errors import VislabError  # noqa: E402
from vislab.results import (  # noqa: E402
    COURSE_SETUP,
    RESULT_KEYS,
    check_result_entries,
    course_reference,
    describe_result,
)

RESULTS_MD_SKELETON = f"""# Results

<!-- BEGIN generated: {TABLE} (tools/results.py; edit outside these markers) -->
<!-- END generated: {TABLE} -->

## Trials

<!-- BEGIN generated: {TRIALS_TABLE} (tools/results.py; edit outside these markers) -->
<!-- END generated: {TRIALS_TABLE} -->
"""
_TRIAL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


class ToolError(VislabError):
    """A wrong argument or input file: one paragraph, exit 2."""


# --- reading a run folder ---------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    """The JSON in `path`, None when it is missing; a damaged file is an error naming it (never read as missing)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ToolError(
            f"{path} cannot be read as JSON ({e}); it is damaged or not vislab's. Nothing was written."
        ) from None


def _history(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; each must be an object with its epoch number and a numeric test_acc."""
    if not path.is_file():
        return []
    rows = []
    for i, ln in enumerate(path.read_text().splitlines(), 1):
        if not ln.strip():
            continue
        try:
            row = json.loads(ln)
        except ValueError as e:
            raise ToolError(f"{path}, line {i}: not JSON ({e}); the file is damaged. Nothing was written.") from None
        acc = row.get("test_acc") if isinstance(row, dict) else None
        if not isinstance(acc, (int, float)) or isinstance(acc, bool) or not isinstance(row.get("epoch"), int):
            raise ToolError(
                f"{path}, line {i}: an epoch's row needs an integer epoch and a numeric test_acc; got {ln.strip()[:120]!r}. "
                "Nothing was written."
            )
        rows.append(row)
    return rows


def wall_time(
    history: list[dict[str, Any]], summary: dict[str, Any] | None, lr_find: dict[str, Any] | None
) -> tuple[float, str]:
    """(seconds, what they cover). summary.json's wall time covers one process only: after a resume it
    misses the epochs before it, so the epochs' own seconds (plus the range test) stand in then."""
    epochs = sum(float(r.get("seconds", 0.0)) for r in history)
    sweep = float((lr_find or {}).get("seconds") or 0.0)
    finished = bool(summary) and summary.get("status") == "finished" and summary.get("epochs_completed") == len(history)
    if finished and float(summary.get("wall_seconds", 0.0)) >= epochs:
        return float(summary["wall_seconds"]), "whole command"
    parts = "epochs + range test" if lr_find else "epochs"  # a fixed-LR recipe runs no range test
    if finished:
        return epochs + sweep, f"{parts} (resumed run)"
    return epochs + sweep, f"{parts} so far"


def machine_of(summary: dict[str, Any] | None) -> str | None:
    if not summary or not summary.get("device_name"):
        return None
    torch_version = (summary.get("versions") or {}).get("torch")
    return f"{summary['device_name']}, torch {torch_version}" if torch_version else summary["device_name"]


def entry_from_run(
    run_dir: Path,
    *,
    commit: str,
    machine: str | None,
    data: str | None,
    date: str | None,
    recipe: str | None = None,
    trial: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """(the run's entry, the settings in which it differs from its recipe). A run that differs is refused as the
    recipe's own run unless `recipe` names it on purpose, or `trial` records it as a trial of the recipe."""
    from vislab.config import load_config
    from vislab.files import range_test_fields
    from vislab.report import read_run
    from vislab.results import describe_data, recipe_differences, run_data, run_recipe

    # Strict reads first: a damaged file is an error naming it, not a warning and a file read as missing.
    hist = _history(run_dir / "metrics.jsonl")
    summary = _read_json(run_dir / "summary.json")
    lr_find = _read_json(run_dir / "lr_find.json")
    folder = read_run(run_dir)
    recipes = {name: load_config(name)[1] for name in list_recipes()}
    named = recipe is not None
    if recipe is None:
        recipe, how = run_recipe(folder.config, folder.config_text, summary, recipes)
        if recipe is None:
            raise ToolError(
                f"{str(run_dir)!r}: cannot tell which recipe this run ran ({how}); give it with --recipe NAME (one RUN_DIR at a time)."
            )
    elif recipe not in list_recipes():
        raise ToolError(f"--recipe = {recipe!r} is not a shipped recipe; choose one of {', '.join(list_recipes())}.")
    diffs = recipe_differences(folder.config, recipes[recipe], range_test_fields(folder.config_text))
    if diffs and not named and trial is None:
        raise ToolError(
            f"{str(run_dir)!r} ran recipe {recipe!r} with other settings: {'; '.join(diffs)}. Record it as a trial of the "
            f"recipe with --as NAME (docs/results/NAME/; the recipe's entry is kept), or, if it is the recipe's run all the "
            f"same, name it with --recipe {recipe}."
        )
    if not hist:
        raise ToolError(
            f"{str(run_dir)!r} has no finished epoch yet (metrics.jsonl is empty or missing); record it after its first epoch."
        )
    current = None if _stale(summary, hist) else summary  # an earlier stop's summary.json is not copied either
    machine = machine or machine_of(summary)
    if machine is None:
        raise ToolError(
            f"{str(run_dir)!r} has no summary.json yet (the run has not ended), so its machine is unknown; give --machine TEXT."
        )
    if date is None:
        # The run's last finished epoch: when metrics.jsonl was last written.
        date = datetime.fromtimestamp((run_dir / "metrics.jsonl").stat().st_mtime, tz=timezone.utc).strftime("%Y-%m-%d")
    ref = course_reference(recipe)
    entry = {
        "recipe": recipe,
        "epochs_done": len(hist),
        "epochs_planned": folder.config.trainer.epochs,
        **_figures(hist, current, lr_find),
        "time_note": None,  # the run files cannot say; record() sets it from --time-note or the earlier entry
        "machine": machine,
        "data": data or describe_data(run_data(folder.config, summary)),
        "date": date,
        "commit": commit,
        "course_test_acc": ref.final if ref else None,
    }
    return {k: entry[k] for k in RESULT_KEYS}, diffs


def figures_from_copies(folder: Path) -> dict[str, Any]:
    """The figures an entry takes from its run files, recomputed from the copies in docs/results/<name>/."""
    hist = _history(folder / "metrics.jsonl")
    if not hist:
        return {}
    return _figures(hist, _read_json(folder / "summary.json"), _read_json(folder / "lr_find.json"))


def _figures(
    hist: list[dict[str, Any]], summary: dict[str, Any] | None, lr_find: dict[str, Any] | None
) -> dict[str, Any]:
    """An entry's measured figures from a run's epochs, its (current) summary.json and its range test."""
    accs = [float(r["test_acc"]) for r in hist]
    seconds, _ = wall_time(hist, summary, lr_find)
    return {
        "epochs_done": len(hist),
        "final_test_acc": round(accs[-1], 2),
        "best_test_acc": round(max(accs), 2),
        "tta_test_acc": _tta_acc(summary),
        "wall_seconds": round(seconds, 1),
    }


def _tta_acc(summary: dict[str, Any] | None) -> float | None:
    """The final weights' test accuracy with test-time augmentation, when the run had trainer.tta."""
    tta = (summary or {}).get("tta") or {}
    acc = tta.get("tta_test_acc")
    return round(float(acc), 2) if isinstance(acc, (int, float)) else None


def copy_run_files(run_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    stale = _stale(_read_json(run_dir / "summary.json"), _history(run_dir / "metrics.jsonl"))
    for name in RUN_FILES:
        if (run_dir / name).is_file() and not (name == "summary.json" and stale):
            shutil.copyfile(run_dir / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)  # e.g. an earlier copy's summary.json, older than this run


def _stale(summary: dict[str, Any] | None, hist: list[dict[str, Any]]) -> bool:
    """A summary.json written when the run stopped earlier (an interrupt's), older than its metrics.jsonl."""
    return (summary or {}).get("epochs_completed") != len(hist)


# --- rendering --------------------------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "—"


def _duration(s: float) -> str:
    return f"{s:,.0f} s" if s < 3600 else f"{s:,.0f} s ({s / 3600:.1f} h)"


def _time_cell(e: dict[str, Any], kind: str = "") -> str:
    """A row's time: the duration, what it covers (when known) and the entry's time note."""
    covers = f" ({kind})" if kind else ""
    note = f"; {e['time_note']}" if e["time_note"] else ""
    return f"{_duration(e['wall_seconds'])}{covers}{note}"


def _status(done: int, planned: int) -> str:
    return "finished" if done >= planned else f"in progress: {done} of {planned} epochs"


def render_table(entries: list[dict[str, Any]], docs: Path) -> str:
    by_recipe = {e["recipe"]: e for e in entries}
    rows = [
        "| recipe | status | vislab final test acc (%) | vislab best test acc (%) | epochs | time | course's final (%) | "
        "last epoch: vislab vs course (%) | data | machine | date | commit | curve |",
        "|---|---|---:|---:|---:|---|---:|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for name in list_recipes():
        ref, e = course_reference(name), by_recipe.get(name)
        if e is None:
            rows.append(
                f"| `{name}` | TODO: not run yet; record a run with tools/results.py | — | — | — | — | {_pct(ref.final if ref else None)} "
                "| — | — | — | — | — | — |"
            )
            continue
        folder = docs / "results" / name
        hist, summary = _history(folder / "metrics.jsonl"), _read_json(folder / "summary.json")
        _, kind = wall_time(hist, summary, _read_json(folder / "lr_find.json")) if hist else (0.0, "")
        tta = (summary or {}).get("tta")
        if kind == "whole command" and isinstance(tta, dict) and "seconds" not in tta:
            notes.append(
                f"`{name}`: its time stops before the test-time-augmentation evaluation (its summary.json predates "
                "`tta.seconds`, which later runs count in their time)."
            )
        done, planned = e["epochs_done"], e["epochs_planned"]
        status = _status(done, planned)
        same = ref.at_epoch(done) if ref else None
        versus = (
            f"{e['final_test_acc']:.2f} vs {same:.2f} at epoch {done}"
            if same is not None
            else ("no course curve" if ref else "no course run")
        )
        curve = (
            f"[plot](results/{name}/{CURVE}), [files](results/{name}/)"
            if (folder / CURVE).is_file()
            else f"[files](results/{name}/)"
        )
        rows.append(
            f"| `{name}` | {status} | {_pct(e['final_test_acc'])} | {_pct(e['best_test_acc'])} | {done}/{planned} | "
            f"{_time_cell(e, kind)} | "
            f"{_pct(e['course_test_acc'])} | {versus} | "
            f"{e['data']} | {e['machine']} | {e['date']} | `{e['commit']}` | {curve} |"
        )
        if ref and ref.curve_note:
            notes.append(
                f"`{name}`: the course's curve is {ref.curve_note}; it ended at {ref.curve_final:.2f}%, while the course's "
                f"figure for the recipe's settings is {ref.final:.2f}% (no per-epoch log published)."
            )
        if ref and not ref.curve:
            notes.append(
                f"`{name}`: the course published no per-epoch log; only its final figure, {ref.final:.2f}%, is compared."
            )
    lines = [
        f"Generated by `tools/results.py` from docs/results.json and the run files in docs/results/<recipe>/. The course's figures "
        f"are its runs on {COURSE_SETUP}; vislab's are on the data and machine named in each row, so a gap mixes the recipe with "
        'those differences. "final" is the last epoch\'s test accuracy; "best" is the highest over the epochs, picked on the '
        'test split and therefore optimistic. "time" says what it covers: the whole `vislab train` command (data, range test, '
        "epochs and TTA evaluation; not the report) "
        "when one process ran it all, otherwise the epochs' own seconds plus the LR range test.",
        "",
        *rows,
        "",
    ]
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def trial_names(docs: Path) -> list[str]:
    return sorted(f.parent.name for f in (docs / "results").glob(f"*/{TRIAL_FILE}"))


def render_trials(entries: list[dict[str, Any]], docs: Path) -> str:
    """The trials: runs of a recipe with other settings, each beside the recipe's recorded run and the course."""
    by_recipe = {e["recipe"]: e for e in entries}
    names = trial_names(docs)
    if not names:
        return "No trials recorded.\n"
    rows = [
        "| trial | recipe | differs from the recipe in | status | final test acc (%) | best test acc (%) | epochs | "
        "recipe's recorded run: final (%) | course's final (%) | at the trial's last epoch: trial / recipe's run / "
        "course (%) | time | data | machine | date | commit | curve |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|---|---|---|---|",
    ]
    for name in names:
        t = read_trial(docs, name)
        e = t["entry"]
        base = by_recipe.get(e["recipe"])
        done, planned = e["epochs_done"], e["epochs_planned"]
        status = _status(done, planned)
        base_text = f"{_pct(base['final_test_acc'])} ({base['epochs_done']}/{base['epochs_planned']})" if base else "—"
        # Same-epoch figures: what an unfinished trial can be judged by (the recipe's run from its committed metrics).
        base_acc = {r["epoch"]: r["test_acc"] for r in _history(docs / "results" / e["recipe"] / "metrics.jsonl")}
        ref = course_reference(e["recipe"])
        same = f"{_pct(e['final_test_acc'])} / {_pct(base_acc.get(done))} / {_pct(ref.at_epoch(done) if ref else None)}"
        rows.append(
            f"| `{name}` | `{e['recipe']}` | {'; '.join(t['differences']) or 'nothing (named as a trial)'} | {status} | "
            f"{_pct(e['final_test_acc'])} | {_pct(e['best_test_acc'])} | {done}/{planned} | {base_text} | "
            f"{_pct(e['course_test_acc'])} | {same} at epoch {done} | {_time_cell(e)} | {e['data']} | {e['machine']} | {e['date']} | "
            f"`{e['commit']}` | [plot](results/{name}/{CURVE}), [files](results/{name}/) |"
        )
    return (
        "Generated by `tools/results.py --as NAME` from docs/results/<trial>/: runs of a recipe with other settings, "
        "recorded beside the recipe's own run (which they do not replace). Each plot overlays the trial, the recipe's "
        "recorded run and the course.\n\n" + "\n".join(rows) + "\n"
    )


def render_readme_table(entries: list[dict[str, Any]]) -> str:
    by_recipe = {e["recipe"]: e for e in entries}
    rows = [
        "| recipe | what it is | course's figure (canonical CIFAR-10, GPU) | vislab measured ([docs/results.md](docs/results.md)) |",
        "|---|---|---|---|",
    ]
    for name in list_recipes():
        ref, e = course_reference(name), by_recipe.get(name)
        title = recipe_info(name)["title"].rstrip(".")
        course = f"{ref.final:.2f}%" if ref else "none (vislab's own recipe)"
        measured = describe_result(e, ref) if e else "not recorded yet"
        rows.append(f"| `{name}`{' (default)' if name == DEFAULT_RECIPE else ''} | {title} | {course} | {measured} |")
    done = [
        e["recipe"] for e in entries if e["course_test_acc"] is not None and e["final_test_acc"] >= e["course_test_acc"]
    ]
    rows += [
        "",
        "Recipes whose vislab run has reached the course's figure: "
        + (", ".join(f"`{n}`" for n in done) or "none yet")
        + ".",
    ]
    return "\n".join(rows) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN generated: {name} (tools/results.py; edit outside these markers) -->",
        f"<!-- END generated: {name} -->",
    )


def replace_block(text: str, name: str, body: str, where: Path) -> str:
    begin, end = _markers(name)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ToolError(
            f"{where}: the markers of the generated {name!r} are missing; put the two lines\n{begin}\n{end}\nwhere it belongs."
        )
    return text[: i + len(begin)] + "\n" + body + text[j:]


def draw_curve(name: str, docs: Path, recipe: str | None = None) -> None:
    """docs/results/<name>/curve.png: the run beside the course; a trial (`recipe` given) also beside the recipe's run."""
    from vislab.plots import PALETTE, legend_below
    from vislab.report._render import figure_png
    from vislab.results import plot_vs_course

    folder = docs / "results" / name
    hist = _history(folder / "metrics.jsonl")
    fig = plot_vs_course(hist, course_reference(recipe or name), label=f"vislab {name}")
    ax = fig.axes[0]
    base = _history(docs / "results" / recipe / "metrics.jsonl") if recipe else []
    if base:
        ax.plot(
            [r["epoch"] for r in base],
            [r["test_acc"] for r in base],
            marker="o",
            ms=3,
            color=PALETTE[1],
            label=f"vislab {recipe} (the recipe's recorded run)",
        )
        legend_below(ax)
    ax.set_title(f"{name}: test accuracy per epoch", fontsize="small")
    (folder / CURVE).write_bytes(figure_png(fig))


def outputs(entries: list[dict[str, Any]], docs: Path, readme: Path) -> dict[Path, str]:
    """Every generated text file and its content."""
    md = docs / "results.md"
    md_text = md.read_text() if md.is_file() else RESULTS_MD_SKELETON
    md_text = replace_block(md_text, TABLE, render_table(entries, docs), md)
    return {
        docs / "results.json": json.dumps(entries, indent=1) + "\n",
        md: replace_block(md_text, TRIALS_TABLE, render_trials(entries, docs), md),
        readme: replace_block(readme.read_text(), README_TABLE, render_readme_table(entries), readme),
    }


def load_entries(docs: Path) -> list[dict[str, Any]]:
    path = docs / "results.json"
    return check_result_entries(_read_json(path) or [], str(path))


def read_trial(docs: Path, name: str) -> dict[str, Any]:
    """docs/results/<name>/trial.json: {"entry": an entry as in results.json, "differences": [settings]}."""
    path = docs / "results" / name / TRIAL_FILE
    t = _read_json(path)
    if not isinstance(t, dict) or not isinstance(t.get("differences"), list):
        raise ToolError(f"{path} must hold an object with an entry and a list of differences; record the trial again.")
    check_result_entries([t.get("entry")], str(path))
    return t


def stale(docs: Path, readme: Path, package: Path) -> list[str]:
    """What --check reports: generated files that differ from a fresh rendering, and a package copy unlike docs/results.json."""
    entries = load_entries(docs)
    out = [str(p) for p, text in outputs(entries, docs, readme).items() if not p.is_file() or p.read_text() != text]
    if _read_json(package) != entries:
        out.append(f"{package} (must equal {docs / 'results.json'})")
    recorded = [(e["recipe"], e) for e in entries]
    recorded += [(n, read_trial(docs, n)["entry"]) for n in trial_names(docs)]
    for name, e in recorded:
        folder = docs / "results" / name
        out += [
            f"{folder / f} (missing)" for f in ("metrics.jsonl", "config.yaml", CURVE) if not (folder / f).is_file()
        ]
        # The figures must be the ones the committed run files give (a hand edit, or files copied without recording).
        again = figures_from_copies(folder)
        out += [
            f"{name}: {key} = {e[key]!r} in its record, but its files in {folder} give {v!r}"
            for key, v in again.items()
            if e.get(key) != v
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/results.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "run_dirs", nargs="*", metavar="RUN_DIR", help="results run folders to record (finished or in progress)"
    )
    p.add_argument("--commit", help="commit the runs were started from (required with RUN_DIRs)")
    p.add_argument("--machine", help="machine text (default: summary.json's CPU/GPU name and torch version)")
    p.add_argument("--data", help="data text (default: the run's data name and image counts)")
    p.add_argument("--date", help="YYYY-MM-DD (default: when the run's last epoch was written)")
    p.add_argument(
        "--time-note",
        metavar="TEXT",
        help="what the time covers beyond the run files, e.g. 'background run on a shared CPU' (kept when re-recording; '' clears it)",
    )
    p.add_argument(
        "--recipe", help="the recipe of a single RUN_DIR, when its files do not tell or it differs on purpose"
    )
    p.add_argument(
        "--as",
        dest="trial",
        metavar="NAME",
        help="record a single RUN_DIR as a trial of its recipe, in docs/results/NAME/ (the recipe's entry is kept)",
    )
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a generated file is out of date")
    p.add_argument(
        "--docs", type=Path, default=ROOT / "docs", help=argparse.SUPPRESS
    )  # tests point these at a temporary tree
    p.add_argument("--readme", type=Path, default=ROOT / "README.md", help=argparse.SUPPRESS)
    p.add_argument(
        "--package", type=Path, default=ROOT / "src" / "vislab" / "recipes" / "results.json", help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    try:
        if args.check:
            if args.run_dirs:
                raise ToolError("--check compares what is committed; give no RUN_DIR with it.")
            bad = stale(args.docs, args.readme, args.package)
            for b in bad:
                print(f"out of date: {b}", file=sys.stderr)
            if bad:
                print("regenerate with: python tools/results.py (figures: record the run again)", file=sys.stderr)
            return 1 if bad else 0
        check_args(args)
        record(args)
    except VislabError as e:
        print(f"tools/results.py: error: {e}", file=sys.stderr)
        return 2
    return 0


def check_args(args: argparse.Namespace) -> None:
    if args.run_dirs and not args.commit:
        raise ToolError(
            "--commit SHA is required with RUN_DIRs: the commit each run was started from (e.g. --commit da73bf0)."
        )
    for flag, value in (("--recipe", args.recipe), ("--as", args.trial)):
        if value and len(args.run_dirs) != 1:
            raise ToolError(f"{flag} applies to one RUN_DIR; {len(args.run_dirs)} were given.")
    if args.trial is not None and (not _TRIAL_NAME.fullmatch(args.trial) or args.trial in list_recipes()):
        raise ToolError(
            f"--as = {args.trial!r}: a trial's name is a new folder name of lower-case letters, digits, '.', '_' and '-', "
            f"not a shipped recipe's ({', '.join(list_recipes())}), e.g. resnet9-onecycle-lr0027."
        )
    if args.date and not _is_date(args.date):
        raise ToolError(f"--date = {args.date!r}: give the date as YYYY-MM-DD.")


def record(args: argparse.Namespace) -> None:
    """Record the RUN_DIRs and re-render everything in a scratch copy of docs/ and README, then publish it."""
    docs, readme = args.docs, args.readme
    entries = {e["recipe"]: e for e in load_entries(docs)}
    with tempfile.TemporaryDirectory(prefix="vislab-results-") as tmp:
        scratch, scratch_readme = Path(tmp) / "docs", Path(tmp) / "README.md"
        if (docs / "results").is_dir():
            shutil.copytree(docs / "results", scratch / "results")
        (scratch / "results").mkdir(parents=True, exist_ok=True)
        if (docs / "results.md").is_file():
            shutil.copyfile(docs / "results.md", scratch / "results.md")
        shutil.copyfile(readme, scratch_readme)
        said = []
        for run_dir in map(Path, args.run_dirs):
            e, diffs = entry_from_run(
                run_dir,
                commit=args.commit,
                machine=args.machine,
                data=args.data,
                date=args.date,
                recipe=args.recipe,
                trial=args.trial,
            )
            name = args.trial or e["recipe"]
            if args.time_note is not None:
                e["time_note"] = args.time_note or None  # '' clears it
            else:  # kept from the earlier entry: a run recorded again as it goes on
                trial_file = scratch / "results" / name / TRIAL_FILE
                earlier = (
                    read_trial(scratch, name)["entry"] if args.trial and trial_file.is_file() else entries.get(name)
                )
                e["time_note"] = (earlier or {}).get("time_note")
            copy_run_files(run_dir, scratch / "results" / name)
            what = f"{name} (trial of {e['recipe']})" if args.trial else name
            said.append(f"{what}: {describe_result(e, course_reference(e['recipe']))}")
            if diffs:
                said.append(f"  differs from the recipe in: {'; '.join(diffs)}")
            if args.trial:
                (scratch / "results" / name / TRIAL_FILE).write_text(
                    json.dumps({"entry": e, "differences": diffs}, indent=1) + "\n"
                )
            else:
                entries[e["recipe"]] = e
        ordered = [entries[n] for n in list_recipes() if n in entries]
        for e in ordered:
            draw_curve(e["recipe"], scratch)
        for name in trial_names(scratch):
            draw_curve(name, scratch, recipe=read_trial(scratch, name)["entry"]["recipe"])
        texts = outputs(ordered, scratch, scratch_readme)
        # Everything is rendered: publish it (nothing above wrote outside the scratch copy).
        targets = {scratch / "results.json": docs / "results.json", scratch / "results.md": docs / "results.md"}
        targets[scratch_readme] = readme
        for folder in sorted(p for p in (scratch / "results").iterdir() if p.is_dir()):
            dest = docs / "results" / folder.name
            for fname in (*RUN_FILES, CURVE, TRIAL_FILE):
                if (folder / fname).is_file():
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(folder / fname, dest / fname)
                else:
                    (dest / fname).unlink(missing_ok=True)
        for path, text in texts.items():
            targets[path].write_text(text)
        args.package.write_text(json.dumps(ordered, indent=1) + "\n")
    for line in said:
        print(line)


def _is_date(s: str) -> bool:
    try:
        datetime.strptime(s, "%Y-%m-%d")
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
