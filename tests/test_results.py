"""Course references and measured results: package data, `compare --reference`, tools/results.py, and the claims built on them."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import tomllib

import vislab.results as results
from vislab.cli import main
from vislab.config import config_to_yaml, list_recipes, load_config
from vislab.errors import ConfigError
from vislab.files import auto_note, config_header, header_auto_notes, header_recipe, range_test_fields
from vislab.report import compare_runs
from vislab.results import (
    course_reference,
    course_references,
    describe_result,
    measured_results,
    recipe_differences,
    run_recipe,
)

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("results_tool", ROOT / "tools" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_run(
    folder: Path,
    recipe: str,
    accs: list[float],
    *,
    overrides: dict[str, Any] | None = None,
    header: str | None = None,
    summary: dict[str, Any] | None = None,
    seconds: float = 10.0,
    header_notes: str = "",
) -> Path:
    """A run folder as `vislab train` leaves it (config.yaml, metrics.jsonl, optionally summary.json), without training."""
    _, cfg = load_config(recipe, {"data.name": "imagefolder", "data.root": "/data/cifar10-jpeg", **(overrides or {})})
    folder.mkdir(parents=True)
    name = recipe if header is None else header
    head = f"# vislab 0.1.0 resolved config of recipe {name!r}\n{header_notes}"
    (folder / "config.yaml").write_text(head + config_to_yaml(cfg))
    rows = [
        {"epoch": i, "lr": 0.01, "train_loss": 1.0, "train_acc": a, "test_loss": 1.0, "test_acc": a, "seconds": seconds}
        for i, a in enumerate(accs, 1)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def _summary(recipe: str, epochs: int, wall: float, train: int = 50000, test: int = 10000) -> dict[str, Any]:
    return {
        "recipe": recipe,
        "status": "finished",
        "epochs_completed": epochs,
        "wall_seconds": wall,
        "device_name": "Test CPU (2 cores)",
        "versions": {"torch": "9.9.9"},
        "dataset": {"name": "imagefolder", "train_images": train, "test_images": test},
    }


def _flat(text: str) -> str:
    return " ".join(text.split())


# --- package data -----------------------------------------------------------------------------------------------


def test_course_curves_fit_their_recipes():
    refs = course_references()
    assert set(refs) <= set(list_recipes()) and "quick" not in refs
    with_curve = [r for r in refs.values() if r.curve]
    assert {r.recipe for r in with_curve} == {"resnet9-onecycle", "resnet18-bn", "resnet18-ln-plateau"}
    for ref in with_curve:
        # One point per epoch of the recipe, ending at the figure of the run it was logged from.
        assert len(ref.curve) == load_config(ref.recipe)[1].trainer.epochs
        assert (
            ref.curve[-1] == ref.curve_final
            and ref.at_epoch(1) == ref.curve[0]
            and ref.at_epoch(len(ref.curve) + 1) is None
        )
    ln = refs["resnet18-ln-plateau"]
    # The only published LayerNorm curve is another attempt than the recipe's: it must say so.
    assert ln.curve_final < ln.final and "patience-10" in ln.curve_note and "patience 2" in ln.curve_note
    assert all(not r.curve_note for r in refs.values() if r.recipe != "resnet18-ln-plateau")
    assert not refs["resnet18-sgd-plateau"].curve and refs["resnet18-sgd-plateau"].at_epoch(1) is None


def test_package_results_equal_docs_results():
    docs = json.loads((ROOT / "docs" / "results.json").read_text())
    assert measured_results() == docs
    assert all(list(e) == list(results.RESULT_KEYS) for e in docs)


def test_package_data_is_declared_in_pyproject():
    # An editable install finds any file; a wheel carries only what package-data names.
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vislab"]
    shipped = [f"recipes/{p.name}" for p in (ROOT / "src" / "vislab" / "recipes").iterdir() if p.is_file()]
    assert {"recipes/course.json", "recipes/results.json"} <= set(shipped)
    assert [f for f in shipped if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


def test_docs_and_readme_are_generated_from_results_json():
    tool = _tool()
    assert tool.stale(ROOT / "docs", ROOT / "README.md", ROOT / "src" / "vislab" / "recipes" / "results.json") == []


def _header(recipe: str) -> str:
    text = (ROOT / "src" / "vislab" / "recipes" / f"{recipe}.yaml").read_text()
    return _flat(" ".join(ln[1:] for ln in text.splitlines() if ln.startswith("#")))


@pytest.mark.parametrize("recipe", list_recipes())
def test_recipe_headers_label_the_course_figure_and_claim_only_what_was_measured(recipe):
    head, ref = _header(recipe), course_reference(recipe)
    if ref is not None:
        assert f"Course's figure: {ref.final:.2f}%" in head
    measured = results.measured_result(recipe)
    reached = bool(
        measured
        and ref
        and measured["epochs_done"] >= measured["epochs_planned"]
        and measured["final_test_acc"] >= ref.final
    )
    if not reached:
        assert "reproduc" not in head.lower()
    # Measured times live in results.json only (one figure everywhere): no header quotes seconds.
    assert not re.search(r"\b\d+(\.\d+)?\s?s\b", head)


# --- which recipe a run ran ---------------------------------------------------------------------------------------


def test_run_recipe_from_config_summary_or_header(tmp_path):
    recipes = {name: load_config(name)[1] for name in list_recipes()}
    exact = make_run(tmp_path / "a", "resnet9-onecycle", [50.0], header="something-else")
    _, cfg = load_config(exact / "config.yaml")
    assert run_recipe(cfg, (exact / "config.yaml").read_text(), None, recipes) == (
        "resnet9-onecycle",
        "its config matches the recipe",
    )

    short = make_run(tmp_path / "b", "resnet18-bn", [50.0], overrides={"trainer.epochs": 2})
    _, cfg = load_config(short / "config.yaml")
    text = (short / "config.yaml").read_text()
    assert recipe_differences(cfg, recipes["resnet18-bn"]) == ["trainer.epochs = 2 (recipe: 20)"]
    assert run_recipe(cfg, text, None, recipes) == ("resnet18-bn", "named in config.yaml's header")
    assert run_recipe(cfg, text, {"recipe": "resnet18-bn"}, recipes) == ("resnet18-bn", "named in summary.json")

    # A resumed run records its folder's name; with a changed config nothing tells the recipe.
    resumed = make_run(tmp_path / "c", "resnet18-bn", [50.0], overrides={"trainer.epochs": 2}, header="c")
    _, cfg = load_config(resumed / "config.yaml")
    recipe, why = run_recipe(cfg, (resumed / "config.yaml").read_text(), {"recipe": "c"}, recipes)
    assert recipe is None and "'c'" in why


# What `vislab train` writes into config.yaml's header when the range test resolved an `auto` LR.
RANGE_TEST_NOTE = auto_note("optim.lr", 0.05, "min_loss_div10")


def test_config_header_is_read_back_from_the_leading_comment_block_only():
    yaml = config_to_yaml(load_config("resnet9-onecycle", {"sched.max_lr": 0.0026})[1])
    notes = [auto_note("optim.lr", 0.0026, "min_loss_div10"), auto_note("sched.max_lr", 0.0026, "min_loss_div10")]
    text = config_header("0.1.0", "resnet9-onecycle") + "".join(notes) + yaml
    assert header_recipe(text) == "resnet9-onecycle"
    assert header_auto_notes(text) == notes
    assert range_test_fields(text) == {"optim.lr", "sched.max_lr"}
    # The same lines below the header, e.g. a comment a user added in the YAML, are not the run's record.
    moved = yaml + config_header("0.1.0", "resnet18-bn") + "".join(notes)
    assert header_recipe(moved) is None and header_auto_notes(moved) == [] and range_test_fields(moved) == set()
    assert header_recipe(yaml) is None and range_test_fields(yaml) == set()


def test_auto_lr_of_a_recipe_matches_the_number_the_range_test_resolved_not_one_given(tmp_path):
    recipe = load_config("resnet18-sgd-plateau")[1]
    assert recipe.optim.lr == "auto"
    resolved = make_run(
        tmp_path / "r", "resnet18-sgd-plateau", [50.0], overrides={"optim.lr": 0.05}, header_notes=RANGE_TEST_NOTE
    )
    text = (resolved / "config.yaml").read_text()
    assert range_test_fields(text) == {"optim.lr"}
    _, cfg = load_config(resolved / "config.yaml")
    assert recipe_differences(cfg, recipe, range_test_fields(text)) == []
    # The same number given by hand (`--set optim.lr=0.05`: no range test ran) is a different run.
    given = make_run(tmp_path / "g", "resnet18-sgd-plateau", [50.0], overrides={"optim.lr": 0.05})
    text = (given / "config.yaml").read_text()
    _, cfg = load_config(given / "config.yaml")
    assert range_test_fields(text) == set()
    assert recipe_differences(cfg, recipe) == [
        "optim.lr = 0.05 (recipe: 'auto') (a number given, not the LR range test's)"
    ]
    recipes = {name: load_config(name)[1] for name in list_recipes()}
    assert run_recipe(cfg, text, None, recipes) == ("resnet18-sgd-plateau", "named in config.yaml's header")
    _, cfg2 = load_config("resnet18-sgd-plateau", {"trainer.epochs": 2})
    assert recipe_differences(cfg2, recipe) == ["trainer.epochs = 2 (recipe: 50)"]
    # A recipe with a fixed LR (resnet9-onecycle's peak): a run that read its peak from the range test
    # differs from it, and the difference says where the run's number came from.
    r9 = load_config("resnet9-onecycle")[1]
    assert isinstance(r9.sched.max_lr, float)
    read = make_run(
        tmp_path / "t",
        "resnet9-onecycle",
        [50.0],
        overrides={"sched.max_lr": 0.00102},
        header_notes=auto_note("sched.max_lr", 0.00102, "min_loss_div10"),
    )
    text = (read / "config.yaml").read_text()
    _, cfg3 = load_config(read / "config.yaml")
    assert recipe_differences(cfg3, r9, range_test_fields(text)) == [
        f"sched.max_lr = 0.00102 (recipe: {r9.sched.max_lr!r}) (the LR range test's reading)"
    ]


def test_compare_reference_names_a_given_lr_but_not_where_the_run_ran(tmp_path):
    run = make_run(
        tmp_path / "runs" / "lr005",
        "resnet9-onecycle",
        [50.0],
        overrides={"sched.max_lr": 0.005, "trainer.checkpoint_minutes": 10, "trainer.loggers": ["tensorboard"]},
    )
    res = compare_runs([run], out=tmp_path / "cmp", reference=True)
    diffs = res.references[0]["differences"]
    assert [d.split(" (")[0] for d in diffs] == ["sched.max_lr = 0.005"]
    md = _flat((tmp_path / "cmp" / "compare.md").read_text())
    assert "sched.max_lr = 0.005" in md and "checkpoint_minutes" not in md and "loggers" not in md


# --- vislab compare --reference and the data columns -------------------------------------------------------------


def test_compare_reference_overlays_and_sets_figures_side_by_side(tmp_path, capsys):
    run = make_run(tmp_path / "runs" / "r9", "resnet9-onecycle", [41.0, 52.5, 60.25])
    ref = course_reference("resnet9-onecycle")
    assert main(["compare", str(run), "--reference", "--out", str(tmp_path / "cmp")]) == 0
    out = _flat(capsys.readouterr().out)
    assert f"vislab 60.25% at epoch 3 (course at epoch 3: {ref.at_epoch(3):.2f}%)" in out
    assert f"course final {ref.final:.2f}% on canonical CIFAR-10 on a GPU" in out
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "canonical CIFAR-10" in md and "imagefolder (cifar10-jpeg)" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| r9 | resnet9-onecycle |"))
    assert row.endswith(f"| 60.25 | {ref.at_epoch(3):.2f} | {ref.final:.2f} |")
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())[0]
    assert (saved["recipe"], saved["course_test_acc_at_epoch"], saved["course_final_test_acc"]) == (
        "resnet9-onecycle",
        ref.at_epoch(3),
        ref.final,
    )


def test_course_curve_is_drawn_on_the_given_axes():
    from matplotlib.figure import Figure

    ref = course_reference("resnet18-bn")
    ax = Figure().add_subplot()
    assert results.plot_course_curve(ref, ax) is ax.figure
    (line,) = ax.lines
    assert list(line.get_ydata()) == list(ref.curve) and list(line.get_xdata()) == list(range(1, len(ref.curve) + 1))
    fig = results.plot_vs_course([{"epoch": 1, "test_acc": 30.0}, {"epoch": 2, "test_acc": 45.0}], ref)
    assert [list(ln.get_ydata()) for ln in fig.axes[0].lines] == [[30.0, 45.0], list(ref.curve)]


def test_a_first_epoch_under_the_course_curve_is_not_covered_by_the_legend():
    # One epoch, low and left, beside a 40-epoch course curve: every spot inside the axes covers some data, so
    # the legend goes under the axes, and the run's point stays in view.
    fig = results.plot_vs_course([{"epoch": 1, "test_acc": 23.74}], course_reference("resnet18-ln-plateau"))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    ax, renderer = fig.axes[0], FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # the layout is settled only by drawing
    legend_box, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend_box.y1 <= axes_box.y0 and not legend_box.overlaps(axes_box)
    y0, y1 = ax.get_ylim()
    assert y0 < 23.74 < y1 and fig.get_window_extent().contains(legend_box.x0, legend_box.y0)


def test_compare_reference_of_the_layernorm_recipe_says_the_curve_is_another_attempt(tmp_path):
    run = make_run(tmp_path / "ln", "resnet18-ln-plateau", [30.0, 40.0])
    res = compare_runs([run], out=tmp_path / "cmp", reference=True)
    ref = course_reference("resnet18-ln-plateau")
    md = _flat((tmp_path / "cmp" / "compare.md").read_text())
    assert "patience-10" in md and "patience 2" in md and f"{ref.curve_final:.2f}%" in md and f"{ref.final:.2f}%" in md
    assert res.references[0]["course_test_acc_at_epoch"] == ref.at_epoch(2)


def test_compare_reference_by_name_for_a_run_that_does_not_say(tmp_path):
    run = make_run(
        tmp_path / "mine",
        "resnet9-onecycle",
        [50.0, 55.0],
        overrides={"trainer.epochs": 12, "sched.peak_epoch": 3},
        header="mine",
    )
    with pytest.raises(ConfigError, match=r"--reference RECIPE"):
        compare_runs([run], out=tmp_path / "x", reference=True)
    assert not (tmp_path / "x").exists()  # refused before anything is written
    res = compare_runs([run], out=tmp_path / "cmp", reference="resnet9-onecycle")
    assert res.references[0]["found"] == "given with --reference"
    md = _flat((tmp_path / "cmp" / "compare.md").read_text())
    assert "differs from today's resnet9-onecycle recipe in: " in md and "trainer.epochs = 12 (recipe: 24)" in md


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--reference"], "no course reference"),  # a quick run: vislab's own recipe
        (["--reference", "no-such-recipe"], "'no-such-recipe'"),
    ],
)
def test_compare_reference_user_errors_exit_2(tmp_path, capsys, args, needle):
    run = make_run(tmp_path / "q", "quick", [70.0])
    assert main(["compare", str(run), *args, "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "resnet9-onecycle" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "cmp").exists()


def test_compare_reference_before_the_run_folder_is_read_as_a_folder(tmp_path, capsys):
    run = make_run(tmp_path / "r", "resnet9-onecycle", [50.0])
    other = make_run(tmp_path / "s", "resnet9-onecycle", [50.0])
    assert main(["compare", str(run), "--reference", str(other)]) == 2
    assert "put --reference after the RUN_DIRs" in capsys.readouterr().err


def test_compare_table_shows_each_runs_data(tmp_path):
    small = make_run(
        tmp_path / "small",
        "quick",
        [60.0],
        overrides={"data.train_size": 2000},
        summary=_summary("quick", 1, 5.0, 2000, 1000),
    )
    full = make_run(
        tmp_path / "full", "quick", [80.0], overrides={"data.train_size": 5000}
    )  # still running: no summary.json
    res = compare_runs([small, full], out=tmp_path / "cmp")
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| small | imagefolder (cifar10-jpeg) | 2,000 | 1,000 |" in md
    assert "| full | imagefolder (cifar10-jpeg) | 5,000 | all |" in md
    assert "used different data" in md
    assert [(r["train_images"], r["test_images"]) for r in res.rows] == [(2000, 1000), (5000, "all")]


# --- tools/results.py -----------------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """A docs folder and README with the generated blocks' markers, as the repository has them."""
    tool = _tool()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results.json").write_text("[]\n")
    readme = tmp_path / "README.md"
    begin, end = tool._markers(tool.README_TABLE)
    readme.write_text(f"# x\n\n## Recipes\n\n{begin}\n{end}\n\nhand-written text\n")
    paths = ["--docs", str(docs), "--readme", str(readme), "--package", str(tmp_path / "pkg.json")]
    return tool, docs, readme, paths


