"""Record results runs: docs/results.json (+ the package's copy), docs/results/<recipe>/, docs/results.md and README's recipe table.

    python tools/results.py /work/results/runs/* --commit da73bf0 \\
        --machine "2-core AMD EPYC (AVX512-BF16), torch 2.13.0+cpu" --data "CIFAR-10 (JPEG copy)"
    python tools/results.py            # re-render the tables and plots from docs/results.json and docs/results/
    python tools/results.py --check    # exit 1 when a generated table or the package's copy is out of date

Each RUN_DIR (a `vislab train` folder, finished or not) replaces its recipe's entry; entries of
recipes not given are kept. Its config.yaml, metrics.jsonl, summary.json and lr_find.json are
copied to docs/results/<recipe>/, and everything shown is rendered from those copies, so the
tables can be rebuilt without the run folders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
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
TABLE = "results table"  # the generated block of docs/results.md
README_TABLE = "recipes table"  # the generated block of README.md

sys.path.insert(0, str(ROOT / "src"))  # the checkout's vislab, also when another one is installed

from vislab.config import DEFAULT_RECIPE, list_recipes, recipe_info  # noqa: E402
from vislab.errors import VislabError  # noqa: E402
from vislab.results import COURSE_SETUP, RESULT_KEYS, check_result_entries, course_reference, describe_result  # noqa: E402

RESULTS_MD_SKELETON = f"""# Results

<!-- BEGIN generated: {TABLE} (tools/results.py; edit outside these markers) -->
<!-- END generated: {TABLE} -->
"""


class ToolError(VislabError):
    """A wrong argument or input file: one paragraph, exit 2."""


# --- reading a run folder ---------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _history(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


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
    run_dir: Path, *, commit: str, machine: str | None, data: str | None, date: str | None, recipe: str | None = None
) -> dict[str, Any]:
    from vislab.config import load_config
    from vislab.report import read_run
    from vislab.results import describe_data, run_data, run_recipe

    folder = read_run(run_dir)
    if recipe is None:
        recipes = {name: load_config(name)[1] for name in list_recipes()}
        recipe, how = run_recipe(folder.config, folder.config_text, folder.summary, recipes)
        if recipe is None:
            raise ToolError(
                f"{str(run_dir)!r}: cannot tell which recipe this run ran ({how}); give it with --recipe NAME (one RUN_DIR at a time)."
            )
    elif recipe not in list_recipes():
        raise ToolError(f"--recipe = {recipe!r} is not a shipped recipe; choose one of {', '.join(list_recipes())}.")
    hist = folder.history
    if not hist:
        raise ToolError(
            f"{str(run_dir)!r} has no finished epoch yet (metrics.jsonl is empty or missing); record it after its first epoch."
        )
    accs = [float(r["test_acc"]) for r in hist]
    seconds, _ = wall_time(hist, folder.summary, _read_json(run_dir / "lr_find.json"))
    machine = machine or machine_of(folder.summary)
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
        "final_test_acc": round(accs[-1], 2),
        "best_test_acc": round(max(accs), 2),
        "tta_test_acc": _tta_acc(folder.summary),
        "wall_seconds": round(seconds, 1),
        "machine": machine,
        "data": data or describe_data(run_data(folder.config, folder.summary)),
        "date": date,
        "commit": commit,
        "course_test_acc": ref.final if ref else None,
    }
    return {k: entry[k] for k in RESULT_KEYS}


def _tta_acc(summary: dict[str, Any] | None) -> float | None:
    """The final weights' test accuracy with test-time augmentation, when the run had trainer.tta."""
    tta = (summary or {}).get("tta") or {}
    acc = tta.get("tta_test_acc")
    return round(float(acc), 2) if isinstance(acc, (int, float)) else None


def copy_run_files(run_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).is_file() and not (name == "summary.json" and _stale_summary(run_dir)):
            shutil.copyfile(run_dir / name, dest / name)
        else:
            (dest / name).unlink(missing_ok=True)  # e.g. an earlier copy's summary.json, older than this run


def _stale_summary(run_dir: Path) -> bool:
    """A summary.json written when the run stopped earlier (an interrupt's), older than its metrics.jsonl."""
    summary = _read_json(run_dir / "summary.json") or {}
    rows = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").is_file() else []
    return summary.get("epochs_completed") != len(rows)


# --- rendering --------------------------------------------------------------------------------------------------


