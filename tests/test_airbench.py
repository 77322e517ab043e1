"""airbench: the model, its patch-whitening first layer and its wiring into training (config, build, resume, summary)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vislab
from vislab.build import (
    build_model,
    build_training,
    load_data,
    optimizer_kwargs,
    range_test_optimizer_kwargs,
    whitening_images,
)
from vislab.config import load_config
from vislab.engine import Callback, create_optimizer, load_checkpoint
from vislab.errors import ConfigError
from vislab.models import create_model
from vislab.models.airbench import AirBench

pytestmark = pytest.mark.usefixtures("one_thread")

AIRBENCH = {"model.name": "airbench", "model.width": 0.25}  # 16 / 64 / 64 channels: seconds on one core


def _correlated_images(n: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth, channel-mixed, off-centre images: their 2x2 patches' second moment is far from the identity,
    and a little white noise keeps every direction's variance well above the whitening's eps."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.randn(n, 3, 6, 6, generator=g), size=(16, 16), mode="bilinear", align_corners=False)
    mix = torch.tensor([[1.0, 0.8, 0.6], [0.0, 0.6, 0.5], [0.0, 0.0, 0.4]])
    x = torch.einsum("dc,nchw->ndhw", mix, x) + 0.5
    return x + 0.1 * torch.randn(x.shape, generator=g)  # (n, 3, 16, 16)


def _second_moment(rows: torch.Tensor) -> torch.Tensor:
    rows = rows.double()
    return rows.T @ rows / rows.shape[0]


def _patches(x: torch.Tensor) -> torch.Tensor:
    return F.unfold(x, kernel_size=2).transpose(1, 2).reshape(-1, 12)  # (N * L, 3 * 2 * 2)


def _outputs(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = conv(x)  # (N, 24, H - 1, W - 1), before the GELU
    return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])


# --- the whitening layer -----------------------------------------------------------------------


def test_whitening_makes_the_patch_second_moment_the_identity() -> None:
    x = _correlated_images()
    patches = _second_moment(_patches(x))
    assert (patches - torch.eye(12, dtype=torch.float64)).abs().max() > 0.5  # far from white to begin with
    model = create_model("airbench", width=0.125)
    model.init_whitening(x, eps=0.0)
    out = _outputs(model.whiten, x)
    torch.testing.assert_close(_second_moment(out[:, :12]), torch.eye(12, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])  # the same directions with the other sign, for the GELU
    assert not model.whiten.bias.any()

    # With airbench's eps each direction keeps lambda / (lambda + eps) of its variance, strongest first.
    model.init_whitening(x)
    eigvals = torch.linalg.eigvalsh(patches).flip(0)
    expected = torch.diag(eigvals / (eigvals + 5e-4))
    torch.testing.assert_close(_second_moment(_outputs(model.whiten, x)[:, :12]), expected, atol=1e-4, rtol=0)
    assert expected.diagonal().min() > 0.9


def test_whitening_filters_are_deterministic_and_sign_fixed() -> None:
    x = _correlated_images()
    a, b = create_model("airbench", width=0.125), create_model("airbench", width=0.125)
    a.init_whitening(x)
    b.init_whitening(x.flip(0))  # the same patches in another order
    torch.testing.assert_close(a.whiten.weight, b.whiten.weight)
    first = a.whiten.weight[:12].reshape(12, -1)
    # Each filter's largest entry is positive, whatever sign the eigen-solver returned.
    assert (first.gather(1, first.abs().argmax(1, keepdim=True)) > 0).all()
    with pytest.raises(ValueError, match="init_whitening"):
        a.init_whitening(x[:, :2])


def test_whitening_layer_and_norm_scales_stay_frozen_under_the_optimizer() -> None:
    model = create_model("airbench", width=0.125)
    model.init_whitening(_correlated_images())
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert {"whiten.weight", "whiten.bias", "block1.norm1.weight", "block3.norm2.weight"} <= set(frozen)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = create_optimizer(model, "sgd", 0.1, weight_decay=0.1, bias_lr_scale=64, bias_weight_decay=0.1 / 64)
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_groups for p in model.parameters() if not p.requires_grad)
    for _ in range(2):
        loss = F.cross_entropy(model(torch.randn(8, 3, 16, 16)), torch.arange(8) % 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in frozen.items())
    assert all(not torch.equal(after[n], p) for n, p in trained.items())


def test_airbench_matches_the_reference_architecture() -> None:
    model = create_model("airbench")
    assert model.whiten.kernel_size == (2, 2) and model.whiten.padding == (0, 0) and model.whiten.out_channels == 24
    assert [b.conv2.out_channels for b in (model.block1, model.block2, model.block3)] == [64, 256, 256]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6 and all(m.eps == 1e-12 and m.momentum == 0.4 for m in norms)
    assert model.fc.bias is None and model.logit_scale == pytest.approx(1 / 9)
    assert isinstance(model.act, nn.GELU) and isinstance(model.block1.act, nn.GELU)
    # dirac_init: the first min(in, out) filters of every 3x3 conv start as the identity.
    w = model.block1.conv2.weight
    assert torch.equal(w[:, :, 1, 1], torch.eye(64)) and not w[:, :, 0].any()
    assert torch.equal(model.block1.conv1.weight[:24, :, 1, 1], torch.eye(24))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 256, 3, 3)
    wide = create_model("airbench", widths=(32, 64, 128), width=0.5, logit_scale=0.5, dirac_init=False)
    assert [b.conv2.out_channels for b in (wide.block1, wide.block2, wide.block3)] == [16, 32, 64]
    assert wide.logit_scale == 0.5 and (wide.block1.conv2.weight[:, :, 1, 1] != torch.eye(16)).any()
    trainable = create_model("airbench", width=0.125, train_norm_scale=True)
    assert all(m.weight.requires_grad for m in trainable.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize(("kwargs", "field"), [({"widths": (64, 256)}, "model.widths"), ({"norm_eps": 0}, "norm_eps")])
def test_bad_airbench_options_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        create_model("airbench", **kwargs)


# --- config and build ----------------------------------------------------------------------------


def test_config_keys_reach_model_and_optimizer(tiny_overrides) -> None:
    ov = {
        **tiny_overrides,
        **AIRBENCH,
        "model.widths": [8, 16, 32],
        "model.bn_momentum": 0.3,
        "model.logit_scale": 0.5,
        "optim.bias_lr_scale": 64,
        "optim.bias_weight_decay": 1e-5,
        "optim.norm_weight_decay": 0.0,
    }
    cfg = load_config("quick", ov)[1]
    model = build_model(cfg, 3)
    assert [b.conv2.out_channels for b in (model.block1, model.block2, model.block3)] == [2, 4, 8]  # x 0.25
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.3}
    assert model.logit_scale == 0.5
    want = {"bias_lr_scale": 64, "bias_weight_decay": 1e-5, "norm_weight_decay": 0.0}
    assert want.items() <= optimizer_kwargs(cfg.optim).items()
    assert want.items() <= range_test_optimizer_kwargs(cfg, 1e-6).items()
    resnet = build_model(load_config("quick", {**tiny_overrides, "model.bn_momentum": 0.3})[1], 3)
    assert {m.momentum for m in resnet.modules() if isinstance(m, nn.BatchNorm2d)} == {0.3}


def test_build_training_whitens_from_a_seeded_sample_without_touching_the_rng(tiny_overrides) -> None:
    cfg = load_config("quick", {**tiny_overrides, **AIRBENCH})[1]
    ds = load_data(cfg)
    cpu = torch.device("cpu")
    model = build_training(cfg, ds, cpu, False)[0]
    rng_fresh = torch.get_rng_state()
    reference = create_model("airbench", num_classes=3, width=0.25)
    reference.init_whitening(whitening_images(ds, cfg.trainer.seed))
    torch.testing.assert_close(model.whiten.weight, reference.whiten.weight)
    images = whitening_images(ds, cfg.trainer.seed)
    assert images.dtype == torch.float32 and images.shape == ds.train_x.shape  # fewer than 5,000: all of them
    assert abs(images.mean()) < 0.05  # normalized as training normalizes

    resumed = build_training(cfg, ds, cpu, False, fresh=False)[0]  # the checkpoint would carry the weights
    assert not torch.equal(resumed.whiten.weight, model.whiten.weight)
    assert torch.equal(torch.get_rng_state(), rng_fresh)  # the whitening draws from its own generator


# --- training, resume and the CLI ----------------------------------------------------------------


class _StopAfter(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == self.epoch:
            trainer.should_stop = True


def test_airbench_trains_and_resumes_exactly(tiny_overrides, tmp_path, monkeypatch) -> None:
    ov = {
        **tiny_overrides,
        **AIRBENCH,
        "trainer.deterministic": True,
        "optim.bias_lr_scale": 8,
        "optim.bias_weight_decay": 5e-4 / 8,
        "optim.lr": 0.05,
        "sched.max_lr": 0.05,
    }
    full = vislab.train("quick", ov, out=tmp_path / "full")
    vislab.train("quick", ov, out=tmp_path / "part", callbacks=[_StopAfter(1)])

    def no_whitening(self, images, eps=0.0):
        raise AssertionError("a resumed run re-whitened its first layer")

    monkeypatch.setattr(AirBench, "init_whitening", no_whitening)
    vislab.train(resume=tmp_path / "part")

    def rows(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert rows("part") == rows("full") and len(rows("full")) == 2
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Trained: the loss fell and the weights moved, while the whitening layer is still the data's.
    assert rows("full")[1]["train_loss"] < rows("full")[0]["train_loss"]
    ds = load_data(full.config)
    monkeypatch.undo()
    reference = create_model("airbench", num_classes=3, width=0.25)
    reference.init_whitening(whitening_images(ds, 0))
    torch.testing.assert_close(a["whiten.weight"], reference.whiten.weight)


def test_summary_command_shows_airbench(capsys) -> None:
    from vislab.cli import main

    assert main(["summary", "airbench", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 1,972,792" in out and "Trainable params: 1,971,328" in out
    assert "whiten" in out and "block3" in out and "[1, 256, 3, 3]" in out