def test_results_tool_records_finished_and_unfinished_runs(tmp_path, tree):
    tool, docs, readme, paths = tree
    bn_accs = [50.0 + i for i in range(20)]
    bn = make_run(
        tmp_path / "runs" / "resnet18-bn",
        "resnet18-bn",
        bn_accs,
        summary=_summary("resnet18-bn", 20, 450.0),
        seconds=20.0,
    )
    (bn / "lr_find.json").write_text(json.dumps({"seconds": 30.0}))
    r9 = make_run(tmp_path / "runs" / "resnet9-onecycle", "resnet9-onecycle", [45.0, 58.0, 57.5], seconds=400.0)
    assert (
        tool.main(
            [
                str(bn),
                str(r9),
                "--commit",
                "abc1234",
                "--machine",
                "Test CPU",
                "--data",
                "test data",
                "--date",
                "2026-01-02",
                *paths,
            ]
        )
        == 0
    )

    entries = json.loads((docs / "results.json").read_text())
    assert [list(e) for e in entries] == [list(results.RESULT_KEYS)] * 2
    bn_e, r9_e = entries
    assert (
        bn_e["recipe"],
        bn_e["epochs_done"],
        bn_e["epochs_planned"],
        bn_e["final_test_acc"],
        bn_e["best_test_acc"],
    ) == ("resnet18-bn", 20, 20, bn_accs[-1], max(bn_accs))
    assert bn_e["wall_seconds"] == 450.0  # one process ran it all: summary.json's wall time
    assert (r9_e["epochs_done"], r9_e["epochs_planned"], r9_e["final_test_acc"], r9_e["best_test_acc"]) == (
        3,
        24,
        57.5,
        58.0,
    )
    assert r9_e["wall_seconds"] == 1200.0  # unfinished: the epochs' own seconds
    assert (r9_e["machine"], r9_e["data"], r9_e["date"], r9_e["commit"]) == (
        "Test CPU",
        "test data",
        "2026-01-02",
        "abc1234",
    )
    assert r9_e["course_test_acc"] == course_reference("resnet9-onecycle").final
    assert json.loads((tmp_path / "pkg.json").read_text()) == entries

    for name in ("config.yaml", "metrics.jsonl", "summary.json", "lr_find.json"):
        assert (docs / "results" / "resnet18-bn" / name).read_bytes() == (bn / name).read_bytes()
    assert not (docs / "results" / "resnet9-onecycle" / "summary.json").exists()
    for recipe in ("resnet18-bn", "resnet9-onecycle"):
        assert (docs / "results" / recipe / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = (docs / "results.md").read_text()
    r9_row = next(ln for ln in md.splitlines() if ln.startswith("| `resnet9-onecycle` |"))
    same = course_reference("resnet9-onecycle").at_epoch(3)
    assert "in progress: 3 of 24 epochs" in r9_row and f"57.50 vs {same:.2f} at epoch 3" in r9_row
    assert next(ln for ln in md.splitlines() if ln.startswith("| `resnet18-bn` |")).split(" | ")[1] == "finished"
    assert "| `quick` | TODO: not run yet" in md
    text = readme.read_text()
    assert describe_result(r9_e, course_reference("resnet9-onecycle")) in text and "hand-written text" in text
    assert f"course had {same:.2f}% at epoch 3" in text
    assert tool.main(["--check", *paths]) == 0

    # A hand edit of a quoted figure is caught; re-rendering restores it.
    readme.write_text(text.replace("57.50%", "75.50%"))
    assert tool.main(["--check", *paths]) == 1
    assert tool.main(paths) == 0 and tool.main(["--check", *paths]) == 0


def test_results_tool_rerecording_replaces_the_entry_and_keeps_others(tmp_path, tree):
    tool, docs, _, paths = tree
    bn = make_run(tmp_path / "bn", "resnet18-bn", [60.0, 61.0], seconds=30.0)
    r9 = make_run(tmp_path / "r9", "resnet9-onecycle", [45.0])
    assert tool.main([str(bn), str(r9), "--commit", "c1", "--machine", "M", *paths]) == 0
    # The resnet18-bn run later ended after a resume: summary.json covers only the last process.
    (bn / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": i, "test_acc": 60.0 + i, "seconds": 30.0}) + "\n" for i in range(1, 21))
    )
    (bn / "summary.json").write_text(json.dumps(_summary("resnet18-bn", 20, 100.0)))
    (bn / "lr_find.json").write_text(json.dumps({"seconds": 5.0}))
    assert tool.main([str(bn), "--commit", "c2", *paths]) == 0
    by = {e["recipe"]: e for e in json.loads((docs / "results.json").read_text())}
    assert by["resnet9-onecycle"]["commit"] == "c1" and by["resnet18-bn"]["commit"] == "c2"
    assert by["resnet18-bn"]["epochs_done"] == 20 and by["resnet18-bn"]["wall_seconds"] == 20 * 30.0 + 5.0
    assert by["resnet18-bn"]["machine"] == "Test CPU (2 cores), torch 9.9.9"  # from summary.json when not given
    assert "(epochs + range test (resumed run))" in (docs / "results.md").read_text()


def test_results_tool_time_note_is_quoted_with_the_time_and_kept_when_the_run_is_recorded_again(tmp_path, tree):
    tool, docs, readme, paths = tree
    bn = make_run(tmp_path / "bn", "resnet18-bn", [60.0, 61.0], seconds=30.0)
    note = "a background run on a shared CPU"
    assert tool.main([str(bn), "--commit", "c1", "--machine", "M", "--time-note", note, *paths]) == 0

    def entry():
        return json.loads((docs / "results.json").read_text())[0]

    assert entry()["time_note"] == note
    assert f"60 s so far: {note})" in readme.read_text()  # README / recipes -v: beside the time it qualifies
    row = next(ln for ln in (docs / "results.md").read_text().splitlines() if ln.startswith("| `resnet18-bn` |"))
    assert f"(epochs so far); {note} |" in row
    # The run went on: recorded again without the flag, the note stays; '' clears it.
    with (bn / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 3, "test_acc": 62.0, "seconds": 30.0}) + "\n")
    assert tool.main([str(bn), "--commit", "c1", "--machine", "M", *paths]) == 0
    assert entry()["epochs_done"] == 3 and entry()["time_note"] == note
    assert tool.main([str(bn), "--commit", "c1", "--machine", "M", "--time-note", "", *paths]) == 0
    assert entry()["time_note"] is None and note not in readme.read_text()
    assert tool.main(["--check", *paths]) == 0


