"""TensorBoard logging (trainer.loggers: [tensorboard]): event files read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import vislab
from vislab.build import build_loggers
from vislab.config import config_to_yaml, load_config
from vislab.engine import Callback, DistInfo, TensorBoardLogger
from vislab.errors import ConfigError
from vislab.rundir import TENSORBOARD_DIR, read_resume_config

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
plugin_event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.plugin_event_accumulator")

pytestmark = pytest.mark.usefixtures("one_thread")

# Store every event: the reader's default keeps a sample of 4 images per tag.
STORE_ALL = {"scalars": 0, "images": 0, "tensors": 0}
STEPS_PER_EPOCH = 4  # 72 synthetic training images in batches of 16, last one dropped


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] over every event file of the folder, after TensorBoard's purge of orphaned events."""
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance=STORE_ALL)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_epochs_match_metrics(scalars: dict, rows: list[dict]) -> None:
    columns = {k for r in rows for k, v in r.items() if k != "epoch" and isinstance(v, (int, float))}
    assert {"train_loss", "test_acc", "test_loss", "lr", "seconds"} <= columns
    assert {t for t in scalars if t.startswith("epoch/")} == {f"epoch/{c}" for c in columns}
    for c in columns:
        expected = [(r["epoch"], pytest.approx(r[c], rel=1e-6, abs=1e-9)) for r in rows]
        assert scalars[f"epoch/{c}"] == expected, c  # one value per epoch, equal to metrics.jsonl's


class _RecordLosses(Callback):
    """Every step's loss, read back here (the logger itself reads only the steps it logs)."""

    def __init__(self):
        self.losses: list[float] = []

    def on_batch_end(self, trainer, batch_idx, loss):
        self.losses.append(float(loss))


def test_a_run_logs_epochs_throttled_steps_hparams_and_the_report_figures(tiny_overrides, tmp_path):
    every = 3
    ov = {
        **tiny_overrides,
        "trainer.loggers": ["tensorboard"],
        "trainer.log_every_n_steps": every,
        "trainer.report": True,
        "data.val_size": 12,  # val_* columns too; 60 training images: 3 steps per epoch
        "trainer.epochs": 3,
    }
    recorder = _RecordLosses()
    run = vislab.train("quick", ov, out=tmp_path / "r", callbacks=[recorder])
    logdir = run.run_dir / TENSORBOARD_DIR
    scalars = _scalars(logdir)
    rows = _rows(run.run_dir)
    _assert_epochs_match_metrics(scalars, rows)
    assert "epoch/val_acc" in scalars

    # Training loss and LR every `every` optimizer steps, at the global step, equal to what the step used.
    steps = len(recorder.losses)
    assert steps == 9
    logged = list(range(every, steps + 1, every))
    lrs = json.loads((run.run_dir / "lr_steps.json").read_text())
    assert [s for s, _ in scalars["step/train_loss"]] == logged == [s for s, _ in scalars["step/lr"]]
    assert [v for _, v in scalars["step/train_loss"]] == [pytest.approx(recorder.losses[s - 1]) for s in logged]
    assert [v for _, v in scalars["step/lr"]] == [pytest.approx(lrs[s - 1]) for s in logged]

    # The HParams dashboard's data: the run's hyper-parameters beside its final and best metrics.
    acc = plugin_event_accumulator.EventAccumulator(str(logdir), size_guidance=STORE_ALL)
    acc.Reload()
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert hp["model.name"] == "resnet9" and hp["optim.name"] == "sgd" and hp["sched.name"] == "onecycle"
    assert hp["optim.lr"] == pytest.approx(0.05) and hp["trainer.batch_size"] == 16 and hp["trainer.epochs"] == 3
    assert hp["trainer.precision"] in ("fp32", "bf16") and hp["augment"] is True and hp["recipe"] == "quick"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"hparams/final_test_acc", "hparams/best_test_acc", "hparams/final_test_loss"} <= metric_tags
    final, best = rows[-1], max(rows, key=lambda r: r["test_acc"])
    assert scalars["hparams/final_test_acc"] == [(3, pytest.approx(final["test_acc"]))]
    assert scalars["hparams/final_test_loss"] == [(3, pytest.approx(final["test_loss"]))]
    assert scalars["hparams/best_test_acc"] == [(3, pytest.approx(best["test_acc"]))]
    assert scalars["hparams/best_test_loss"] == [(3, pytest.approx(min(r["test_loss"] for r in rows)))]
    assert scalars["hparams/final_val_acc"] == [(3, pytest.approx(final["val_acc"]))]

    # Every figure of the report, as an image of its size.
    from PIL import Image

    pngs = {p.stem: p for p in (run.run_dir / "report").glob("*.png")}
    assert {"curves", "lr", "confusion_counts"} <= set(pngs)
    images = event_accumulator.EventAccumulator(str(logdir), size_guidance=STORE_ALL)
    images.Reload()
    assert set(images.Tags()["images"]) == {f"report/{name}" for name in pngs}
    for name, path in pngs.items():
        (event,) = images.Images(f"report/{name}")
        assert (event.width, event.height) == Image.open(path).size and event.step == 3


