"""Test-time augmentation: the views and their weights, the end-of-training figures, report and robustness."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vislab
from vislab.errors import ConfigError
from vislab.explain import TTA_MODES, check_tta, tta_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()


def test_flip_averages_the_image_and_its_mirror():
    m, x = _model(), torch.randn(3, 3, 8, 8)
    assert torch.allclose(tta_logits(m, x, "flip"), 0.5 * m(x) + 0.5 * m(x.flip(-1)), atol=1e-6)
    assert torch.equal(tta_logits(m, x, "none"), m(x))


def test_flip_translate_weights_six_views_as_airbench():
    m, x = _model(), torch.randn(2, 3, 8, 8)

    def mirror(v):
        return 0.5 * m(v) + 0.5 * m(v.flip(-1))

    # One-pixel shifts taken from a reflect pad: up-left is rows/cols 0..7 of the padded image, down-right 2..9.
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :8, :8], padded[..., 2:, 2:]
    assert torch.equal(up_left[..., 1:, 1:], x[..., :-1, :-1]) and torch.equal(
        down_right[..., :-1, :-1], x[..., 1:, 1:]
    )
    want = 0.5 * mirror(x) + 0.25 * mirror(up_left) + 0.25 * mirror(down_right)
    assert torch.allclose(tta_logits(m, x, "flip_translate"), want, atol=1e-6)


def test_a_mirror_symmetric_model_gains_nothing_from_flip():
    class Symmetric(nn.Module):
        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3)), x.abs().mean((1, 2, 3))], 1)

    x = torch.randn(4, 3, 6, 6)
    assert torch.allclose(tta_logits(Symmetric(), x, "flip"), Symmetric()(x), atol=1e-6)


def test_unknown_mode_is_a_config_error():
    assert TTA_MODES == ("none", "flip", "flip_translate")
    with pytest.raises(ConfigError, match="flip_translate"):
        check_tta("mirror")


def test_the_cli_choices_are_the_modes():
    from vislab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for cmd in ("report", "robust"):
        action = next(a for a in sub.choices[cmd]._actions if a.dest == "tta")
        assert tuple(action.choices) == TTA_MODES


@pytest.fixture(scope="module")
def tta_run(tmp_path_factory):
    from conftest import make_imagefolder, tiny_config

    tmp = tmp_path_factory.mktemp("tta")
    root = make_imagefolder(tmp / "data", train_per_class=24, test_per_class=8)
    more = {"data.val_size": 12, "trainer.tta": "flip", "trainer.ema_decay": 0.9, "sched.name": "none"}
    overrides = tiny_config(root, tmp / "cache", **more)
    return vislab.train("quick", overrides, out=tmp / "run")


def test_training_reports_tta_beside_the_plain_figures(tta_run):
    from vislab.report import load_run

    tta = tta_run.summary["tta"]
    final = tta_run.history[-1]
    assert tta["mode"] == "flip" and tta["epoch"] == 2
    # the plain figures of the same weights are metrics.jsonl's; the TTA ones are computed apart
    assert tta["test_acc"] == pytest.approx(final["test_acc"]) and tta["ema_test_acc"] == pytest.approx(
        final["ema_test_acc"]
    )
    run = load_run(tta_run.run_dir, device="cpu", checkpoint="last", weights="raw")
    logits, labels, _ = run.predictions(tta="flip", save=False)
    assert tta["tta_test_acc"] == pytest.approx(100 * float((logits.argmax(1) == labels).double().mean()))
    assert tta["tta_test_loss"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)
    assert "tta_test_acc" not in final  # never mixed into the per-epoch log
    # The wall time covers the TTA evaluation too, which is also timed on its own.
    s = tta_run.summary
    assert tta["seconds"] > 0 and s["wall_seconds"] >= s["train_seconds"] + tta["seconds"]


def test_report_shows_plain_and_tta_with_their_own_temperatures_and_caches_apart(tta_run):
    from vislab.explain import fit_temperature
    from vislab.report import load_run, make_report

    run_dir = tta_run.run_dir
    rep = make_report(run_dir, n=2, preview=0, robust_images=12)
    text = rep.markdown.read_text()
    assert "## Test-time augmentation (flip)" in text and "| TTA (flip) |" in text
    numbers = rep.numbers["tta"]
    assert numbers["plain"]["test_acc"] == pytest.approx(rep.numbers["test_acc"])
    assert (run_dir / "predictions.pt").is_file() and (run_dir / "predictions-tta-flip.pt").is_file()
    stored = json.loads((run_dir / "calibration-tta-flip.json").read_text())
    run = load_run(run_dir, device="cpu")
    val = run.predict(run.dataset.val_x, "flip")
    assert stored["temperature"]["value"] == pytest.approx(fit_temperature(val, run.dataset.val_y), rel=1e-6)
    rob = json.loads((run_dir / "robustness-tta-flip.json").read_text())
    assert rob["tta"] == "flip" and rob["images"] == 12
    assert numbers["tta"]["mean_corruption_acc"] == pytest.approx(rob["mean_corruption_acc"])
