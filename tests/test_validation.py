"""The validation split (data.val_size): held out of train, class-balanced, seeded; what reads it and what never does."""

from __future__ import annotations

import json

import pytest
import torch

import vislab
from vislab.data import load_dataset, with_validation_split
from vislab.errors import ConfigError, DataError


def _load(overrides: dict, **kwargs):
    return load_dataset("imagefolder", overrides["data.root"], cache_dir=overrides["data.cache_dir"], **kwargs)


def _rows_of(x: torch.Tensor) -> set[bytes]:
    return {bytes(img.flatten().tolist()) for img in x}


def test_validation_split_is_held_out_of_train_balanced_and_seeded(tiny_overrides):
    full = _load(tiny_overrides)
    ds = _load(tiny_overrides, val_size=9, val_seed=1)
    assert len(ds.train_y) == len(full.train_y) - 9 and len(ds.val_y) == 9
    assert torch.bincount(ds.val_y, minlength=3).tolist() == [3, 3, 3]
    # Disjoint from what trains, and together they are the whole training split.
    assert not _rows_of(ds.val_x) & _rows_of(ds.train_x)
    assert _rows_of(ds.val_x) | _rows_of(ds.train_x) == _rows_of(full.train_x)
    assert torch.equal(ds.test_x, full.test_x)  # the test split is never touched
    # Seeded: the same seed gives the same split, another seed another one.
    assert torch.equal(_load(tiny_overrides, val_size=9, val_seed=1).val_x, ds.val_x)
    assert _rows_of(_load(tiny_overrides, val_size=9, val_seed=2).val_x) != _rows_of(ds.val_x)
    # Mean/std describe the images that train, not the held-out ones.
    assert ds.mean != full.mean


def test_validation_batches_mix_the_classes_even_for_class_ordered_folders(tiny_overrides):
    # Image folders are stored class by class: the first batches of a split kept in that order hold one class.
    ds = _load(tiny_overrides, val_size=30, val_seed=0)
    assert len(set(ds.val_y[:6].tolist())) >= 2 and len(set(ds.val_y[:15].tolist())) == 3


def test_train_size_counts_what_trains_after_the_validation_split(tiny_overrides):
    ds = _load(tiny_overrides, val_size=6, train_size=30)
    assert len(ds.train_y) == 30 and len(ds.val_y) == 6
    assert not _rows_of(ds.val_x) & _rows_of(ds.train_x)


def test_bad_validation_sizes_are_named(tiny_overrides):
    with pytest.raises(DataError, match="data.val_size = 72 leaves no training images"):
        _load(tiny_overrides, val_size=72)
    with pytest.raises(ConfigError, match="data.val_size = -1"):
        _load(tiny_overrides, val_size=-1)
    with pytest.raises(DataError, match="already has a validation split"):
        with_validation_split(_load(tiny_overrides, val_size=3), 3)


@pytest.mark.parametrize("key,value", [("trainer.checkpoint_metric", "val_acc"), ("sched.monitor", "val_loss")])
def test_monitoring_validation_metrics_needs_a_validation_split(key, value):
    over = {key: value, "sched.name": "plateau"} if key == "sched.monitor" else {key: value}
    with pytest.raises(ConfigError, match=f"{key} = {value} needs a validation split: set data.val_size"):
        vislab.load_config("quick", over)
    _, cfg = vislab.load_config("quick", {**over, "data.val_size": 100})
    assert cfg.data.val_size == 100


def test_range_test_never_reads_the_test_split(tiny_overrides):
    ov = {**tiny_overrides, "lr_find.num_iter": 12, "lr_find.measure": "accuracy"}
    with pytest.raises(ConfigError, match="lr_find.measure = accuracy needs a validation split"):
        vislab.lr_find("quick", ov)
    # With a validation split the held-out measure reads it: accuracies over its 15 images (the test split has 24).
    finder = vislab.lr_find(
        "quick", {**ov, "data.val_size": 15, "lr_find.val_batches": 1, "trainer.eval_batch_size": 30}
    )
    counts = [a * 15 / 100 for a in finder.results["val_acc"]]
    assert len(counts) >= 11 and all(c == pytest.approx(round(c), abs=1e-6) for c in counts)
    assert any(a * 24 / 100 != pytest.approx(round(a * 24 / 100), abs=1e-6) for a in finder.results["val_acc"])


def test_training_logs_validation_columns_and_can_pick_best_by_them(tiny_overrides, tmp_path):
    ov = {**tiny_overrides, "data.val_size": 12, "trainer.checkpoint_metric": "val_loss", "trainer.report": True}
    run = vislab.train("quick", ov, out=tmp_path / "r")
    rows = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all({"val_loss", "val_acc", "test_loss", "test_acc"} <= set(r) for r in rows)
    assert all(
        r["val_acc"] * 12 / 100 == pytest.approx(round(r["val_acc"] * 12 / 100), abs=1e-6) for r in rows
    )  # over 12 images
    best = min(rows, key=lambda r: r["val_loss"])
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["best"]["epoch"] == best["epoch"] and summary["best_metric"] == "val_loss"
    assert summary["dataset"]["val_images"] == 12 and summary["dataset"]["train_images"] == 60
    md = (run.run_dir / "report.md").read_text()
    assert "| val loss | val acc (%) |" in md and "optimistic" not in md  # chosen on validation: no warning
    # The report reloads the data with the same split, so it normalizes as training did: its recomputed
    # test accuracy of the best checkpoint is the logged one.
    numbers = json.loads((run.run_dir / "report.json").read_text())
    assert numbers["test_acc"] == pytest.approx(best["test_acc"], abs=1e-4)
    from vislab.report import load_run

    loaded = load_run(run.run_dir)
    assert loaded.dataset.mean == _load(tiny_overrides, val_size=12).mean != _load(tiny_overrides).mean
