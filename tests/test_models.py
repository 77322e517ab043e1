"""Tests for vislab.models: registry, architectures, options, Grad-CAM layer and summary."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vislab.errors import ConfigError
from vislab.models import (
    _registry,
    count_parameters,
    create_model,
    format_mult_adds,
    get_target_layer,
    list_models,
    model_summary,
    register_model,
)

NORMS = ("batch", "group", "layer")
SMALL = 0.125  # width multiplier that keeps the big models fast on 2 CPU cores


def _conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k  # convs have no bias


def _norm(c: int) -> int:
    return 2 * c  # weight + bias per channel, for BatchNorm and GroupNorm alike


def _resnet_params(layers: tuple[int, ...], num_classes: int = 10) -> int:
    """Parameters of the CIFAR BasicBlock ResNet, from the architecture."""
    total = _conv(3, 64) + _norm(64)  # stem
    cin = 64
    for blocks, c in zip(layers, (64, 128, 256, 512)):
        for _ in range(blocks):
            total += _conv(cin, c) + _norm(c) + _conv(c, c) + _norm(c)
            if cin != c:  # the stride-2 first block of stages 2-4: 1x1 projection shortcut
                total += _conv(cin, c, k=1) + _norm(c)
            cin = c
    return total + 512 * num_classes + num_classes  # linear with bias


def _resnet9_params(num_classes: int = 10) -> int:
    """Parameters of Page's ResNet-9, written out layer by layer."""
    prep = _conv(3, 64) + _norm(64)
    layer1 = _conv(64, 128) + _norm(128) + 2 * (_conv(128, 128) + _norm(128))
    layer2 = _conv(128, 256) + _norm(256)
    layer3 = _conv(256, 512) + _norm(512) + 2 * (_conv(512, 512) + _norm(512))
    fc = 512 * num_classes  # no bias
    return prep + layer1 + layer2 + layer3 + fc


def _airbench_params(num_classes: int = 10, widths: tuple[int, int, int] = (64, 256, 256)) -> int:
    """Parameters of airbench94's net, written out layer by layer (frozen ones included)."""
    total = 24 * 3 * 2 * 2 + 24  # whitening conv with bias: 2 signs x 3 channels x 2 x 2 patch directions
    cin = 24
    for c in widths:
        total += _conv(cin, c) + _norm(c) + _conv(c, c) + _norm(c)
        cin = c
    return total + cin * num_classes  # no bias


def _capture(module: nn.Module) -> tuple[list[torch.Tensor], torch.utils.hooks.RemovableHandle]:
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    return outputs, handle


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- registry ---------------------------------------------------------------------------------


def test_list_models_sorted_and_complete() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"airbench", "resnet9", "resnet18", "resnet34"} <= set(names)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="model.name") as err:
        create_model("resnet1000")
    assert "resnet1000" in str(err.value)
    for name in list_models():
        assert name in str(err.value)


def test_register_model_adds_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_MODEL_ENTRYPOINTS", dict(_registry._MODEL_ENTRYPOINTS))

    @register_model
    def aaa_tiny(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))

    assert list_models()[0] == "aaa_tiny"
    model = create_model("aaa_tiny", num_classes=3)
    assert model(torch.zeros(2, 3, 4, 4)).shape == (2, 3)

    def aaa_other() -> nn.Module:
        return nn.Identity()

    aaa_other.__name__ = "aaa_tiny"  # same name, different function
    with pytest.raises(ValueError, match="aaa_tiny"):
        register_model(aaa_other)


# --- every model x every norm -------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name: str, norm: str) -> None:
    model = create_model(name, num_classes=7, norm=norm, width=SMALL)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert logits.dtype == torch.float32
    logits.logsumexp(1).mean().backward()
    for pname, p in model.named_parameters():
        if not p.requires_grad:  # frozen by design (airbench's whitening layer and norm scales)
            assert p.grad is None, pname
            continue
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", list_models())
def test_outputs_are_logits_not_probabilities(name: str) -> None:
    model = create_model(name, width=SMALL).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    assert (out < 0).any()
    assert not torch.allclose(out.sum(1), torch.ones(4), atol=1e-3)


