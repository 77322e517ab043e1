"""The exponential moving average of the weights: its arithmetic, its columns, checkpoints, resume and report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import vislab
from vislab.engine import ModelEma, ema_decay_at, load_checkpoint
from vislab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_decay_warms_up_as_timm_does():
    assert ema_decay_at(0.999, 1, True) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 90, True) == pytest.approx(91 / 100)
    assert ema_decay_at(0.999, 100_000, True) == 0.999
    assert ema_decay_at(0.9, 1, False) == 0.9


def test_update_averages_floats_and_copies_integer_buffers():
    model = _net()
    model(torch.randn(2, 3, 6, 6))  # materialise the lazy layer, move BN statistics
    ema = ModelEma(model, 0.9, warmup=False)
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(2, 3, 6, 6))  # running stats and num_batches_tracked move too
    ema.update(model)
    now = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.9 * start[k] + 0.1 * now[k], atol=1e-6), k
        else:
            assert torch.equal(v, now[k]), k  # num_batches_tracked: copied, never averaged
    assert ema.updates == 1
    assert not any(p.requires_grad for p in ema.module.parameters())


def _overrides(tiny_overrides: dict, **more) -> dict:
    return {
        **tiny_overrides,
        "trainer.epochs": 3,
        "trainer.ema_decay": 0.9,
        "sched.name": "none",
        "optim.lr": 0.05,
        **more,
    }


def test_a_run_logs_and_checkpoints_the_ema_beside_the_raw_weights(tmp_path, tiny_overrides):
    run = vislab.train(
        "quick", _overrides(tiny_overrides, **{"trainer.checkpoint_metric": "ema_test_acc"}), out=tmp_path / "r"
    )
    rows = run.history
    assert all({"ema_test_loss", "ema_test_acc"} <= set(r) for r in rows)
    assert any(r["ema_test_loss"] != r["test_loss"] for r in rows)
    state = load_checkpoint(run.run_dir / "checkpoints" / "last")
    assert state["ema"]["updates"] == state["global_step"]  # one update per optimizer step
    raw, avg = state["model"], state["ema"]["module"]
    assert any(not torch.equal(raw[k], avg[k]) for k in raw if raw[k].is_floating_point())
    # best is picked by the EMA's accuracy
    best = max(rows, key=lambda r: r["ema_test_acc"])
    assert run.summary["best"]["epoch"] == best["epoch"]
    # the EMA weights, loaded back, give the logged EMA figure
    from vislab.report import load_run

    loaded = load_run(run.run_dir, device="cpu", checkpoint="last")
    assert loaded.weights == "ema"  # picked by checkpoint_metric
    logits, labels, _ = loaded.predictions(save=False)
    assert 100 * float((logits.argmax(1) == labels).float().mean()) == pytest.approx(rows[-1]["ema_test_acc"])
    raw_run = load_run(run.run_dir, device="cpu", checkpoint="last", weights="raw")
    logits, labels, _ = raw_run.predictions(save=False)
    assert 100 * float((logits.argmax(1) == labels).float().mean()) == pytest.approx(rows[-1]["test_acc"])


def test_resume_continues_the_same_average(tmp_path, tiny_overrides):
    from vislab.engine import Callback

    class StopAfterTwo(Callback):
        def on_epoch_end(self, trainer, row):
            if row["epoch"] == 2:
                trainer.should_stop = True

    ov = _overrides(tiny_overrides, **{"trainer.deterministic": True})
    straight = vislab.train("quick", ov, out=tmp_path / "a")
    vislab.train("quick", ov, out=tmp_path / "b", callbacks=[StopAfterTwo()])
    resumed = vislab.train(resume=tmp_path / "b")
    assert [r["ema_test_loss"] for r in resumed.history] == [r["ema_test_loss"] for r in straight.history]
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last")["ema"]
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last")["ema"]
    assert a["updates"] == b["updates"]
    assert all(torch.equal(a["module"][k], b["module"][k]) for k in a["module"])


def test_report_says_which_weights_its_figures_use(tmp_path, tiny_overrides):
    from vislab.report import make_report

    run = vislab.train("quick", _overrides(tiny_overrides, **{"trainer.epochs": 2}), out=tmp_path / "r")
    text = make_report(run.run_dir, n=2, preview=0, robust_images=0).markdown.read_text()
    assert "moving average of its weights (decay 0.9)" in text and "use the trained (raw) weights" in text
    text = make_report(run.run_dir, n=2, preview=0, robust_images=0, weights="ema").markdown.read_text()
    assert "the moving average (EMA) of its weights" in text
    numbers = json.loads((run.run_dir / "report.json").read_text())
    best = run.summary["best"]["epoch"]
    assert numbers["test_acc"] == pytest.approx(run.history[best - 1]["ema_test_acc"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"trainer.checkpoint_metric": "ema_test_acc"}, "trainer.ema_decay"),
        ({"trainer.ema_decay": 1.0}, "ema_decay"),
        ({"trainer.ema_decay": 0.9, "trainer.checkpoint_metric": "ema_val_acc"}, "data.val_size"),
    ],
)
def test_ema_settings_are_checked_before_anything_runs(tmp_path, tiny_overrides, overrides, message):
    with pytest.raises(ConfigError, match=message):
        vislab.train("quick", {**tiny_overrides, **overrides}, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_loading_ema_weights_from_a_run_without_them_is_refused(tmp_path, tiny_overrides):
    from vislab.errors import VislabError
    from vislab.report import load_run

    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1}, out=tmp_path / "r")
    with pytest.raises(VislabError, match="no moving average"):
        load_run(run.run_dir, device="cpu", weights="ema")
