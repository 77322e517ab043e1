"""`export`: a run's model as ONNX (or a torch.export program, or TorchScript) with a model.json describing its input."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..files import atomic_write_text
from ..report import load_run
from ..rundir import data_info, read_temperature
from ..version import __version__
from . import EXPORT_FORMATS

FILE_NAMES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}
EXPORT_FOLDER = "export"  # RUN_DIR/export unless --out
INFO_FILE = "model.json"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
# The traced example's batch size; with 1, torch.export would specialise the batch dimension to a constant.
EXAMPLE_BATCH = 2
PARITY_IMAGES = (
    8  # test images run through the exported file and PyTorch; not EXAMPLE_BATCH, so the dynamic batch is exercised
)
ONNX_EXTRA = "pip install 'vislab[onnx]'"


class NormalizeInput(nn.Module):
    """uint8 RGB pixels (N, 3, H, W), 0..255 -> the wrapped model's logits, with (x / 255 - mean) / std inside."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        # The affine of vislab.augment's normalize (x * scale + shift, constants rounded from float64), so that
        # the exported graph sees the same float input as the model did in training.
        m = torch.tensor(list(mean), dtype=torch.float64)
        s = torch.tensor(list(std), dtype=torch.float64)
        self.register_buffer("scale", (1.0 / (255.0 * s)).to(torch.float32).view(1, -1, 1, 1))
        self.register_buffer("shift", (-m / s).to(torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(torch.float32) * self.scale + self.shift)


def check_format(fmt: str) -> None:
    """A known format, with what it needs installed (before any model or data is loaded)."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format = {fmt!r} is not an export format; choose one of {', '.join(EXPORT_FORMATS)}.")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401 - torch's ONNX exporter builds the graph with it
        except ImportError as e:
            raise ConfigError(
                f"--format onnx needs the onnx extra, which is not installed ({e.name or e} is missing): "
                f"{ONNX_EXTRA} (onnx and onnxscript; add onnxruntime to have the export's parity measured)."
            ) from None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    # torch.onnx logs a warning per torchvision op it cannot register (torchvision is not a dependency) and
    # torch.export raises FutureWarnings about its own internals: nothing the user can act on.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _prepared(model: nn.Module) -> nn.Module:
    # fp32, eval mode (BatchNorm uses its running statistics), NCHW weights: what the exported graph computes.
    return model.to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()


def export_model(model: nn.Module, path: str | Path, example: Tensor, *, format: str = "onnx") -> Path:
    """Write `model` (moved to the CPU in fp32 and eval mode) to `path` with a dynamic batch dimension.

    `example` is one input batch (its batch size should be > 1); the file takes inputs of its dtype and
    of its shape apart from the batch size. Written under a temporary name and renamed into place.
    """
    check_format(format)
    path = Path(path)
    model = _prepared(model)
    example = example.cpu().contiguous()
    batch = {0: torch.export.Dim("batch")}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with _quiet_exporter(), torch.no_grad():
            if format == "onnx":
                program = torch.onnx.export(
                    model,
                    (example,),
                    dynamo=True,
                    dynamic_shapes=(batch,),
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    verbose=False,
                )
                # One self-contained file: the models are far below protobuf's 2 GB limit.
                program.save(tmp, external_data=False)
            elif format == "pt2":
                torch.export.save(torch.export.export(model, (example,), dynamic_shapes=(batch,)), tmp)
            else:
                # torch.jit is deprecated in favour of torch.export (pt2); kept for libtorch C++ deployments.
                torch.jit.trace(model, (example,)).save(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def run_exported(path: str | Path, x: Tensor, *, format: str = "onnx") -> Tensor | None:
    """Logits of the exported file on `x`, computed by its own runtime (onnxruntime for ONNX); None for ONNX
    when onnxruntime is not installed."""
    path = Path(path)
    if format == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})
        return torch.from_numpy(out)
    with torch.no_grad():
        if format == "pt2":
            return torch.export.load(path).module()(x.cpu()).float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load: the format's own deprecation
            return torch.jit.load(str(path))(x.cpu()).float()


def parity(path: str | Path, model: nn.Module, x: Tensor, *, format: str = "onnx") -> float | None:
    """Largest absolute difference between the exported file's logits and the PyTorch model's (fp32, eval) on `x`."""
    got = run_exported(path, x, format=format)
    if got is None:
        return None
    with torch.no_grad():
        want = _prepared(model)(x.cpu()).float()
    return float((got - want).abs().max()) if want.numel() else 0.0


def _runtime(fmt: str) -> str | None:
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__} ({'torch.export.load' if fmt == 'pt2' else 'torch.jit.load'})"


def _onnx_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@dataclass
class ExportResult:
    """What `export_run` wrote: the model file and model.json, and model.json's content."""

    out_dir: Path
    model_file: Path
    info_file: Path
    info: dict[str, Any]
    replaced: dict[str, Any] | None  # model.json of the earlier export in this folder that was replaced, if any


def _earlier_export(out: Path) -> dict[str, Any] | None:
    """model.json of an earlier `vislab export` into `out`, or None when there is none."""
    info = out / INFO_FILE
    if not info.exists():
        return None
    try:
        data = json.loads(info.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        data = None
    if not (isinstance(data, dict) and data.get("exported_by") == "vislab export" and data.get("format") in FILE_NAMES):
        raise ConfigError(
            f"{str(info)!r} exists and was not written by `vislab export`; it is left alone. Give another --out "
            "folder, or move that file away."
        )
    return data


def _check_out(out: Path, fmt: str) -> dict[str, Any] | None:
    """Refuse to overwrite anything but an earlier export of the same format; return that export's model.json."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder for the exported model and its {INFO_FILE}.")
    if not out.exists():
        return None
    earlier = _earlier_export(out)
    if earlier is not None and earlier["format"] != fmt:
        raise ConfigError(
            f"{str(out)!r} holds an earlier {earlier['format']} export ({earlier.get('file')}, {INFO_FILE}); one folder "
            f"holds one export and it is not replaced by a {fmt} export. Give this one its own folder, e.g. "
            f"--out {str(out)}-{fmt}."
        )
    target = out / FILE_NAMES[fmt]
    if target.exists() and earlier is None:
        raise ConfigError(
            f"{str(target)!r} exists and no {INFO_FILE} says `vislab export` wrote it; it is left alone. Give another "
            "--out folder, or move that file away."
        )
    return earlier


def default_out(run_dir: str | Path) -> Path:
    return Path(run_dir) / EXPORT_FOLDER


def export_run(
    run_dir: str | Path,
    *,
    format: str = "onnx",
    out: str | Path | None = None,
    checkpoint: str | Path | None = None,
    with_normalize: bool = False,
    data_root: str | Path | None = None,
) -> ExportResult:
    """Export a run's model (fp32, eval mode, dynamic batch) to `out` (default RUN_DIR/export) with a model.json.

    Without `with_normalize` the file takes float32 (N, 3, H, W) already normalized with the mean/std that
    model.json gives; with it, uint8 RGB pixels (N, 3, H, W), 0..255, normalized inside the graph. Either
    way images must be resized to model.json's image_size first. An earlier export of the same format in
    `out` is replaced (ExportResult.replaced says so); any other file there is never overwritten. The run's
    class names, image size and mean/std come from the run's data.json (the parity is then measured on random
    pixels); a run from before it, or an explicit `data_root`, loads its data set and measures on test images.
    """
    check_format(format)
    out_dir = Path(out) if out is not None else default_out(run_dir)
    earlier = _check_out(out_dir, format)
    started = time.perf_counter()
    run = load_run(
        run_dir,
        checkpoint=checkpoint,
        device="cpu",
        data_root=data_root,
        dataset=None if data_root is not None else data_info(run_dir),
    )
    ds = run.dataset
    h, w = ds.image_size
    mean, std = [float(m) for m in ds.mean], [float(s) for s in ds.std]
    model = _prepared(run.model)
    if with_normalize:
        model = NormalizeInput(model, mean, std)
        example = torch.randint(0, 256, (EXAMPLE_BATCH, 3, h, w), dtype=torch.uint8)
    else:
        example = torch.randn(EXAMPLE_BATCH, 3, h, w)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = export_model(model, out_dir / FILE_NAMES[format], example, format=format)

    images = ds.test_x[:PARITY_IMAGES]  # (n, 3, H, W) uint8
    parity_on = "the run's first test images"
    if not images.shape[0]:  # data.json stood in for the data set: random pixels check the graph as well
        images = torch.randint(
            0, 256, (PARITY_IMAGES, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        parity_on = "random pixels (seed 0; the run's data set was not loaded)"
    x = images if with_normalize else run.normalize(images).float().contiguous()
    diff = parity(path, model, x, format=format)
    runtime = _runtime(format)
    if diff is not None:
        check = {"max_abs_logit_diff": diff, "images": int(images.shape[0]), "runtime": runtime}
    else:
        why = "onnxruntime is not installed (pip install onnxruntime)"
        check = {"max_abs_logit_diff": None, "images": 0, "runtime": runtime, "note": f"not measured: {why}"}
    check["reference"] = f"the same model in PyTorch, fp32 on the CPU, on {parity_on}"

    if with_normalize:
        inp = {"dtype": "uint8", "range": "0..255 RGB pixels; the run's mean/std are applied inside the model"}
    else:
        inp = {"dtype": "float32", "range": "(pixels / 255 - mean) / std per channel, pixels RGB 0..255"}
    temperature = read_temperature(run.folder.run_dir, run.checkpoint, run.weights)
    info: dict[str, Any] = {
        "exported_by": "vislab export",
        "format": format,
        "file": path.name,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, h, w], "layout": "NCHW", "channels": "RGB", **inp},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(run.classes)], "dtype": "float32", "kind": "logits"},
        "classes": run.classes,
        "image_size": [h, w],
        "mean": mean,
        "std": std,
        "normalize_included": with_normalize,
        "preprocessing": (
            f"decode to RGB (grayscale, palette, RGBA, 16-bit and CMYK converted), resize to {h}x{w} (OpenCV INTER_AREA "
            "when shrinking both sides, bilinear otherwise), NCHW"
            + ("" if with_normalize else ", then (pixels / 255 - mean) / std per channel")
        ),
        "temperature": temperature,
        "probabilities": "softmax(logits / temperature)" if temperature is not None else "softmax(logits)",
        "model": run.folder.config.model.name,
        "run_dir": str(run.folder.run_dir),
        "checkpoint": {"name": run.checkpoint.name, "epoch": run.checkpoint_epoch},
        "parity": check,
        "vislab_version": __version__,
        "torch_version": torch.__version__,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if format == "onnx":
        info["onnx_opset"] = _onnx_opset(path)
    info_file = out_dir / INFO_FILE
    atomic_write_text(info_file, json.dumps(info, indent=2) + "\n")
    return ExportResult(out_dir=out_dir, model_file=path, info_file=info_file, info=info, replaced=earlier)