def test_results_tool_names_a_range_test_in_the_time_only_when_the_run_had_one():
    wall_time = _tool().wall_time
    rows = [{"epoch": 1, "seconds": 30.0}, {"epoch": 2, "seconds": 40.0}]
    assert wall_time(rows, None, None) == (70.0, "epochs so far")
    assert wall_time(rows, None, {"seconds": 5.0}) == (75.0, "epochs + range test so far")
    resumed = {"status": "finished", "epochs_completed": 2, "wall_seconds": 40.0}  # the last process only
    assert wall_time(rows, resumed, None) == (70.0, "epochs (resumed run)")
    assert wall_time(rows, {**resumed, "wall_seconds": 80.0}, None) == (80.0, "whole command")


def test_results_tool_does_not_copy_the_summary_of_an_earlier_stop(tmp_path, tree):
    tool, docs, _, paths = tree
    # Stopped by a signal after epoch 2 (its summary.json says so), then resumed and now at epoch 3.
    stale = {**_summary("resnet9-onecycle", 2, 900.0), "status": "interrupted"}
    r9 = make_run(tmp_path / "r9", "resnet9-onecycle", [45.0, 58.0, 57.5], summary=stale)
    assert tool.main([str(r9), "--commit", "c1", "--machine", "M", *paths]) == 0
    assert not (docs / "results" / "resnet9-onecycle" / "summary.json").exists()
    assert (docs / "results" / "resnet9-onecycle" / "metrics.jsonl").is_file()
    # Once the run has ended, its summary covers every epoch and is copied.
    (r9 / "summary.json").write_text(json.dumps(_summary("resnet9-onecycle", 3, 1300.0)))
    assert tool.main([str(r9), "--commit", "c1", "--machine", "M", *paths]) == 0
    assert (docs / "results" / "resnet9-onecycle" / "summary.json").read_bytes() == (r9 / "summary.json").read_bytes()