def _pct(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "—"


def _duration(s: float) -> str:
    return f"{s:,.0f} s" if s < 3600 else f"{s:,.0f} s ({s / 3600:.1f} h)"


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
        hist = _history(folder / "metrics.jsonl")
        _, kind = (
            wall_time(hist, _read_json(folder / "summary.json"), _read_json(folder / "lr_find.json"))
            if hist
            else (0.0, "")
        )
        done, planned = e["epochs_done"], e["epochs_planned"]
        status = "finished" if done >= planned else f"in progress: {done} of {planned} epochs"
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
            f"{_duration(e['wall_seconds'])}{' (' + kind + ')' if kind else ''} | {_pct(e['course_test_acc'])} | {versus} | "
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
        "epochs and TTA evaluation, except the `fast` run recorded 2026-11-24, whose time stops before its TTA; not the report) "
        "when one process ran it all, otherwise the epochs' own seconds plus the LR range test.",
        "",
        *rows,
        "",
    ]
    if notes:
        lines += [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


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


def draw_curve(name: str, docs: Path) -> None:
    from vislab.report._render import figure_png
    from vislab.results import plot_vs_course

    folder = docs / "results" / name
    hist = _history(folder / "metrics.jsonl")
    fig = plot_vs_course(hist, course_reference(name), label=f"vislab {name}")
    fig.axes[0].set_title(f"{name}: test accuracy per epoch", fontsize="small")
    (folder / CURVE).write_bytes(figure_png(fig))


def outputs(entries: list[dict[str, Any]], docs: Path, readme: Path) -> dict[Path, str]:
    """Every generated text file and its content."""
    md = docs / "results.md"
    md_text = md.read_text() if md.is_file() else RESULTS_MD_SKELETON
    return {
        docs / "results.json": json.dumps(entries, indent=1) + "\n",
        md: replace_block(md_text, TABLE, render_table(entries, docs), md),
        readme: replace_block(readme.read_text(), README_TABLE, render_readme_table(entries), readme),
    }


def load_entries(docs: Path) -> list[dict[str, Any]]:
    path = docs / "results.json"
    try:
        return check_result_entries(_read_json(path) or [], str(path))
    except ValueError as e:
        raise ToolError(f"{path} is not valid JSON ({e}); fix it or regenerate it from the run folders.") from None


def stale(docs: Path, readme: Path, package: Path) -> list[str]:
    """What --check reports: generated files that differ from a fresh rendering, and a package copy unlike docs/results.json."""
    entries = load_entries(docs)
    out = [str(p) for p, text in outputs(entries, docs, readme).items() if not p.is_file() or p.read_text() != text]
    if not package.is_file() or json.loads(package.read_text()) != entries:
        out.append(f"{package} (must equal {docs / 'results.json'})")
    out += [
        f"{docs / 'results' / e['recipe'] / name} (missing)"
        for e in entries
        for name in ("metrics.jsonl", "config.yaml", CURVE)
        if not (docs / "results" / e["recipe"] / name).is_file()
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
    p.add_argument("--recipe", help="the recipe of a single RUN_DIR, when its files do not tell")
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
                print("regenerate with: python tools/results.py", file=sys.stderr)
            return 1 if bad else 0
        if args.run_dirs and not args.commit:
            raise ToolError(
                "--commit SHA is required with RUN_DIRs: the commit each run was started from (e.g. --commit da73bf0)."
            )
        if args.recipe and len(args.run_dirs) != 1:
            raise ToolError(f"--recipe names the recipe of one RUN_DIR; {len(args.run_dirs)} were given.")
        if args.date and not _is_date(args.date):
            raise ToolError(f"--date = {args.date!r}: give the date as YYYY-MM-DD.")
        entries = {e["recipe"]: e for e in load_entries(args.docs)}
        for run_dir in map(Path, args.run_dirs):
            e = entry_from_run(
                run_dir, commit=args.commit, machine=args.machine, data=args.data, date=args.date, recipe=args.recipe
            )
            copy_run_files(run_dir, args.docs / "results" / e["recipe"])
            entries[e["recipe"]] = e
            print(f"{e['recipe']}: {describe_result(e, course_reference(e['recipe']))}")
        ordered = [entries[n] for n in list_recipes() if n in entries]
        for e in ordered:
            draw_curve(e["recipe"], args.docs)
        for path, text in outputs(ordered, args.docs, args.readme).items():
            path.write_text(text)
        args.package.write_text(json.dumps(ordered, indent=1) + "\n")
    except VislabError as e:
        print(f"tools/results.py: error: {e}", file=sys.stderr)
        return 2
    return 0


def _is_date(s: str) -> bool:
    try:
        datetime.strptime(s, "%Y-%m-%d")
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