@pytest.mark.parametrize("norm", NORMS)
def test_norm_factory_builds_the_requested_layers(norm: str) -> None:
    model = create_model("resnet18", norm=norm, width=0.75)  # 48-channel stem: 32 does not divide it
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    gns = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    if norm == "batch":
        assert bns and not gns
        return
    assert gns and not bns
    for gn in gns:
        assert gn.num_channels % gn.num_groups == 0
        if norm == "layer":
            assert gn.num_groups == 1
        else:  # the largest divisor of the channel count not above groups=32
            assert gn.num_groups == max(g for g in range(1, 33) if gn.num_channels % g == 0)
    if norm == "group":
        assert {gn.num_groups for gn in gns} == {24, 32}  # 48 -> 24; 96, 192, 384 -> 32


def test_groups_option_is_used() -> None:
    model = create_model("resnet9", norm="group", groups=4, width=SMALL)
    assert {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)} == {4}


# --- parameter counts ---------------------------------------------------------------------------


def test_reference_formula_matches_published_resnet18_count() -> None:
    assert _resnet_params((2, 2, 2, 2)) == 11_173_962


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", _resnet_params((2, 2, 2, 2))),
        ("resnet34", _resnet_params((3, 4, 6, 3))),
        ("resnet9", _resnet9_params()),
        ("airbench", _airbench_params()),
    ],
)
def test_parameter_counts(name: str, expected: int, norm: str) -> None:
    assert count_parameters(create_model(name, norm=norm)) == expected


def test_parameter_counts_follow_num_classes() -> None:
    assert count_parameters(create_model("resnet18", num_classes=100)) == _resnet_params((2, 2, 2, 2), 100)
    assert count_parameters(create_model("resnet9", num_classes=100)) == _resnet9_params(100)
    assert count_parameters(create_model("airbench", num_classes=100)) == _airbench_params(100)


def test_count_parameters_trainable_only() -> None:
    model = create_model("resnet9", width=SMALL)
    total = count_parameters(model)
    model.fc.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - model.fc.weight.numel()
    assert count_parameters(model) == total


# --- options ------------------------------------------------------------------------------------


# Convs whose channel count the width leaves alone: airbench's whitening filters are 2 x 3 x 2 x 2 patch directions.
FIXED_WIDTH = {"airbench": {"whiten"}}
FINAL_CHANNELS = {"airbench": 256}  # at width 1; the ResNets end at 512


@pytest.mark.parametrize("name", list_models())
def test_width_scales_channels(name: str) -> None:
    model, half = create_model(name, width=0.25), create_model(name, width=0.5)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    half_convs = [m for m in half.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0][1].out_channels == (24 if name == "airbench" else 16)  # the stem: 64 * 0.25
    for (cname, conv), wider in zip(convs, half_convs, strict=True):
        fixed = cname in FIXED_WIDTH.get(name, ())
        assert conv.out_channels == (wider.out_channels if fixed else wider.out_channels // 2), cname
    outputs, handle = _capture(get_target_layer(model))
    model(torch.randn(2, 3, 32, 32))
    handle.remove()
    final = FINAL_CHANNELS.get(name, 512) // 4
    assert outputs[0].shape[1] == final
    assert model.fc.in_features == final
    assert count_parameters(model) < count_parameters(half)


@pytest.mark.parametrize("last_stride", [2, 1])
def test_last_stride_sets_final_map_size(last_stride: int) -> None:
    model = create_model("resnet18", width=SMALL, last_stride=last_stride)
    outputs, handle = _capture(get_target_layer(model))
    logits = model(torch.randn(2, 3, 32, 32))
    handle.remove()
    side = 8 if last_stride == 1 else 4
    assert outputs[0].shape == (2, 64, side, side)
    assert logits.shape == (2, 10)


def test_logit_scale_multiplies_logits() -> None:
    plain = create_model("resnet9", width=SMALL).eval()
    scaled = create_model("resnet9", width=SMALL, logit_scale=0.125).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), plain(x) * 0.125)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"norm": "instance"}, "model.norm"),
        ({"norm": "batch", "widht": 0.5}, "widht"),
        ({"layers": (1, 1, 1, 1)}, "layers"),  # fixed by the entry point
        ({"logit_scale": 0.125}, "logit_scale"),  # a resnet9-only option
        ({"width": 0}, "model.width"),
        ({"width": -0.5}, "model.width"),
        ({"groups": 0}, "model.groups"),
        ({"last_stride": 3}, "model.last_stride"),
        ({"num_classes": 0}, "model.num_classes"),
        ({"bn_momentum": 0.0}, "model.bn_momentum"),
        ({"bn_momentum": 1.5}, "model.bn_momentum"),
        ({"norm": "group", "bn_momentum": 0.2}, "model.bn_momentum"),  # GroupNorm keeps no running statistics
        ({"widths": (8, 8, 8)}, "widths"),  # an airbench-only option
    ],
)
def test_bad_options_raise_config_error_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        create_model("resnet18", **kwargs)
    if field == "model.norm":
        assert all(n in str(err.value) for n in NORMS)


