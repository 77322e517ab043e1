"""DDP through torchrun on CPU (Gloo, 2 processes): same result as one process, rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import vislab
from vislab.build import build_model
from vislab.engine import DeviceLoader, evaluate, load_checkpoint, resolve_precision

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# Every random augmentation on: a 2-process run matches a 1-process run only if each image of a
# global batch gets the same crop, flip, angle and hole as in the 1-process run.
AUGMENT_ON = {"augment.crop_pad": 2, "augment.flip_p": 0.5, "augment.rotate_deg": 10, "augment.cutout_size": 4}


@pytest.fixture
def ddp_overrides(tiny_overrides):
    # GroupNorm (no cross-sample statistics) and fp32: a 2-process step then computes the same mean
    # gradient as a 1-process step over the same global batch.
    return {
        **tiny_overrides,
        **AUGMENT_ON,
        "model.norm": "group",
        "model.groups": 4,
        "trainer.precision": "fp32",
        "data.test_size": 21,
        "trainer.eval_batch_size": 8,
    }


def _interleave(shards: list[torch.Tensor]) -> torch.Tensor:
    # Rank r holds positions r, r + N, r + 2N, ... of the global batch.
    out = torch.empty((sum(len(s) for s in shards), *shards[0].shape[1:]), dtype=shards[0].dtype)
    for r, s in enumerate(shards):
        out[r :: len(shards)] = s
    return out


def _spec_and_data():
    from vislab.augment import AugmentSpec

    spec = AugmentSpec(crop_pad=2, flip_p=0.5, rotate_deg=10.0, cutout_size=(4, 4))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 3, 12, 12), dtype=torch.uint8, generator=g)
    return spec, x, torch.arange(40)


def test_device_loader_shards_carry_the_one_process_augmentation():
    from vislab.augment import TensorAugment

    spec, x, y = _spec_and_data()
    aug = TensorAugment(spec, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def batches(rank: int, world: int) -> list:
        gen = torch.Generator().manual_seed(7)
        return list(
            DeviceLoader(x, y, 8, aug, shuffle=True, drop_last=True, generator=gen, rank=rank, world_size=world)
        )

    one, r0, r1 = batches(0, 1), batches(0, 2), batches(1, 2)
    assert len(one) == len(r0) == len(r1) == 5
    for (xo, yo), (x0, y0), (x1, y1) in zip(one, r0, r1):
        assert torch.equal(_interleave([y0, y1]), yo)
        assert torch.equal(_interleave([x0, x1]), xo)
        assert not torch.equal(x0, x1)  # the draws differ between ranks (they were equal before the fix)


def test_albumentations_shards_carry_the_one_process_augmentation():
    from vislab.augment import albumentations_loader

    spec, x, y = _spec_and_data()

    def batches(rank: int, world: int) -> list:
        loader = albumentations_loader(
            x,
            y,
            spec,
            (0.5,) * 3,
            (0.25,) * 3,
            batch_size=8 // world,
            shuffle=True,
            num_workers=0,
            seed=7,
            drop_last=True,
            rank=rank,
            world_size=world,
        )
        return list(loader)

    one, r0, r1 = batches(0, 1), batches(0, 2), batches(1, 2)
    assert len(one) == len(r0) == len(r1) == 5
    for (xo, yo), (x0, y0), (x1, y1) in zip(one, r0, r1):
        assert torch.equal(_interleave([y0, y1]), yo)
        torch.testing.assert_close(_interleave([x0, x1]), xo)


def _sets(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]


def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "vislab",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd, env=ENV)


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb]
    for x, y in zip(ra, rb):
        for k in ("lr", "train_loss", "train_ce", "train_acc", "test_loss", "test_acc"):
            assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-5), k
    wa, wb = load_checkpoint(a / "checkpoints" / "last")["model"], load_checkpoint(b / "checkpoints" / "last")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)


def test_child_processes_import_the_vislab_under_test(tmp_path):
    # The parity tests compare a torchrun child with this process: both must run the same code and recipes.
    r = subprocess.run(
        [sys.executable, "-c", "import vislab; print(vislab.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert Path(r.stdout.strip()).resolve() == Path(vislab.__file__).resolve()


def test_two_processes_match_one_and_only_rank0_writes(ddp_overrides, tmp_path):
    r = _torchrun(["train", "quick", *_sets(ddp_overrides), "--out", str(tmp_path / "two")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    one = vislab.train("quick", ddp_overrides, out=tmp_path / "one").run_dir
    _assert_same_run(tmp_path / "two", one)
    # One run folder, one row per epoch, one printed folder (rank 0's).
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "data" and p.name != "cache") == [
        "one",
        "two",
    ]
    assert len(_rows(tmp_path / "two")) == ddp_overrides["trainer.epochs"]
    assert r.stdout.strip().splitlines().count(str(tmp_path / "two")) == 1
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2


def test_reported_accuracy_covers_the_whole_test_set(ddp_overrides, tmp_path):
    ov = {**ddp_overrides, "trainer.epochs": 1, "optim.lr": 0.01, "sched.name": "none"}
    r = _torchrun(["train", "quick", *_sets(ov), "--out", str(tmp_path / "two")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    _, cfg = vislab.load_config(tmp_path / "two" / "config.yaml")
    ds = vislab.load_dataset("imagefolder", ov["data.root"], test_size=21, cache_dir=ov["data.cache_dir"])
    model = build_model(cfg, ds.num_classes)
    model.load_state_dict(load_checkpoint(tmp_path / "two" / "checkpoints" / "last")["model"])
    from vislab.augment import TensorAugment
    from vislab.build import augment_spec

    aug = TensorAugment(augment_spec(cfg), ds.mean, ds.std)
    loader = DeviceLoader(ds.test_x, ds.test_y, 5, lambda x, g: aug.normalize_only(x))
    single = evaluate(
        model, loader, device=torch.device("cpu"), precision=resolve_precision("fp32", torch.device("cpu"))
    )
    row = _rows(tmp_path / "two")[-1]
    # 21 test images split 11 / 10 between the ranks: the reduced figures are over all 21.
    assert row["test_acc"] == pytest.approx(single["test_acc"]) and row["test_loss"] == pytest.approx(
        single["test_loss"], rel=1e-5
    )


def test_resume_two_process_run_with_one_process(ddp_overrides, tmp_path):
    ov = {**ddp_overrides, "sched.name": "step", "sched.step_size": 1, "sched.gamma": 0.5, "optim.lr": 0.05}
    r = _torchrun(
        ["train", "quick", *_sets({**ov, "trainer.epochs": 1}), "--out", str(tmp_path / "mixed")], cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = vislab.train(resume=tmp_path / "mixed", overrides={"trainer.epochs": 2}).run_dir
    one = vislab.train("quick", {**ov, "trainer.epochs": 2}, out=tmp_path / "one").run_dir
    _assert_same_run(resumed, one)


def test_a_one_process_run_killed_inside_an_epoch_resumes_under_torchrun(ddp_overrides, tmp_path):
    from vislab.engine import Callback

    class KillAt6(Callback):  # inside epoch 2 (4 steps per epoch), after a mid-epoch checkpoint at step 5
        def on_batch_end(self, trainer, batch_idx, loss):
            if trainer.global_step == 6:
                raise SystemExit("killed")

    ov = {**ddp_overrides, "trainer.epochs": 2}
    with pytest.raises(SystemExit):
        vislab.train("quick", {**ov, "trainer.checkpoint_minutes": 1e-9}, out=tmp_path / "mixed", callbacks=[KillAt6()])
    # Mid-epoch saves are for one process: the resume under torchrun switches them off.
    r = _torchrun(
        ["train", "--resume", str(tmp_path / "mixed"), "--set", "trainer.checkpoint_minutes=null"], cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "inside epoch 2 of 2, after its step 1" in r.stderr
    # The saved sums of epoch 2's first step count once, not once per rank.
    _assert_same_run(tmp_path / "mixed", vislab.train("quick", ov, out=tmp_path / "one").run_dir)


def test_batch_size_must_split_evenly(ddp_overrides, tmp_path):
    r = _torchrun(
        ["train", "quick", *_sets({**ddp_overrides, "trainer.batch_size": 15}), "--out", str(tmp_path / "odd")],
        cwd=tmp_path,
    )
    assert r.returncode != 0 and "divisible by the 2 processes" in r.stderr
    assert not (tmp_path / "odd").exists()


def test_sync_bn_on_cpu_is_refused_before_the_run_folder(ddp_overrides, tmp_path):
    ov = {**ddp_overrides, "model.norm": "batch", "trainer.sync_bn": "true"}
    r = _torchrun(["train", "quick", *_sets(ov), "--out", str(tmp_path / "sbn")], cwd=tmp_path)
    assert r.returncode != 0
    assert "trainer.sync_bn = true needs GPU processes" in r.stderr and "trains on cpu" in r.stderr
    assert "SyncBatchNorm expected input" not in r.stderr  # torch's own mid-step error never reached
    assert not (tmp_path / "sbn").exists()


def test_albumentations_workers_are_split_between_the_processes_of_one_machine(tiny_overrides, monkeypatch):
    from vislab.build import build_loaders
    from vislab.engine import DistInfo

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    _, cfg = vislab.load_config("quick", {**tiny_overrides, "augment.backend": "albumentations"})
    ds = vislab.load_dataset("imagefolder", tiny_overrides["data.root"], cache_dir=tiny_overrides["data.cache_dir"])
    sizes = {}
    for local in (1, 4):
        dist_info = DistInfo(rank=0, world_size=8, local_rank=0, local_world_size=local)
        train, _, _ = build_loaders(cfg, ds, torch.device("cpu"), False, 0, dist_info)
        sizes[local] = train.num_workers
    assert sizes == {1: 16, 4: 4}  # 4 ranks on one 16-core machine: 4 workers each, not 16
    _, cfg = vislab.load_config("quick", {**tiny_overrides, "augment.backend": "albumentations", "augment.workers": 3})
    train, _, _ = build_loaders(cfg, ds, torch.device("cpu"), False, 0, DistInfo(0, 8, 0, 4))
    assert train.num_workers == 3  # an explicit count is per process, as configured