@pytest.mark.parametrize(
    "extra,needle",
    [
        ([], "--commit"),
        (["--commit", "c1", "--date", "Jan 2"], "YYYY-MM-DD"),
        (["--commit", "c1"], "--machine"),  # unfinished run: no summary.json to take the machine from
    ],
)
def test_results_tool_user_errors_exit_2(tmp_path, tree, capsys, extra, needle):
    tool, docs, _, paths = tree
    run = make_run(tmp_path / "r9", "resnet9-onecycle", [45.0])
    assert tool.main([str(run), *extra, *paths]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert json.loads((docs / "results.json").read_text()) == []


def test_results_tool_asks_for_the_recipe_of_an_unnamed_run(tmp_path, tree, capsys):
    tool, docs, _, paths = tree
    run = make_run(
        tmp_path / "mine",
        "resnet9-onecycle",
        [45.0],
        overrides={"trainer.epochs": 12, "sched.peak_epoch": 3},
        header="mine",
    )
    assert tool.main([str(run), "--commit", "c1", "--machine", "M", *paths]) == 2
    assert "--recipe NAME" in capsys.readouterr().err
    assert tool.main([str(run), "--commit", "c1", "--machine", "M", "--recipe", "resnet9-onecycle", *paths]) == 0
    assert json.loads((docs / "results.json").read_text())[0]["epochs_planned"] == 12


def _tree_bytes(*paths: Path) -> dict[str, bytes]:
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        out.update({str(f): f.read_bytes() for f in files})
    return out


def test_results_tool_refuses_a_variant_as_the_recipe_and_records_it_as_a_trial(tmp_path, tree, capsys):
    tool, docs, readme, paths = tree
    r9 = make_run(
        tmp_path / "runs" / "resnet9-onecycle",
        "resnet9-onecycle",
        [50.0, 60.0],
    )
    assert tool.main([str(r9), "--commit", "c1", "--machine", "M", *paths]) == 0
    before = _tree_bytes(docs, readme)

    # An LR trial: the recipe's header, another peak LR given by hand, better figures.
    trial = make_run(
        tmp_path / "runs" / "lr005", "resnet9-onecycle", [52.0, 63.5, 63.0], overrides={"sched.max_lr": 0.005}
    )
    assert tool.main([str(trial), "--commit", "c2", "--machine", "M", *paths]) == 2
    err = capsys.readouterr().err
    assert "sched.max_lr = 0.005" in err and "--as NAME" in err and len(err.strip().splitlines()) == 1
    assert _tree_bytes(docs, readme) == before  # refused: nothing written

    for bad in ("resnet9-onecycle", "Has Space"):
        assert tool.main([str(trial), "--as", bad, "--commit", "c2", "--machine", "M", *paths]) == 2
        assert "--as" in capsys.readouterr().err
    assert tool.main([str(trial), "--as", "r9-lr005", "--commit", "c2", "--machine", "M", *paths]) == 0
    assert "r9-lr005 (trial of resnet9-onecycle)" in capsys.readouterr().out
    entries = json.loads((docs / "results.json").read_text())
    assert [(e["recipe"], e["final_test_acc"], e["commit"]) for e in entries] == [("resnet9-onecycle", 60.0, "c1")]
    folder = docs / "results" / "r9-lr005"
    assert (folder / "metrics.jsonl").read_bytes() == (trial / "metrics.jsonl").read_bytes()
    assert (folder / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "trial.json").read_text())
    assert (saved["entry"]["final_test_acc"], saved["entry"]["best_test_acc"], saved["entry"]["commit"]) == (
        63.0,
        63.5,
        "c2",
    )
    assert [d.split(" (")[0] for d in saved["differences"]] == ["sched.max_lr = 0.005"]
    md = (docs / "results.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| `r9-lr005` |"))
    assert "| `resnet9-onecycle` | sched.max_lr = 0.005" in row and "| 63.00 | 63.50 | 3/24 | 60.00 (2/24) |" in row
    course = course_reference("resnet9-onecycle")
    # The same-epoch column: the recipe's recorded run has no epoch 3, the course does.
    assert f"| 63.00 / — / {course.at_epoch(3):.2f} at epoch 3 |" in row
    # An unfinished trial is judged at its last epoch, beside the recipe's run and the course at that epoch.
    early = make_run(tmp_path / "runs" / "early", "resnet9-onecycle", [51.0, 61.5], overrides={"sched.max_lr": 0.005})
    assert tool.main([str(early), "--as", "r9-early", "--commit", "c2", "--machine", "M", *paths]) == 0
    row = next(ln for ln in (docs / "results.md").read_text().splitlines() if ln.startswith("| `r9-early` |"))
    assert "in progress: 2 of 24 epochs" in row and f"| 61.50 / 60.00 / {course.at_epoch(2):.2f} at epoch 2 |" in row
    assert "at epoch 2 | 20 s |" in row  # its time: two epochs of 10 s
    assert (
        tool.main([str(early), "--as", "r9-early", "--commit", "c2", "--machine", "M", "--time-note", "busy", *paths])
        == 0
    )
    assert "at epoch 2 | 20 s; busy |" in (docs / "results.md").read_text()
    assert tool.main(["--check", *paths]) == 0

    # --check recomputes a trial's figures from its files: one edited by hand is caught.
    (folder / "metrics.jsonl").write_text(
        (folder / "metrics.jsonl").read_text().replace('"test_acc": 63.0', '"test_acc": 65.0')
    )
    assert tool.main(["--check", *paths]) == 1
    assert "final_test_acc = 63.0 in its record, but its files" in capsys.readouterr().err


