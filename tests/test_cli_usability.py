"""The CLI as a new user meets it (issue 18): help for every option, recipes to copy, lr-find's override, explain's
--n, --out and --checkpoint, and a data.root that does not resolve from here."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import yaml

import vislab
from conftest import make_imagefolder
from vislab.cli import build_parser, main
from vislab.explain import PREDICTIONS_FILE

pytestmark = pytest.mark.usefixtures("one_thread")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# -- item 18 ----------------------------------------------------------------------------------------------------------


def test_every_option_of_every_subcommand_has_help():
    subs = _subparsers(build_parser())
    assert {"train", "lr-find", "recipes", "summary", "bench", "report", "explain", "compare"} <= set(subs)
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, p in subs.items()
        for a in p._actions
        if not (a.help or "").strip()  # argparse.SUPPRESS (a hidden option) is a non-empty string and passes
    ]
    assert missing == []


# -- item 16 ----------------------------------------------------------------------------------------------------------


def test_recipes_name_prints_the_shipped_yaml_to_start_from(capsys, tmp_path):
    assert main(["recipes", "quick"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Quick:")  # the comment header comes along
    mine = tmp_path / "my.yaml"
    mine.write_text(out)
    # what it prints is a config: the same one the recipe name gives
    assert vislab.load_config(mine)[1] == vislab.load_config("quick")[1]
    assert yaml.safe_load(out)["model"]["name"] == "resnet9"


def test_recipes_unknown_name_is_one_paragraph_listing_them(capsys):
    assert main(["recipes", "quik"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "'quik'" in err
    assert all(name in err for name in vislab.list_recipes())


def test_recipes_help_mentions_extending_a_recipe(capsys):
    with pytest.raises(SystemExit):
        main(["recipes", "--help"])
    assert "recipe: NAME" in " ".join(capsys.readouterr().out.split())


# -- item 8 -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("usability") / "data")


def _tiny(data: Path, cache: Path) -> list[str]:
    sets = {
        "data.name": "imagefolder",
        "data.root": str(data),
        "data.cache_dir": str(cache),
        "model.width": 0.125,
        "trainer.batch_size": 16,
        "trainer.device": "cpu",
        "trainer.progress": False,
        "lr_find.num_iter": 12,
    }
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


@pytest.mark.parametrize("sched,key", [("onecycle", "sched.max_lr"), ("cosine", "optim.lr")])
def test_lr_find_prints_the_override_that_uses_the_chosen_lr(data, tmp_path, capsys, sched, key):
    assert (
        main(
            [
                "lr-find",
                "quick",
                *_tiny(data, tmp_path / "cache"),
                "--set",
                f"sched.name={sched}",
                "--out",
                str(tmp_path / "f"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    chosen = lines[0].split()[2]  # "chosen lr 0.0123 (valley); ..."
    assert f"to train with it: vislab train quick --set {key}={chosen}" in lines
    # the printed override is accepted and sets what the recipe trains with
    cfg = vislab.load_config("quick", [f"sched.name={sched}", f"{key}={chosen}"])[1]
    assert (cfg.sched.max_lr if key == "sched.max_lr" else cfg.optim.lr) == float(chosen)


# -- items 3, 5, 6: explain on a run stopped mid-epoch ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(data, tmp_path_factory) -> Path:
    """A 3-epoch run stopped in epoch 2 (as Ctrl-C does): checkpoints last (epoch 1) and interrupted."""
    from vislab.engine import Callback

    class StopInEpoch2(Callback):
        def on_batch_end(self, trainer, batch_idx, loss):
            if trainer.epoch == 1 and batch_idx == 1:
                trainer.stop_signal = 2  # what SIGINT sets: stop after this step, checkpoint `interrupted`

    base = tmp_path_factory.mktemp("stopped")
    overrides = {
        "data.name": "imagefolder",
        "data.root": str(data),
        "data.cache_dir": str(base / "cache"),
        "model.width": 0.125,
        "trainer.batch_size": 16,
        "trainer.epochs": 3,
        "trainer.device": "cpu",
        "trainer.progress": False,
        "trainer.report": False,
        "sched.peak_epoch": 0.5,
        "optim.lr": 0.05,
    }
    with pytest.raises(vislab.errors.Interrupted):
        vislab.train("quick", overrides, out=base / "run", callbacks=[StopInEpoch2()])
    return base / "run"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_explain_out_elsewhere_leaves_the_run_folder_untouched(stopped_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    (run / PREDICTIONS_FILE).unlink(missing_ok=True)
    before = _snapshot(run)
    out = tmp_path / "ex"
    assert (
        main(["explain", str(run), "--checkpoint", "interrupted", "--n", "3", "--out", str(out), "--device", "cpu"])
        == 0
    )
    assert _snapshot(run) == before  # no predictions.pt, no explain/ folder
    info = json.loads((out / "explain.json").read_text())
    assert Path(info["checkpoint"]).name == "interrupted"
    assert str(out / "explain.json") in capsys.readouterr().out
    # the default output folder is inside the run, and there the predictions are cached as before
    assert main(["explain", str(run), "--n", "3", "--device", "cpu"]) == 0
    assert (run / PREDICTIONS_FILE).is_file() and (run / "explain" / "explain.json").is_file()


@pytest.mark.parametrize("n", ["-3", "0"])
def test_explain_refuses_a_count_below_one_before_loading(stopped_run, tmp_path, capsys, n):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    # with the data gone, getting as far as loading it would be a different error
    cfg = run / "config.yaml"
    cfg.write_text(
        cfg.read_text().replace(str(yaml.safe_load(cfg.read_text())["data"]["root"]), str(tmp_path / "gone"))
    )
    before = _snapshot(run)
    assert main(["explain", str(run), "--n", n, "--out", str(tmp_path / "ex")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--n = {n}" in err and ">= 1" in err and "Traceback" not in err
    assert not (tmp_path / "ex").exists() and _snapshot(run) == before


def test_explain_says_when_n_is_clamped_and_pages_a_large_gallery(stopped_run, tmp_path, capsys):
    from vislab.report._explain import PAGE_TILES

    out = tmp_path / "ex"
    assert (
        main(
            [
                "explain",
                str(stopped_run),
                "--n",
                "100000",
                "--target",
                "predicted",
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    wrong = len(json.loads((out / "explain.json").read_text())["images"])
    assert 0 < wrong < 100000
    assert (
        f"note: --n 100000 is more than the {wrong} misclassified test images; the gallery shows all {wrong}" in printed
    )
    # --target predicted: 2 tiles per image in gradcam, 1 in the gallery; no PNG holds more than PAGE_TILES tiles
    pages = (-(-wrong // PAGE_TILES), -(-wrong // (PAGE_TILES // 2)))
    for stem, count in zip(("misclassified", "gradcam"), pages):
        names = [f"{stem}.png"] if count == 1 else [f"{stem}-{i}.png" for i in range(1, count + 1)]
        assert sorted(p.name for p in out.glob(f"{stem}*.png")) == sorted(names)


def test_explain_pages_hold_at_most_page_tiles_images(stopped_run):
    from vislab.report import load_run
    from vislab.report._explain import explain_loaded

    run = load_run(stopped_run, device="cpu")
    logits, labels, _ = run.predictions()
    ex = explain_loaded(run, logits, labels, n=100000, target="both", faithfulness_n=0, page_tiles=6)
    wrong = ex.indices.numel()
    assert wrong > 6
    # 6 tiles: 6 gallery images per page, 2 Grad-CAM images (each 3 tiles: image, predicted, actual) per page
    assert len(ex.pages["misclassified"]) == -(-wrong // 6) and len(ex.pages["gradcam"]) == -(-wrong // 2)
    assert ex.gallery is ex.pages["misclassified"][0]


@pytest.mark.parametrize("command", ["explain", "report"])
def test_missing_data_root_names_the_data_root_flag(stopped_run, tmp_path, capsys, command):
    run = tmp_path / "run"
    shutil.copytree(stopped_run, run)
    cfg = run / "config.yaml"
    old_root = str(yaml.safe_load(cfg.read_text())["data"]["root"])
    cfg.write_text(cfg.read_text().replace(old_root, "data/cifar-from-elsewhere"))
    assert main([command, str(run), "--n", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "data/cifar-from-elsewhere" in err and "--data-root DIR" in err
    # and the flag it names does work
    assert (
        main(
            [
                command,
                str(run),
                "--n",
                "2",
                "--device",
                "cpu",
                "--data-root",
                old_root,
                *(["--preview", "0"] if command == "report" else []),
            ]
        )
        == 0
    )