def test_a_resumed_run_appends_without_repeating_a_step_or_an_epoch(tiny_overrides, tmp_path):
    class StopInEpoch3(Callback):
        def on_batch_end(self, trainer, batch_idx, loss):
            if trainer.epoch == 2 and batch_idx == 1:
                trainer.stop_signal = 2  # what SIGINT sets: stop after this step

    out = tmp_path / "r"
    ov = {**tiny_overrides, "trainer.epochs": 3, "trainer.loggers": ["tensorboard"], "trainer.log_every_n_steps": 1}
    with pytest.raises(vislab.errors.Interrupted):
        vislab.train("quick", ov, out=out, callbacks=[StopInEpoch3()])
    before = _scalars(out / TENSORBOARD_DIR)
    checkpointed = 2 * STEPS_PER_EPOCH
    # The interrupted process logged steps after its last checkpoint: those are run, and logged, again.
    assert [s for s, _ in before["step/train_loss"]] == list(range(1, checkpointed + 3))
    assert not any(t.startswith("hparams/") for t in before)

    run = vislab.train(resume=out)
    assert len(list((out / TENSORBOARD_DIR).glob("events.out.tfevents.*"))) == 2
    scalars = _scalars(out / TENSORBOARD_DIR)
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3] == [r["epoch"] for r in run.history]
    _assert_epochs_match_metrics(scalars, rows)
    # The resume continued after the interrupted step (checkpoints/interrupted), so no step was logged twice.
    for tag in ("step/train_loss", "step/lr"):
        assert [s for s, _ in scalars[tag]] == list(range(1, 3 * STEPS_PER_EPOCH + 1)), tag
    # Steps up to the checkpoint are the first process's; the later ones the resumed process's.
    assert scalars["step/train_loss"][:checkpointed] == before["step/train_loss"][:checkpointed]
    lrs = json.loads((out / "lr_steps.json").read_text())
    assert [v for _, v in scalars["step/lr"]] == pytest.approx(lrs)
    assert scalars["hparams/final_test_acc"] == [(3, pytest.approx(rows[-1]["test_acc"]))]
    # Resuming the finished run trains nothing and logs nothing twice.
    vislab.train(resume=out)
    assert _scalars(out / TENSORBOARD_DIR) == scalars


def test_a_run_killed_after_a_mid_epoch_checkpoint_leaves_no_gap_in_the_step_curves(tiny_overrides, tmp_path):
    import signal

    from test_reliability import _child, _resume_child  # the SIGKILL child process of the reliability tests

    out = tmp_path / "r"
    ov = {
        **tiny_overrides,
        "trainer.epochs": 2,
        "trainer.loggers": "tensorboard",
        "trainer.log_every_n_steps": 1,
        "trainer.checkpoint_minutes": 1e-9,  # a mid-epoch checkpoint after every step
    }
    r = _child(tmp_path, "kill-step", 7, ov, out)  # SIGKILL inside step 7 (epoch 2), after `partial` at step 6
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    r = _resume_child(out)
    assert r.returncode == 0 and "after its step 2 (checkpoints/partial)" in r.stderr, r.stderr[-2000:]
    # Steps 5 and 6 ran only in the killed process: they reached the event file before its checkpoint did.
    for tag in ("step/train_loss", "step/lr"):
        assert [s for s, _ in _scalars(out / TENSORBOARD_DIR)[tag]] == list(range(1, 2 * STEPS_PER_EPOCH + 1)), tag