def test_results_tool_check_recomputes_the_entries_figures_from_the_run_files(tmp_path, tree, capsys):
    tool, docs, _, paths = tree
    bn = make_run(tmp_path / "bn", "resnet18-bn", [60.0, 61.0, 60.5], seconds=30.0)
    assert tool.main([str(bn), "--commit", "c1", "--machine", "M", *paths]) == 0
    assert tool.main(["--check", *paths]) == 0
    # results.json and the package copy edited alike, and the tables re-rendered from them: the run files disagree.
    entries = json.loads((docs / "results.json").read_text())
    entries[0]["best_test_acc"] = 62.0
    (docs / "results.json").write_text(json.dumps(entries, indent=1) + "\n")
    assert tool.main(paths) == 0
    assert tool.main(["--check", *paths]) == 1
    assert "resnet18-bn: best_test_acc = 62.0 in its record, but its files" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage,needle",
    [
        ("missing-run", "is not a folder"),
        ("summary.json", "summary.json cannot be read as JSON"),
        ("metrics.jsonl", "line 2: an epoch's row needs an integer epoch and a numeric test_acc"),
    ],
)
def test_results_tool_writes_nothing_when_a_run_cannot_be_read(tmp_path, tree, capsys, damage, needle):
    tool, docs, readme, paths = tree
    first = make_run(tmp_path / "bn", "resnet18-bn", [60.0, 61.0], seconds=30.0)
    assert tool.main([str(first), "--commit", "c1", "--machine", "M", *paths]) == 0
    capsys.readouterr()
    before = _tree_bytes(docs, readme, tmp_path / "pkg.json")
    # The same run has gone on (3 epochs now), and a second one is damaged: nothing of either is written.
    (first / "metrics.jsonl").write_text(
        (first / "metrics.jsonl").read_text() + json.dumps({"epoch": 3, "test_acc": 70.0}) + "\n"
    )
    second = tmp_path / "r9"
    if damage != "missing-run":
        make_run(second, "resnet9-onecycle", [45.0, 50.0], summary=_summary("resnet9-onecycle", 2, 100.0))
        if damage == "summary.json":
            (second / "summary.json").write_text('{"status": "finished", ')
        else:
            (second / "metrics.jsonl").write_text('{"epoch": 1, "test_acc": 45.0}\n{"epoch": 2, "test_acc": null}\n')
    assert tool.main([str(first), str(second), "--commit", "c2", "--machine", "M", *paths]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _tree_bytes(docs, readme, tmp_path / "pkg.json") == before


def test_result_entries_are_refused_with_a_wrong_type_or_twice(tmp_path):
    entry = dict(measured_results()[0])
    with pytest.raises(ConfigError, match=r"final_test_acc = '88.8'; it must be int or float"):
        results.check_result_entries([{**entry, "final_test_acc": "88.8"}], "x.json")
    with pytest.raises(ConfigError, match=r"has two entries"):
        results.check_result_entries([entry, dict(entry)], "x.json")


def test_an_unfinished_layernorm_run_names_the_course_attempt_it_is_compared_with():
    ref = course_reference("resnet18-ln-plateau")
    entry = {**measured_results()[0], "recipe": "resnet18-ln-plateau", "epochs_done": 3, "epochs_planned": 40}
    assert f"the course (patience-10 attempt) had {ref.at_epoch(3):.2f}% at epoch 3" in describe_result(entry, ref)


# --- vislab recipes -v ------------------------------------------------------------------------------------------------


def test_recipes_verbose_prints_course_and_measured_figures(capsys):
    assert main(["recipes", "-v"]) == 0
    out = _flat(capsys.readouterr().out)
    for ref in course_references().values():
        assert f"course's figure: {ref.final:.2f}% test accuracy" in out
    measured = measured_results()
    assert measured, "docs/results.json records at least the resnet9-onecycle run"
    for e in measured:
        assert f"vislab measured: {describe_result(e, course_reference(e['recipe']))}" in out
        assert e["data"] in out and e["machine"] in out and e["date"] in out
    unmeasured = set(list_recipes()) - {e["recipe"] for e in measured}
    assert out.count("vislab measured: no recorded run yet") == len(unmeasured)
