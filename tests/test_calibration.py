"""Calibration metrics, temperature scaling on the validation split, and the report's calibration section."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from vislab.explain import calibration, fit_temperature, reliability_bins


def _logits_for(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def test_metrics_match_a_hand_computed_case():
    # Four predictions, two classes, 2 bins: [0, 0.5) and [0.5, 1].
    probs = [[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]]
    labels = torch.tensor([0, 1, 1, 0])
    c = calibration(_logits_for(probs), labels, bins=2)
    # top-1 confidences 0.9, 0.8, 0.6, 0.7, all in the upper bin; right, wrong, right, wrong.
    assert [b.count for b in c.bins] == [0, 4]
    assert c.bins[1].confidence == pytest.approx(0.75) and c.bins[1].accuracy == pytest.approx(0.5)
    assert c.ece == pytest.approx(0.25) and c.mce == pytest.approx(0.25)
    assert c.accuracy == pytest.approx(50.0)
    assert c.nll == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.6) + math.log(0.3)) / 4)
    brier = ((0.1**2 + 0.1**2) + (0.8**2 + 0.8**2) + (0.4**2 + 0.4**2) + (0.7**2 + 0.7**2)) / 4
    assert c.brier == pytest.approx(brier)


def test_ece_and_mce_match_torchmetrics_without_torchvision():
    from torchmetrics.classification import MulticlassCalibrationError

    # torchmetrics is the test-only reference; it must not drag torchvision in (it cannot be imported here).
    assert "torchvision" not in sys.modules
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 10, generator=g) * 3
    labels = torch.randint(0, 10, (2000,), generator=g)
    ours = calibration(logits, labels, bins=15)
    for norm, value in (("l1", ours.ece), ("max", ours.mce)):
        ref = MulticlassCalibrationError(num_classes=10, n_bins=15, norm=norm)(logits.softmax(1), labels)
        assert value == pytest.approx(float(ref), abs=1e-5), norm


def test_reliability_bins_keep_every_prediction_and_put_certainty_in_the_last_bin():
    conf = torch.tensor([0.0, 0.05, 0.1, 0.5, 0.99, 1.0])
    correct = torch.tensor([False, True, True, False, True, True])
    bins = reliability_bins(conf, correct, bins=10)
    assert sum(b.count for b in bins) == 6
    assert bins[-1].count == 2 and bins[-1].accuracy == 1.0  # 0.99 and 1.0
    assert bins[1].count == 1 and bins[0].count == 2  # 0.1 opens bin 1; 0.0 and 0.05 are in bin 0
    assert math.isnan(bins[3].accuracy)  # an empty bin has no accuracy


def test_fitted_temperature_recovers_the_temperature_the_labels_were_drawn_with():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(20000, 10, generator=g) * 4
    for true_t in (0.5, 2.0):
        labels = torch.multinomial((logits / true_t).softmax(1), 1, generator=g)[:, 0]
        t = fit_temperature(logits, labels)
        assert t == pytest.approx(true_t, rel=0.05)
        nll = calibration(logits, labels, temperature=t).nll
        assert nll <= calibration(logits, labels, temperature=t * 1.1).nll
        assert nll <= calibration(logits, labels, temperature=t / 1.1).nll


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5000, 10, generator=g) * 2
    labels = torch.multinomial(logits.softmax(1), 1, generator=g)[:, 0]
    overconfident = logits * 3  # the same ranking, three times too sure
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert calibration(overconfident, labels, temperature=t).ece < calibration(overconfident, labels).ece / 3


@pytest.fixture(scope="module")
def val_run(tmp_path_factory, one_thread):
    import vislab
    from conftest import make_imagefolder, tiny_config

    tmp = tmp_path_factory.mktemp("cal")
    root = make_imagefolder(tmp / "data", train_per_class=30, test_per_class=10)
    overrides = tiny_config(root, tmp / "cache", **{"data.val_size": 30})
    vislab.train("quick", overrides, out=tmp / "run")
    return tmp / "run", overrides


def test_report_fits_the_temperature_on_the_validation_split_and_predict_can_read_it(val_run):
    from vislab.explain import predict
    from vislab.report import load_run, make_report
    from vislab.rundir import CALIBRATION_FILE, find_checkpoint, read_temperature

    run_dir, _ = val_run
    rep = make_report(run_dir, n=2, preview=0, robust_images=0)
    cal = rep.numbers["calibration"]
    run = load_run(run_dir, device="cpu")
    val_logits = predict(run.model, run.dataset.val_x, run.normalize)
    expected = fit_temperature(val_logits, run.dataset.val_y)
    assert cal["temperature"] == pytest.approx(expected, rel=1e-6)
    assert cal["val_images"] == 30
    test_logits, test_labels, _ = run.predictions()
    # The fitted value is the validation split's, not the test split's.
    assert abs(fit_temperature(test_logits, test_labels) - expected) > 1e-3
    assert cal["scaled"]["ece"] == pytest.approx(
        calibration(test_logits, test_labels, temperature=expected).ece, abs=1e-9
    )
    text = rep.markdown.read_text()
    assert "## Calibration" in text and "Temperature scaling" in text and "reliability.png" in text
    assert (rep.markdown.parent / "report" / "confidence.png").is_file()
    stored = json.loads((run_dir / CALIBRATION_FILE).read_text())
    assert stored["temperature"]["value"] == pytest.approx(expected, rel=1e-6)
    assert read_temperature(run_dir, find_checkpoint(run_dir)) == pytest.approx(expected, rel=1e-6)
    # A temperature belongs to its checkpoint: the other checkpoint has none.
    assert find_checkpoint(run_dir).name == "best"
    assert read_temperature(run_dir, run_dir / "checkpoints" / "last") is None


def test_calibration_cache_skips_the_validation_pass_and_follows_the_checkpoint(val_run, monkeypatch):
    from vislab.report import _trust, load_run
    from vislab.report._trust import calibrate_run

    run_dir, _ = val_run
    run = load_run(run_dir, device="cpu")
    logits, labels, _ = run.predictions()
    first = calibrate_run(run, logits, labels)
    calls = []
    real = _trust._predict
    monkeypatch.setattr(_trust, "_predict", lambda r, x, tta="none": calls.append(len(x)) or real(r, x, tta))
    again = calibrate_run(run, logits, labels)
    assert again.cached and calls == [] and again.temperature == first.temperature
    # Another checkpoint (other weights) fits its own temperature.
    other = load_run(run_dir, device="cpu", checkpoint="last")
    o_logits, o_labels, _ = other.predictions(save=False)
    assert not calibrate_run(other, o_logits, o_labels, save=False).cached and calls == [30]


def test_a_run_without_a_validation_split_reports_calibration_and_how_to_get_a_temperature(tmp_path, tiny_overrides):
    import vislab
    from vislab.report import make_report
    from vislab.rundir import find_checkpoint, read_temperature

    out = tmp_path / "run"
    vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1}, out=out)
    rep = make_report(out, n=2, preview=0, robust_images=0)
    cal = rep.numbers["calibration"]
    assert cal["temperature"] is None and cal["scaled"] is None
    assert cal["plain"]["images"] == 24 and 0 <= cal["plain"]["ece"] <= 1
    text = rep.markdown.read_text()
    assert "## Calibration" in text and "data.val_size" in text
    assert read_temperature(out, find_checkpoint(out)) is None
