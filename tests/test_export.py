"""`vislab export`: every registered model through ONNX and onnxruntime, a run's export and its model.json."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import vislab
from conftest import make_imagefolder, tiny_config
from vislab.cli import main
from vislab.deploy import (
    EXPORT_FORMATS,
    INFO_FILE,
    NormalizeInput,
    check_format,
    export_model,
    export_run,
    run_exported,
)
from vislab.errors import ConfigError
from vislab.models import create_model, list_models
from vislab.report import load_run

ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4  # max abs logit difference allowed between onnxruntime and PyTorch (measured: ~1e-6)
SIZE = 16


def _tiny(name: str, **kwargs) -> nn.Module:
    try:
        return create_model(name, num_classes=10, width=0.125, **kwargs)
    except ConfigError:  # a model without a width option is exported at its own size
        return create_model(name, num_classes=10, **kwargs)


def _randomize_norm_stats(model: nn.Module) -> nn.Module:
    # Fresh BatchNorm has mean 0 / var 1, where eval and train mode nearly agree; other statistics tell them apart.
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _onnx_logits(path: Path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and isinstance(inp.shape[0], str)  # a named, dynamic batch dimension
    return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


@pytest.mark.parametrize("name", list_models())
def test_every_model_exports_to_onnx_with_parity(name, tmp_path):
    torch.manual_seed(0)
    model = _randomize_norm_stats(_tiny(name)).to(memory_format=torch.channels_last)  # as trained on a CPU
    path = export_model(model, tmp_path / "m.onnx", torch.randn(2, 3, SIZE, SIZE))
    x = torch.randn(5, 3, SIZE, SIZE)  # another batch size than the export's example
    with torch.no_grad():
        want = model.eval()(x)
        train_mode = model.train()(x)  # what a graph exported in training mode would compute
    got = _onnx_logits(path, x)
    diff = float((got - want).abs().max())
    print(f"{name}: max abs logit difference onnxruntime vs PyTorch {diff:.2e}")
    assert got.shape == (5, 10) and diff <= TOL
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        assert float((got - train_mode).abs().max()) > 100 * TOL  # BatchNorm ran on its running statistics


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_other_norm_layers_export(norm, tmp_path):
    model = _tiny("resnet9", norm=norm).eval()
    path = export_model(model, tmp_path / "m.onnx", torch.randn(2, 3, SIZE, SIZE))
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        assert float((_onnx_logits(path, x) - model(x)).abs().max()) <= TOL


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("export")
    data = make_imagefolder(base / "data", train_per_class=16, test_per_class=4)
    overrides = tiny_config(
        data, base / "cache", **{"model.name": "resnet9", "trainer.epochs": 1, "sched.name": "none"}
    )
    return vislab.train("quick", overrides, out=base / "run").run_dir


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load_run(run_dir, device="cpu")


def test_export_with_normalize_takes_uint8_and_matches_pytorch_on_normalized_input(run_dir, loaded, tmp_path):
    res = export_run(run_dir, out=tmp_path / "ex", with_normalize=True)
    info = json.loads(res.info_file.read_text())
    assert info == res.info and res.model_file == tmp_path / "ex" / "model.onnx" and res.replaced is None
    ds = loaded.dataset
    h, w = ds.image_size
    assert info["format"] == "onnx" and info["file"] == "model.onnx" and info["normalize_included"] is True
    assert info["input"] == {
        "name": "images",
        "shape": ["batch", 3, h, w],
        "layout": "NCHW",
        "channels": "RGB",
        "dtype": "uint8",
        "range": info["input"]["range"],
    }
    assert "0..255" in info["input"]["range"]
    assert info["output"]["shape"] == ["batch", len(ds.classes)]
    assert info["classes"] == ds.classes and info["image_size"] == [h, w]
    assert info["mean"] == pytest.approx(list(ds.mean)) and info["std"] == pytest.approx(list(ds.std))
    assert info["checkpoint"] == {"name": loaded.checkpoint.name, "epoch": loaded.checkpoint_epoch}
    assert info["vislab_version"] == vislab.__version__ and info["torch_version"] == torch.__version__
    assert info["temperature"] is None and isinstance(info["onnx_opset"], int)
    assert info["parity"]["max_abs_logit_diff"] <= TOL and info["parity"]["images"] == min(8, len(ds.test_y))
    assert info["parity"]["runtime"] == f"onnxruntime {ort.__version__}"

    x = ds.test_x[:3]  # uint8, a batch size the export never saw
    with torch.no_grad():
        want = loaded.model.float()(loaded.normalize(x).float())
    assert float((_onnx_logits(res.model_file, x) - want).abs().max()) <= TOL


def test_export_command_plain_input_replaces_only_its_own_earlier_export(run_dir, loaded, tmp_path, capsys):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    out = run / "export"  # the default
    assert main(["export", str(run)]) == 0
    printed = capsys.readouterr().out
    assert "parity: max abs logit difference" in printed and str(out / "model.onnx") in printed
    info = json.loads((out / INFO_FILE).read_text())
    assert info["normalize_included"] is False and info["input"]["dtype"] == "float32"
    x = loaded.dataset.test_x[:3]
    with torch.no_grad():
        want = loaded.model.float()(loaded.normalize(x).float())
    assert float((_onnx_logits(out / "model.onnx", loaded.normalize(x).float()) - want).abs().max()) <= TOL

    assert main(["export", str(run), "--checkpoint", "last"]) == 0  # the same format again: replaced, and said so
    assert f"replaced the earlier onnx export in {out}" in capsys.readouterr().out
    assert json.loads((out / INFO_FILE).read_text())["checkpoint"]["name"] == "last"

    assert main(["export", str(run), "--format", "pt2"]) == 2  # another format: never over the ONNX one
    err = capsys.readouterr().err
    assert "earlier onnx export" in err and f"--out {out}-pt2" in err and not (out / "model.pt2").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / INFO_FILE).write_text('{"mine": true}')
    (foreign / "model.onnx").write_text("someone else's")
    assert main(["export", str(run), "--out", str(foreign)]) == 2
    assert "not written by `vislab export`" in capsys.readouterr().err
    assert (foreign / "model.onnx").read_text() == "someone else's"


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")  # the format's own deprecation
@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_torch_formats_round_trip(fmt, run_dir, loaded, tmp_path):
    res = export_run(run_dir, format=fmt, out=tmp_path / fmt, with_normalize=fmt == "pt2")
    assert res.info["format"] == fmt and res.info["parity"]["max_abs_logit_diff"] <= TOL
    x = loaded.dataset.test_x[:3]
    inp = x if fmt == "pt2" else loaded.normalize(x).float()
    with torch.no_grad():
        want = loaded.model.float()(loaded.normalize(x).float())
    assert float((run_exported(res.model_file, inp, format=fmt) - want).abs().max()) <= TOL


def test_normalize_wrapper_matches_the_training_normalization(loaded):
    x = loaded.dataset.test_x[:4]
    wrapped = NormalizeInput(nn.Identity(), loaded.dataset.mean, loaded.dataset.std)
    assert torch.equal(wrapped(x), loaded.normalize(x).float())


def test_missing_onnx_extra_is_a_clear_error(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # `import onnxscript` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'vislab\[onnx\]'"):
        check_format("onnx")
    assert main(["export", str(run_dir), "--out", str(tmp_path / "ex")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'vislab[onnx]'" in err and "Traceback" not in err and not (tmp_path / "ex").exists()
    check_format("pt2")  # the other formats need nothing more


def test_formats_and_public_names():
    from vislab.deploy import _export

    assert _export.EXPORT_FORMATS == EXPORT_FORMATS and set(_export.FILE_NAMES) == set(EXPORT_FORMATS)
    assert vislab.export_run is export_run
    with pytest.raises(ConfigError, match="onnx, pt2, torchscript"):
        check_format("tflite")
