"""vislab: fast, tested image-classification experiments on CIFAR-10-class data."""

from __future__ import annotations

from .version import __version__

# Public names, imported on first use so that `import vislab` (and `vislab --version`) stays light.
_LAZY = {
    "train": ("vislab.run", "train"),
    "Run": ("vislab.run", "Run"),
    "lr_find": ("vislab.run", "lr_find"),
    "LRFinder": ("vislab.tuner", "LRFinder"),
    "write_report": ("vislab.report", "write_report"),
    "explain_run": ("vislab.report", "explain_run"),
    "compare_runs": ("vislab.report", "compare_runs"),
    "predict_files": ("vislab.deploy", "predict_files"),
    "export_run": ("vislab.deploy", "export_run"),
    "load_config": ("vislab.config", "load_config"),
    "list_recipes": ("vislab.config", "list_recipes"),
    "create_model": ("vislab.models", "create_model"),
    "list_models": ("vislab.models", "list_models"),
    "load_dataset": ("vislab.data", "load_dataset"),
    "VislabError": ("vislab.errors", "VislabError"),
    "ConfigError": ("vislab.errors", "ConfigError"),
    "DataError": ("vislab.errors", "DataError"),
}

# Public subpackages, also imported on first attribute access: a notebook user types
# `vislab.report.load_run` right after `import vislab`, and eager imports would pull torch into
# `vislab --version`. Once imported, Python binds each as an attribute and __getattr__ is not asked again.
_SUBPACKAGES = (
    "augment",
    "bench",
    "config",
    "data",
    "deploy",
    "engine",
    "explain",
    "models",
    "plots",
    "report",
    "tuner",
)

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'vislab' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Tab completion and dir() show the lazy names too, not only what happens to be imported already.
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})
