"""Engine: metrics, schedules, checkpoints, exact resume, run folders."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vislab
from vislab.engine import (
    Callback,
    DeviceLoader,
    create_optimizer,
    create_scheduler,
    evaluate,
    load_checkpoint,
    resolve_precision,
)
from vislab.engine.trainer import TrainingDiverged
from vislab.errors import ConfigError, VislabError


def _identity_transform(x, g):
    return x.float() / 255


def test_evaluate_is_mean_per_sample_loss_over_uneven_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = torch.randint(0, 256, (23, 3, 4, 4), dtype=torch.uint8)
    y = torch.randint(0, 5, (23,))
    loader = DeviceLoader(x, y, 10, _identity_transform)  # batches of 10, 10, 3
    out = evaluate(model, loader, device=torch.device("cpu"), precision=resolve_precision("fp32", torch.device("cpu")))
    with torch.no_grad():
        logits = model(x.float() / 255)
    assert out["test_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert out["test_acc"] == pytest.approx(100 * (logits.argmax(1) == y).float().mean().item())


def test_device_loader_covers_every_sample_once_per_epoch():
    x = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 3, 1, 1).contiguous()
    y = torch.arange(50)
    g = torch.Generator().manual_seed(1)
    loader = DeviceLoader(x, y, 8, lambda b, gen: b, shuffle=True, drop_last=False, generator=g)
    seen = torch.cat([yb for _, yb in loader])
    assert sorted(seen.tolist()) == list(range(50)) and seen.tolist() != list(range(50))
    assert len(loader) == 7 and len(DeviceLoader(x, y, 8, _identity_transform, drop_last=True)) == 6
    second = torch.cat([yb for _, yb in loader])
    assert second.tolist() != seen.tolist()  # a fresh permutation each epoch


def test_onecycle_peaks_at_the_stated_epoch():
    model = nn.Linear(2, 2)
    opt = create_optimizer(model, "sgd", 0.1)
    sched = create_scheduler(opt, "onecycle", epochs=6, steps_per_epoch=10, max_lr=0.4, peak_epoch=2, div_factor=10, final_div_factor=100)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step_batch()
    peak = max(range(60), key=lrs.__getitem__)
    # torch's OneCycleLR reaches max_lr on the last step of the peak epoch (step 2 * 10 - 1).
    assert peak == 19 and lrs[peak] == pytest.approx(0.4)
    assert lrs[0] == pytest.approx(0.04) and lrs[-1] < 0.04 / 50


def test_plateau_reduces_after_patience_on_accuracy():
    model = nn.Linear(2, 2)
    opt = create_optimizer(model, "sgd", 1.0)
    sched = create_scheduler(opt, "plateau", epochs=10, steps_per_epoch=1, monitor="test_acc", mode="max", patience=1, factor=0.5, threshold=0.1, threshold_mode="abs")
    for acc in (50.0, 50.05, 50.08):  # improvements below the 0.1 abs threshold count as plateau
        sched.step_epoch({"test_acc": acc, "test_loss": 1.0})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_optimizers_by_name(name, cls):
    opt = create_optimizer(nn.Linear(2, 2), name, 0.01, weight_decay=1e-4)
    assert isinstance(opt, cls) and opt.param_groups[0]["weight_decay"] == 1e-4


def test_unknown_optimizer_and_scheduler():
    with pytest.raises(ConfigError, match="optim.name"):
        create_optimizer(nn.Linear(2, 2), "lion")
    with pytest.raises(ConfigError, match="sched.name"):
        create_scheduler(create_optimizer(nn.Linear(2, 2)), "poly", epochs=1, steps_per_epoch=1)


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu).dtype is None
    assert resolve_precision("bf16", cpu).dtype is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        resolve_precision("fp16", cpu)


def test_train_writes_run_folder_and_learns(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 4, "optim.lr": 0.1, "sched.max_lr": 0.1}, out=out)
    assert run.run_dir == out
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "lr_steps.json", "checkpoints/last/model.safetensors", "checkpoints/best/state.pt"):
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] == [r["epoch"] for r in run.history]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}
    # The synthetic classes are separable: a few epochs must beat chance (33%) clearly.
    assert rows[-1]["test_acc"] > 60
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["test_acc"] == max(r["test_acc"] for r in rows)
    assert summary["final"] == rows[-1] and summary["device"] == "cpu"
    # The saved config reproduces the run's config.
    assert vislab.load_config(out / "config.yaml")[1] == run.config
    lrs = json.loads((out / "lr_steps.json").read_text())
    assert len(lrs) == 4 * (72 // 16) and max(lrs) == pytest.approx(0.1)


class _StopAfter(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == self.epoch:
            trainer.should_stop = True


def test_resume_after_interruption_matches_uninterrupted_run(tiny_overrides, tmp_path):
    from vislab.cli import main

    ov = {**tiny_overrides, "trainer.deterministic": True, "augment.rotate_deg": 5, "augment.cutout_size": 4}
    full = vislab.train("quick", ov, out=tmp_path / "full")
    vislab.train("quick", ov, out=tmp_path / "part", callbacks=[_StopAfter(1)])
    assert len((tmp_path / "part" / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["train", "--resume", str(tmp_path / "part")]) == 0

    def rows(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    assert rows("part") == rows("full") and len(rows("full")) == 2
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.history[-1]["test_acc"] == rows("part")[-1]["test_acc"]


def test_resume_drops_rows_without_checkpoint(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    vislab.train("quick", {**tiny_overrides, "trainer.deterministic": True}, out=out, callbacks=[_StopAfter(1)])
    # As if killed after metrics.jsonl got row 2 but before checkpoints/last did.
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "test_acc": -1}) + "\n")
    run = vislab.train(resume=out)
    assert [r["epoch"] for r in run.history] == [1, 2] and run.history[1]["test_acc"] >= 0


def test_best_checkpoint_tracks_metric(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 3}, out=out)
    best = load_checkpoint(out / "checkpoints" / "best")
    assert best["best_metric"] == max(r["test_acc"] for r in run.history)
    assert best["epoch"] == best["best_epoch"]


def test_existing_run_folder_is_never_overwritten(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1}, out=out)
    assert run.run_dir == tmp_path / "run-1" and (out / "precious.txt").read_text() == "keep"


def test_bad_config_leaves_no_run_folder(tiny_overrides, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError):
        vislab.train("quick", {**tiny_overrides, "trainer.epochs": 0}, out=out)
    with pytest.raises(VislabError):
        vislab.train("quick", {**tiny_overrides, "data.root": str(tmp_path / "missing")}, out=out)
    assert not out.exists()


def test_divergence_is_reported(tiny_overrides, tmp_path):
    ov = {**tiny_overrides, "sched.name": "none", "optim.lr": 1e12, "optim.momentum": 0.0, "optim.nesterov": False, "trainer.epochs": 1, "model.norm": "group", "model.groups": 1}
    with pytest.raises(TrainingDiverged, match="epoch 1.*optim.grad_clip"):
        vislab.train("quick", ov, out=tmp_path / "run")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precisions_and_memory_formats_train(tiny_overrides, tmp_path, precision):
    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1, "trainer.precision": precision, "trainer.channels_last": precision == "bf16"}, out=tmp_path / precision)
    assert run.summary["precision"] == precision and math.isfinite(run.history[0]["test_loss"])


def test_albumentations_backend_trains(tiny_overrides, tmp_path):
    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1, "augment.backend": "albumentations", "augment.workers": 0}, out=tmp_path / "albu")
    assert run.history[0]["epoch"] == 1 and math.isfinite(run.history[0]["train_loss"])


def test_l1_clip_and_smoothing_options_run(tiny_overrides, tmp_path):
    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1, "optim.l1": 1e-5, "optim.grad_clip": 1.0, "optim.label_smoothing": 0.1, "optim.name": "adamw", "optim.lr": 0.003, "sched.name": "cosine"}, out=tmp_path / "r")
    assert math.isfinite(run.history[0]["train_loss"])


def test_train_writes_report_unless_switched_off(tiny_overrides, tmp_path):
    from vislab.cli import main

    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1, "trainer.report": True}, out=tmp_path / "r")
    html = (run.run_dir / "report.html").read_text()
    assert (run.run_dir / "report.md").is_file() and "Grad-CAM" in html
    sets = [a for k, v in tiny_overrides.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", *sets, "--set", "trainer.epochs=1", "--set", "trainer.report=true", "--no-report", "--out", str(tmp_path / "n")]) == 0
    assert not (tmp_path / "n" / "report.html").exists()
    # `vislab report` rebuilds it on demand from the run folder.
    assert main(["report", str(tmp_path / "n")]) == 0
    assert (tmp_path / "n" / "report.html").is_file()
