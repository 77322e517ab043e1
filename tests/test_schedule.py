"""OneCycle as configured: peak by epoch or fraction, checked against the real step count, momentum cycling."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch import nn

import vislab
from vislab.engine import create_optimizer, create_scheduler, onecycle_peak_fraction
from vislab.errors import ConfigError


def _lrs_and_momenta(opt_name: str = "sgd", steps: int = 80, **kwargs) -> tuple[list[float], list[float]]:
    model = nn.Linear(2, 2)
    opt = create_optimizer(model, opt_name, 0.1, momentum=0.9)
    sched = create_scheduler(opt, "onecycle", epochs=8, steps_per_epoch=steps // 8, max_lr=0.4, **kwargs)
    key = "momentum" if opt_name == "sgd" else "betas"
    lrs, moms = [], []
    for _ in range(steps):
        g = opt.param_groups[0]
        lrs.append(g["lr"])
        moms.append(g[key] if key == "momentum" else g[key][0])
        opt.step()
        sched.step_batch()
    return lrs, moms


def test_peak_fraction_gives_the_same_schedule_as_the_equivalent_peak_epoch():
    by_epoch, _ = _lrs_and_momenta(peak_epoch=2)
    by_fraction, _ = _lrs_and_momenta(peak_fraction=0.25)
    assert by_epoch == by_fraction
    assert (
        max(by_fraction) == pytest.approx(0.4) and by_fraction.index(max(by_fraction)) == 19
    )  # 25% of 80 steps: torch ends the warm-up at step 20 - 1
    default, _ = _lrs_and_momenta()
    assert default.index(max(default)) == 23  # 30% of 80 steps: torch's pct_start, phase end at step 24 - 1


def test_shortened_recipe_keeps_its_shape():
    # quick states its peak as a fraction: a 2-epoch smoke test is accepted and peaks at 25% of it.
    _, cfg = vislab.load_config("quick", {"trainer.epochs": 2})
    assert (
        cfg.sched.peak_epoch is None
        and onecycle_peak_fraction(2, 10, cfg.sched.peak_epoch, cfg.sched.peak_fraction) == 0.25
    )


def test_peak_epoch_that_no_longer_fits_names_the_overrides_that_would():
    with pytest.raises(Exception) as e:
        vislab.load_config("resnet9-onecycle", {"trainer.epochs": 4})
    msg = str(e.value)
    assert "sched.peak_epoch = 5" in msg and "--set sched.peak_epoch=null --set sched.peak_fraction=" in msg
    _, cfg = vislab.load_config(
        "resnet9-onecycle", {"trainer.epochs": 4, "sched.peak_epoch": None, "sched.peak_fraction": 0.2}
    )
    assert cfg.sched.peak_fraction == 0.2


def test_peak_epoch_and_fraction_together_are_refused():
    with pytest.raises(Exception, match="sched.peak_epoch = 2 and sched.peak_fraction = 0.5"):
        vislab.load_config("quick", {"sched.peak_epoch": 2, "sched.peak_fraction": 0.5})


def test_overriding_one_form_of_the_peak_replaces_the_recipes_other_form():
    _, cfg = vislab.load_config("quick", ["sched.peak_epoch=3"])  # quick states peak_fraction
    assert (cfg.sched.peak_epoch, cfg.sched.peak_fraction) == (3, None)
    _, cfg = vislab.load_config("resnet9-onecycle", {"sched.peak_fraction": 0.5})  # states peak_epoch
    assert (cfg.sched.peak_epoch, cfg.sched.peak_fraction) == (None, 0.5)


@pytest.mark.parametrize("epochs,steps,peak", [(2, 1, 1.0), (1, 1, 0.5), (3, 1, 0.3)])
def test_onecycle_too_short_for_its_warmup_is_a_config_error(epochs, steps, peak):
    with pytest.raises(ConfigError, match="warm-up needs more than one step"):
        onecycle_peak_fraction(epochs, steps, peak_epoch=peak)
    # torch itself would divide by zero (or run a negative warm-up) on these
    opt = create_optimizer(nn.Linear(2, 2), "sgd", 0.1)
    with pytest.raises(ConfigError):
        create_scheduler(opt, "onecycle", epochs=epochs, steps_per_epoch=steps, peak_epoch=peak)


def test_short_onecycle_run_is_refused_before_the_run_folder(tiny_overrides, tmp_path):
    # 72 training images at batch 64 with drop_last: one optimizer step per epoch, as in the issue.
    ov = {**tiny_overrides, "trainer.batch_size": 64, "trainer.epochs": 2, "sched.peak_epoch": 1}
    sets = [a for k, v in ov.items() for a in ("--set", f"{k}={v}")]
    r = subprocess.run(
        [sys.executable, "-m", "vislab", "train", "quick", *sets, "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "ZeroDivisionError" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]  # earlier lines are the data set's log
    assert "sched.peak_epoch = 1 puts the OneCycle peak at optimizer step 1 of 2" in last
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_cycle_momentum_is_what_the_optimizer_runs_with(opt_name):
    lrs, moms = _lrs_and_momenta(
        opt_name, peak_fraction=0.25, cycle_momentum=True, base_momentum=0.8, max_momentum=0.97
    )
    peak = lrs.index(max(lrs))
    assert (
        moms[0] == pytest.approx(0.97)
        and moms[peak] == pytest.approx(0.8)
        and moms[-1] == pytest.approx(0.97, abs=1e-3)
    )
    _, fixed = _lrs_and_momenta(opt_name, peak_fraction=0.25, cycle_momentum=False)
    assert set(fixed) == {0.9}  # optim.momentum / betas[0], untouched by OneCycle


def test_lr_range_test_sweeps_with_the_momentum_onecycle_uses_at_its_peak(tiny_overrides, tmp_path):
    ov = {**tiny_overrides, "lr_find.num_iter": 12, "sched.base_momentum": 0.8, "optim.momentum": 0.9}
    finder = vislab.lr_find("quick", ov)
    assert finder.optimizer.param_groups[0]["momentum"] == pytest.approx(0.8)
    finder = vislab.lr_find("quick", {**ov, "sched.cycle_momentum": False})
    assert finder.optimizer.param_groups[0]["momentum"] == pytest.approx(0.9)


def test_report_states_the_peak_and_the_momentum_training_used(tiny_overrides, tmp_path):
    # peak_epoch null (the documented default) once crashed the report's config table.
    ov = {
        **tiny_overrides,
        "trainer.report": True,
        "sched.peak_epoch": None,
        "sched.peak_fraction": None,
        "sched.base_momentum": 0.8,
    }
    run = vislab.train("quick", ov, out=tmp_path / "r")
    md = (run.run_dir / "report.md").read_text()
    assert "peak at 30% of the run (epoch 0.6 of 2)" in md
    assert "momentum cycled by OneCycle 0.95 -> 0.8 at the peak -> 0.95 nesterov" in md
    # best chosen by test_acc (the default): the report says the best figure is optimistic and gives the final one
    assert "chosen by test_acc on the test split itself, so its test figure is optimistic" in md
