"""MixUp / CutMix in training: the mixed loss, the labelled train accuracy, switching off, resume, the report."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vislab
from vislab.engine import Precision, train_one_epoch
from vislab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")
FP32 = Precision("fp32", None, False)


def test_the_loss_and_accuracy_of_a_mixed_batch_are_lam_weighted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.randn(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    lam = torch.tensor(0.3)
    mixed = torch.lerp(x.flip(0), x, lam)

    def mix(xb, yb):
        return torch.lerp(xb.flip(0), xb, lam), yb, yb.flip(0), lam

    with torch.no_grad():
        logits = model(mixed)
    want_loss = float(0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y.flip(0)))
    pred = logits.argmax(1)
    want_acc = 100 * float(0.3 * (pred == y).float().mean() + 0.7 * (pred == y.flip(0)).float().mean())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights the loss was measured with stay
    out = train_one_epoch(model, [(x, y)], opt, device=torch.device("cpu"), precision=FP32, mix=mix)
    assert out["train_loss"] == pytest.approx(want_loss, rel=1e-5)
    assert out["train_ce"] == pytest.approx(want_loss, rel=1e-5)
    assert out["train_acc"] == pytest.approx(want_acc)
    assert out["train_mixed"] is True
    plain = train_one_epoch(model, [(x, y)], opt, device=torch.device("cpu"), precision=FP32)
    assert "train_mixed" not in plain


def _ov(tiny_overrides: dict, **more) -> dict:
    return {**tiny_overrides, "trainer.epochs": 3, "sched.name": "none", "optim.lr": 0.05, **more}


@pytest.mark.parametrize("kind", ["augment.mixup_alpha", "augment.cutmix_alpha"])
def test_a_run_mixes_until_the_last_epochs_and_says_so(tmp_path, tiny_overrides, kind):
    run = vislab.train("quick", _ov(tiny_overrides, **{kind: 1.0, "augment.mix_off_epochs": 1}), out=tmp_path / "r")
    assert [bool(r.get("train_mixed")) for r in run.history] == [True, True, False]
    # the mixed epochs' train loss is measured on mixed batches: different from a run without mixing
    plain = vislab.train("quick", _ov(tiny_overrides), out=tmp_path / "p")
    assert run.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"])


def test_mixing_resumes_exactly(tmp_path, tiny_overrides):
    from vislab.engine import Callback

    class StopAfterOne(Callback):
        def on_epoch_end(self, trainer, row):
            if row["epoch"] == 1:
                trainer.should_stop = True

    ov = _ov(tiny_overrides, **{"augment.mixup_alpha": 0.4, "augment.cutmix_alpha": 1.0, "trainer.deterministic": True})
    straight = vislab.train("quick", ov, out=tmp_path / "a")
    vislab.train("quick", ov, out=tmp_path / "b", callbacks=[StopAfterOne()])
    resumed = vislab.train(resume=tmp_path / "b")
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]


def test_report_labels_mixed_train_figures_and_names_the_mixing(tmp_path, tiny_overrides):
    from vislab.report import make_report

    run = vislab.train(
        "quick", _ov(tiny_overrides, **{"augment.mixup_alpha": 0.2, "trainer.epochs": 2}), out=tmp_path / "r"
    )
    text = make_report(run.run_dir, n=2, preview=0, robust_images=0).markdown.read_text()
    assert "train acc on mixed data (%)" in text and "MixUp alpha 0.2" in text


def test_mixing_off_for_the_whole_run_is_refused(tmp_path, tiny_overrides):
    with pytest.raises(ConfigError, match="mix_off_epochs"):
        vislab.train(
            "quick",
            _ov(tiny_overrides, **{"augment.mixup_alpha": 1.0, "augment.mix_off_epochs": 3}),
            out=tmp_path / "r",
        )
