"""Using a trained run outside vislab: predicting image files, exporting the model (ONNX, pt2, TorchScript)."""

from __future__ import annotations

# Public names, imported on first use: cli.py reads EXPORT_FORMATS while it builds its parser, and that must not
# pull in torch (`vislab --version` stays instant).
_LAZY = {
    "Prediction": "_predict",
    "decode_images": "_predict",
    "describe_temperature": "_predict",
    "find_images": "_predict",
    "format_table": "_predict",
    "predict_files": "_predict",
    "predict_loaded": "_predict",
    "ExportResult": "_export",
    "INFO_FILE": "_export",
    "NormalizeInput": "_export",
    "check_format": "_export",
    "default_out": "_export",
    "export_model": "_export",
    "export_run": "_export",
    "parity": "_export",
    "run_exported": "_export",
}

# Here, not in the modules, so that the CLI's parser reads them without importing torch.
EXPORT_FORMATS = ("onnx", "pt2", "torchscript")
DEFAULT_TOP_K = 3

__all__ = ["DEFAULT_TOP_K", "EXPORT_FORMATS", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