def test_without_tensorboardx_the_logger_is_one_clear_config_error_before_the_run_folder(
    tiny_overrides, tmp_path, monkeypatch, capsys
):
    from vislab.cli import main

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # an import of it now fails, as when it is not installed
    out = tmp_path / "r"
    with pytest.raises(ConfigError) as err:
        vislab.train("quick", {**tiny_overrides, "trainer.loggers": ["tensorboard"]}, out=out)
    msg = str(err.value)
    assert "trainer.loggers" in msg and "'tensorboard'" in msg and "pip install 'vislab[tensorboard]'" in msg
    assert "\n" not in msg and not out.exists()
    # The same from the command line, with the logger named by --set.
    args = [f"--set={k}={v}" for k, v in tiny_overrides.items()]
    code = main(["train", "quick", *args, "--set", "trainer.loggers=[tensorboard]", "--out", str(out)])
    assert code == 2 and "pip install 'vislab[tensorboard]'" in capsys.readouterr().err and not out.exists()
    # Without a logger, nothing needs tensorboardX.
    assert vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1}, out=out).history


def test_trainer_loggers_from_yaml_and_set_and_on_resume(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("recipe: quick\ntrainer:\n  loggers: [tensorboard]\n")
    assert load_config(f)[1].trainer.loggers == ["tensorboard"]
    assert load_config("quick", ["trainer.loggers=[tensorboard]"])[1].trainer.loggers == ["tensorboard"]
    assert load_config("quick", ["trainer.loggers=tensorboard"])[1].trainer.loggers == ["tensorboard"]
    assert load_config("quick")[1].trainer.loggers == []
    with pytest.raises(ConfigError, match=r"trainer.loggers = 'wandb': Input should be 'tensorboard'"):
        load_config("quick", ["trainer.loggers=[wandb]"])
    # A run may start or stop logging when it is resumed.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(config_to_yaml(load_config("quick")[1]))
    _, cfg, _ = read_resume_config(run_dir, ["trainer.loggers=[tensorboard]", "trainer.log_every_n_steps=5"])
    assert cfg.trainer.loggers == ["tensorboard"] and cfg.trainer.log_every_n_steps == 5


def test_only_rank_0_gets_a_logger(tmp_path):
    _, cfg = load_config("quick", ["trainer.loggers=[tensorboard]", "trainer.log_every_n_steps=7"])
    (logger,) = build_loggers(cfg, tmp_path, DistInfo(rank=0, world_size=2), recipe="quick", precision="fp32")
    assert logger.logdir == tmp_path / TENSORBOARD_DIR and logger.every_n_steps == 7
    assert build_loggers(cfg, tmp_path, DistInfo(rank=1, world_size=2), recipe="quick", precision="fp32") == []
    assert build_loggers(load_config("quick")[1], tmp_path, recipe="quick", precision="fp32") == []


class _CountingLoss:
    """A stand-in for the step's loss tensor that counts host reads."""

    def __init__(self, value: float):
        self.value, self.reads = value, 0

    def item(self) -> float:
        self.reads += 1
        return self.value


def test_the_loss_is_read_back_only_on_the_steps_that_are_logged(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb", every_n_steps=4)
    trainer = SimpleNamespace(global_step=0, epoch=0, step_lr=0.1, history=[])
    logger.on_train_start(trainer)
    losses = []
    for step in range(1, 11):
        trainer.global_step = step
        losses.append(_CountingLoss(float(step)))
        logger.on_batch_end(trainer, step - 1, losses[-1])
    logger.close()
    assert [loss.reads for loss in losses] == [0, 0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert _scalars(tmp_path / "tb")["step/train_loss"] == [(4, 4.0), (8, 8.0)]
    with pytest.raises(ValueError, match="every_n_steps"):
        TensorBoardLogger(tmp_path, every_n_steps=0)
