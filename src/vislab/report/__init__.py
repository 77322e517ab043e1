"""Run reports: `report` (Markdown + self-contained HTML), `explain` (gallery + Grad-CAM), `robust` and `compare`."""

from __future__ import annotations

# Public names, imported on first use: cli.py imports vislab.report.commands to build its parser, and that
# must not pull in torch and matplotlib (`vislab --version` stays instant).
_LAZY = {
    "Comparison": "_compare",
    "compare_runs": "_compare",
    "ExplainResult": "_explain",
    "Explanation": "_explain",
    "explain_loaded": "_explain",
    "explain_run": "_explain",
    "Report": "_report",
    "make_report": "_report",
    "write_report": "_report",
    "LoadedRun": "_rundir",
    "RunFolder": "_rundir",
    "load_run": "_rundir",
    "read_run": "_rundir",
    "CalibrationResult": "_trust",
    "Robustness": "_trust",
    "calibrate_run": "_trust",
    "read_robustness": "_trust",
    "robust": "_trust",
    "robustness_run": "_trust",
}

__all__ = [
    "CalibrationResult",
    "Comparison",
    "ExplainResult",
    "Explanation",
    "LoadedRun",
    "Report",
    "Robustness",
    "RunFolder",
    "calibrate_run",
    "compare_runs",
    "explain_loaded",
    "explain_run",
    "load_run",
    "make_report",
    "read_robustness",
    "read_run",
    "robust",
    "robustness_run",
    "write_report",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