@pytest.mark.parametrize("name", list_models())
def test_bn_momentum_reaches_every_batchnorm(name: str) -> None:
    default = {"airbench": 0.4}.get(name, 0.1)  # airbench's "0.6" is the old value's weight: torch's 0.4
    assert {m.momentum for m in create_model(name, width=SMALL).modules() if isinstance(m, nn.BatchNorm2d)} == {default}
    model = create_model(name, width=SMALL, bn_momentum=0.25)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) >= 5 and all(m.momentum == 0.25 for m in bns)
    inputs: list[torch.Tensor] = []
    handle = bns[-1].register_forward_hook(lambda _m, args, _out: inputs.append(args[0]))
    model.train()(torch.randn(4, 3, 32, 32))
    handle.remove()
    # From 0, one training step moves the running mean by momentum x the batch mean.
    torch.testing.assert_close(bns[-1].running_mean, 0.25 * inputs[0].detach().mean((0, 2, 3)))


def test_bad_resnet9_options() -> None:
    with pytest.raises(ConfigError, match="model.logit_scale"):
        create_model("resnet9", logit_scale=0.0)
    with pytest.raises(ConfigError, match="last_stride"):
        create_model("resnet9", last_stride=1)


# --- memory format and mixed precision ----------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list_models())
def test_channels_last_matches_contiguous(name: str, norm: str) -> None:
    model = create_model(name, norm=norm, width=0.25).eval()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_bf16_autocast_forward_backward(name: str) -> None:
    model = create_model(name, width=SMALL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 32, 32))
        assert logits.dtype == torch.bfloat16
        loss = nn.functional.cross_entropy(logits, torch.tensor([1, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.dtype == torch.float32, pname  # autocast leaves the weights in fp32
        assert not p.requires_grad or (p.grad is not None and torch.isfinite(p.grad).all()), pname


# --- Grad-CAM layer and summary -----------------------------------------------------------------


@pytest.mark.parametrize("name", list_models())
def test_target_layer_is_the_last_conv_stage(name: str) -> None:
    model = create_model(name, width=SMALL).eval()
    layer = get_target_layer(model)
    assert layer is model.get_submodule(model.gradcam_layer)
    outputs, handle = _capture(layer)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        head = model.forward_head(outputs[0])
    handle.remove()
    # The hooked map is the final feature map, and the logits depend on the input only through it.
    side = 3 if name == "airbench" else 4  # airbench's unpadded 2x2 first conv leaves 31x31, pooled to 15, 7, 3
    assert outputs[0].shape == (2, model.num_features, side, side)
    torch.testing.assert_close(outputs[0], features)
    torch.testing.assert_close(head, logits)


def test_target_layer_needs_gradcam_attribute() -> None:
    with pytest.raises(ConfigError, match="gradcam_layer"):
        get_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3)))


@pytest.mark.parametrize("name", list_models())
def test_model_summary_reports_parameters_and_leaves_model_untouched(name: str) -> None:
    model = create_model(name, width=SMALL).train()
    running_before = [b.clone() for b in model.buffers()]
    text = model_summary(model, depth=1)
    assert f"Total params: {count_parameters(model):,}" in text
    assert model.gradcam_layer in text  # rows are named by attribute
    assert "[1, 10]" in text  # output shape of the head
    assert model.training
    for before, after in zip(running_before, model.buffers()):
        torch.testing.assert_close(before, after)


def test_model_summary_prints_mult_adds_as_a_count_not_a_size() -> None:
    # 64 output channels x 32 x 32 positions x (3 x 3 x 3) weights = 1,769,472 multiply-adds
    conv = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False))
    text = model_summary(conv, (1, 3, 32, 32), depth=1)
    assert "Total mult-adds: 1.77 M" in text.splitlines()
    assert "Units." not in text and "MEGABYTES" not in text
    assert format_mult_adds(555_430_000) == "555.43 M"
    assert (
        format_mult_adds(2_500_000_000) == "2.50 G"
        and format_mult_adds(12_340) == "12.34 K"
        and format_mult_adds(7) == "7"
    )
