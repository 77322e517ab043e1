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
    train_one_epoch,
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
    sched = create_scheduler(
        opt, "onecycle", epochs=6, steps_per_epoch=10, max_lr=0.4, peak_epoch=2, div_factor=10, final_div_factor=100
    )
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
    sched = create_scheduler(
        opt,
        "plateau",
        epochs=10,
        steps_per_epoch=1,
        monitor="test_acc",
        mode="max",
        patience=1,
        factor=0.5,
        threshold=0.1,
        threshold_mode="abs",
    )
    for acc in (50.0, 50.05, 50.08):  # improvements below the 0.1 abs threshold count as plateau
        sched.step_epoch({"test_acc": acc, "test_loss": 1.0})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
)
def test_optimizers_by_name(name, cls):
    opt = create_optimizer(nn.Linear(2, 2), name, 0.01, weight_decay=1e-4)
    assert isinstance(opt, cls) and opt.param_groups[0]["weight_decay"] == 1e-4


def test_unknown_optimizer_and_scheduler():
    with pytest.raises(ConfigError, match="optim.name"):
        create_optimizer(nn.Linear(2, 2), "lion")
    with pytest.raises(ConfigError, match="sched.name"):
        create_scheduler(create_optimizer(nn.Linear(2, 2)), "poly", epochs=1, steps_per_epoch=1)


