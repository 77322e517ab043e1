"""Run folders as a new user meets them: LR-range-test folders, stale interrupt checkpoints, reprs, recipe-based YAML."""

from __future__ import annotations

import subprocess
import sys

import pytest

import vislab
from vislab.errors import ConfigError
from vislab.rundir import CHECKPOINTS_DIR, INTERRUPTED, is_lr_find_folder, read_run


def _vislab(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislab", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture
def lr_find_folder(tiny_overrides, tmp_path):
    finder = vislab.lr_find("quick", {**tiny_overrides, "lr_find.num_iter": 12}, out=tmp_path / "lrf")
    return finder.run_dir


def test_an_lr_find_folder_is_named_for_what_it_is(lr_find_folder, tiny_overrides, tmp_path):
    assert is_lr_find_folder(lr_find_folder)
    with pytest.raises(ConfigError, match="is the output of `vislab lr-find`"):
        read_run(lr_find_folder)
    # Every command that takes a run folder says so, and resume does not train inside it.
    for args in (
        ["report", str(lr_find_folder)],
        ["train", "--resume", str(lr_find_folder)],
        ["compare", str(lr_find_folder)],
    ):
        r = _vislab(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr[-800:])
        assert "is the output of `vislab lr-find`" in r.stderr and "Traceback" not in r.stderr
    assert not (lr_find_folder / CHECKPOINTS_DIR).exists() and not (lr_find_folder / "metrics.jsonl").exists()


def test_a_training_run_with_an_auto_lr_is_not_taken_for_an_lr_find_folder(tiny_overrides, tmp_path):
    run = vislab.train(
        "quick",
        {**tiny_overrides, "trainer.epochs": 1, "sched.max_lr": "auto", "lr_find.num_iter": 12},
        out=tmp_path / "r",
    )
    assert (run.run_dir / "lr_find.json").is_file() and not is_lr_find_folder(run.run_dir)
    assert read_run(run.run_dir).history


def test_a_resumed_run_removes_the_stale_interrupted_checkpoint(tiny_overrides, tmp_path):
    from vislab.engine import Callback

    class StopInEpoch2(Callback):
        def on_batch_end(self, trainer, batch_idx, loss):
            if trainer.epoch == 1 and batch_idx == 1:
                trainer.stop_signal = 2  # what SIGINT sets: stop after this step, checkpoint `interrupted`

    with pytest.raises(vislab.errors.Interrupted):
        vislab.train("quick", {**tiny_overrides, "trainer.epochs": 3}, out=tmp_path / "r", callbacks=[StopInEpoch2()])
    interrupted = tmp_path / "r" / CHECKPOINTS_DIR / INTERRUPTED
    assert interrupted.is_dir()
    vislab.train(resume=tmp_path / "r")
    assert not interrupted.exists() and (tmp_path / "r" / CHECKPOINTS_DIR / "last").is_dir()


def test_run_repr_is_short_and_jupyter_gets_a_figure(tiny_overrides, tmp_path):
    run = vislab.train("quick", tiny_overrides, out=tmp_path / "r")
    text = repr(run)
    assert len(text) < 300 and text.startswith("Run(") and "2/2 epochs" in text
    assert f"final test_acc {run.history[-1]['test_acc']:.2f}%" in text
    html = run._repr_html_()
    assert "data:image/png;base64," in html and "2/2 epochs" in html
    from vislab.report import load_run

    loaded = load_run(run.run_dir, device="cpu")
    assert len(repr(loaded)) < 400 and "checkpoint 'best'" in repr(loaded)


def test_a_yaml_file_can_extend_a_shipped_recipe(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("recipe: quick\ntrainer:\n  epochs: 3\nsched:\n  peak_epoch: 1\n")
    name, cfg = vislab.load_config(path)
    _, quick = vislab.load_config("quick")
    assert name == "mine" and cfg.trainer.epochs == 3 and cfg.sched.peak_epoch == 1
    # everything else is quick's, not the built-in defaults
    assert cfg.model == quick.model and cfg.optim == quick.optim and cfg.sched.max_lr == quick.sched.max_lr
    assert cfg.sched.peak_fraction is None  # the file's peak_epoch replaces quick's other form of the peak
    path.write_text("recipe: no-such\n")
    with pytest.raises(ConfigError, match="recipe = 'no-such' is not a shipped recipe"):
        vislab.load_config(path)