class _NormNet(nn.Module):
    """Every kind of parameter once: conv weight and bias, BatchNorm scale and shift, a frozen norm, a linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.gn.weight.requires_grad_(False)  # frozen: in no group
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.gn(self.bn(self.conv(x))).relu()
        return self.fc(x.mean((2, 3)))


def _groups_by_name(opt) -> dict[str, dict]:
    return {g["name"]: g for g in opt.param_groups}


def test_parameter_groups_split_biases_norms_and_weights():
    m = _NormNet()
    opt = create_optimizer(
        m, "sgd", 0.1, weight_decay=0.01, bias_lr_scale=64, bias_weight_decay=0.0, norm_weight_decay=0.001
    )
    g = _groups_by_name(opt)
    ids = {name: [id(p) for p in grp["params"]] for name, grp in g.items()}
    # One group per distinct (LR scale, weight decay), the plain weights first (the LR the trainer logs).
    assert list(g) == ["weights", "norm", "norm_bias+bias"]
    assert ids["weights"] == [id(m.conv.weight), id(m.fc.weight)]
    assert ids["norm"] == [id(m.bn.weight)]  # gn.weight is frozen
    assert ids["norm_bias+bias"] == [id(m.conv.bias), id(m.bn.bias), id(m.gn.bias), id(m.fc.bias)]  # model order
    assert [(grp["lr"], grp["lr_scale"], grp["weight_decay"]) for grp in g.values()] == [
        (0.1, 1.0, 0.01),
        (0.1, 1.0, 0.001),
        (6.4, 64, 0.0),
    ]
    # bias_weight_decay unset: a norm's shift takes norm_weight_decay, another bias weight_decay.
    g = _groups_by_name(create_optimizer(m, "adamw", 0.1, weight_decay=0.01, norm_weight_decay=0.0))
    assert [(n, grp["weight_decay"]) for n, grp in g.items()] == [("weights+bias", 0.01), ("norm+norm_bias", 0.0)]
    assert [id(p) for p in g["norm+norm_bias"]["params"]] == [id(m.bn.weight), id(m.bn.bias), id(m.gn.bias)]
    # The defaults: one group in model order, the optimizer (and checkpoint layout) the course recipes had.
    (only,) = create_optimizer(m, "sgd", 0.1, weight_decay=0.01).param_groups
    assert [id(p) for p in only["params"]] == [id(p) for p in m.parameters() if p.requires_grad]


def test_schedulers_keep_the_groups_lr_ratio():
    def ratios(opt):
        lrs = [g["lr"] for g in opt.param_groups]
        return [lr / lrs[0] for lr in lrs]

    opt = create_optimizer(_NormNet(), "sgd", 0.1, bias_lr_scale=64)
    sched = create_scheduler(opt, "onecycle", epochs=2, steps_per_epoch=10, peak_fraction=0.3)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        assert ratios(opt) == pytest.approx([1, 64])
        opt.step()
        sched.step_batch()
    assert max(seen) == pytest.approx(0.1)  # the base LR peaks at optim.lr (max_lr unset), the biases at 6.4

    opt = create_optimizer(_NormNet(), "sgd", 1.0, bias_lr_scale=4)
    sched = create_scheduler(opt, "plateau", epochs=9, steps_per_epoch=1, patience=0, factor=0.5, min_lr=0.3)
    for _ in range(4):
        sched.step_epoch({"test_loss": 1.0})
    # Halved each epoch down to the floor, which scales with the group too.
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.3, 1.2])


def test_lr_range_test_sweeps_every_group_at_its_ratio():
    from vislab.tuner import LRFinder

    torch.manual_seed(0)
    model = _NormNet()
    opt = create_optimizer(model, "sgd", 1e-5, bias_lr_scale=8)
    x, y = torch.randn(16, 3, 6, 6), torch.arange(16) % 3
    seen = []

    class Loader:
        def __len__(self):
            return 4

        def __iter__(self):
            for i in range(4):
                seen.append([g["lr"] for g in opt.param_groups])  # drawn after the sweep set this step's LR
                yield x[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]

    before = [g["lr"] for g in opt.param_groups]
    finder = LRFinder(model, opt, Loader(), device="cpu")
    res = finder.range_test(start_lr=1e-4, end_lr=1e-1, num_iter=12, diverge_th=1e9)
    assert len(seen) == 12 and all(b == pytest.approx(8 * a) for a, b in seen)
    assert [a for a, _ in seen] == pytest.approx(res["lr"])  # the recorded LR is the base LR
    assert [g["lr"] for g in opt.param_groups] == before  # restored


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
    for f in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "lr_steps.json",
        "checkpoints/last/model.safetensors",
        "checkpoints/best/state.pt",
    ):
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] == [r["epoch"] for r in run.history]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_ce", "train_acc", "test_loss", "test_acc", "seconds"}
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
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        ]

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


def test_resumed_run_in_a_folder_of_its_own_still_names_its_recipe(tiny_overrides, tmp_path):
    # A variant's folder (e.g. runs/resnet9-onecycle-lr0027) is not named after its recipe; resuming must not rename it.
    out = tmp_path / "quick-lr-trial"
    vislab.train("quick", {**tiny_overrides, "trainer.epochs": 2}, out=out, callbacks=[_StopAfter(1)])
    vislab.train(resume=out)
    first_line = (out / "config.yaml").read_text().splitlines()[0]
    assert first_line.startswith("# vislab ") and first_line.endswith(" resolved config of recipe 'quick'")
    assert json.loads((out / "summary.json").read_text())["recipe"] == "quick"


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
    ov = {
        **tiny_overrides,
        "sched.name": "none",
        "optim.lr": 1e12,
        "optim.momentum": 0.0,
        "optim.nesterov": False,
        "trainer.epochs": 1,
        "model.norm": "group",
        "model.groups": 1,
    }
    with pytest.raises(TrainingDiverged, match="epoch 1.*optim.grad_clip"):
        vislab.train("quick", ov, out=tmp_path / "run")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precisions_and_memory_formats_train(tiny_overrides, tmp_path, precision):
    run = vislab.train(
        "quick",
        {
            **tiny_overrides,
            "trainer.epochs": 1,
            "trainer.precision": precision,
            "trainer.channels_last": precision == "bf16",
        },
        out=tmp_path / precision,
    )
    assert run.summary["precision"] == precision and math.isfinite(run.history[0]["test_loss"])


def _one_batch_setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x = torch.randn(16, 3, 8, 8)
    y = torch.arange(16) % 3
    return model, DeviceLoader(x, y, 16, lambda b, g: b)


def _one_step(model, loader, lr: float = 0.0, **options) -> dict:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return train_one_epoch(
        model,
        loader,
        opt,
        device=torch.device("cpu"),
        precision=resolve_precision("fp32", torch.device("cpu")),
        **options,
    )


def test_label_smoothing_and_l1_are_in_the_objective_and_train_ce_is_plain(one_thread):
    model, loader = _one_batch_setup()
    with torch.no_grad():
        model[2].weight.mul_(30)  # confident logits: smoothing then moves the loss well away from the plain CE
    x, y = next(iter(loader))
    with torch.no_grad():
        logits = model(x)
    plain = F.cross_entropy(logits, y).item()
    smoothed = F.cross_entropy(logits, y, label_smoothing=0.2).item()
    l1_term = 1e-3 * sum(p.abs().sum() for p in model.parameters() if p.ndim > 1).item()
    out = _one_step(model, loader, label_smoothing=0.2, l1=1e-3)
    assert out["train_loss"] == pytest.approx(smoothed + l1_term, rel=1e-5)
    assert out["train_ce"] == pytest.approx(plain, rel=1e-5)
    assert smoothed + l1_term - plain > 0.05  # the two really differ: the check above can tell them apart
    assert _one_step(model, loader)["train_loss"] == pytest.approx(plain, rel=1e-5)  # options off: the plain CE


def test_grad_clip_bounds_the_step(one_thread):
    model, loader = _one_batch_setup()
    before = [p.detach().clone() for p in model.parameters()]

    def step_norm(m) -> float:
        return torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(m.parameters(), before))).item()

    _one_step(model, loader, lr=1.0, grad_clip=0.01)  # plain SGD at lr 1: the step is minus the (clipped) gradient
    clipped = step_norm(model)
    model2, _ = _one_batch_setup()
    _one_step(model2, loader, lr=1.0)
    assert clipped == pytest.approx(0.01, rel=1e-3) and step_norm(model2) > 0.1


def test_albumentations_backend_really_augments_training_batches(tiny_overrides):
    from vislab.build import build_loaders

    # Flip every image, nothing else: each training input must be the mirror image of a normalized data set image.
    _, cfg = vislab.load_config(
        "quick",
        {
            **tiny_overrides,
            "augment.backend": "albumentations",
            "augment.workers": 0,
            "augment.crop_pad": 0,
            "augment.flip_p": 1.0,
        },
    )
    ds = vislab.load_dataset("imagefolder", tiny_overrides["data.root"], cache_dir=tiny_overrides["data.cache_dir"])
    train, _, _ = build_loaders(cfg, ds, torch.device("cpu"), False, 0)
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    originals = (ds.train_x.float() / 255 - mean) / std  # (N, 3, H, W)
    seen: list[torch.Tensor] = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    model.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach().clone()))
    _one_step(model, train, lr=0.01)
    inputs = torch.cat(seen)
    assert len(inputs) == len(train) * train.batch_size

    def nearest(imgs: torch.Tensor) -> torch.Tensor:  # distance of each input to its closest original
        return torch.cdist(imgs.flatten(1), originals.flatten(1)).min(1).values

    # Mirrored back, every input is an original (up to albumentations' float rounding of Normalize).
    assert nearest(inputs.flip(-1)).max() < 0.1
    assert nearest(inputs).min() > 1.0  # as given, none is (the synthetic images are not symmetric)


def test_train_writes_report_unless_switched_off(tiny_overrides, tmp_path, monkeypatch):
    import vislab.report
    from vislab.cli import main

    devices = []
    real = vislab.report.write_report
    monkeypatch.setattr(vislab.report, "write_report", lambda *a, **k: devices.append(k.get("device")) or real(*a, **k))
    run = vislab.train("quick", {**tiny_overrides, "trainer.epochs": 1, "trainer.report": True}, out=tmp_path / "r")
    html = (run.run_dir / "report.html").read_text()
    assert (run.run_dir / "report.md").is_file() and "Grad-CAM" in html
    assert devices == ["cpu"]  # the device the run trained on (trainer.device), not "auto"
    sets = [a for k, v in tiny_overrides.items() for a in ("--set", f"{k}={v}")]
    assert (
        main(
            [
                "train",
                *sets,
                "--set",
                "trainer.epochs=1",
                "--set",
                "trainer.report=true",
                "--no-report",
                "--out",
                str(tmp_path / "n"),
            ]
        )
        == 0
    )
    assert not (tmp_path / "n" / "report.html").exists()
    # `vislab report` rebuilds it on demand from the run folder.
    assert main(["report", str(tmp_path / "n")]) == 0
    assert (tmp_path / "n" / "report.html").is_file()
