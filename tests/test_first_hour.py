"""What a new user meets in the first hour (issue 18): the notebook view of `vislab`, and the report's explanations."""

from __future__ import annotations

import subprocess
import sys

import vislab

PUBLIC_NAMES = ("train", "lr_find", "load_config", "list_recipes", "create_model", "load_dataset", "write_report", "explain_run")
PUBLIC_PACKAGES = ("report", "explain", "plots", "data", "models", "augment", "engine", "tuner", "bench")


def _python(code: str) -> str:
    # A fresh interpreter: this test process has long imported torch and most of vislab.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stdout.strip()


def test_dir_of_vislab_lists_the_public_api_without_importing_torch():
    out = _python("import sys, vislab; names = dir(vislab); print('torch' in sys.modules); print(' '.join(names))")
    torch_loaded, names = out.splitlines()
    assert torch_loaded == "False"  # dir() (tab completion) must not import anything heavy
    assert set(PUBLIC_NAMES) <= set(names.split()) and set(PUBLIC_PACKAGES) <= set(names.split())
    assert set(PUBLIC_NAMES) | set(PUBLIC_PACKAGES) <= set(dir(vislab))


def test_public_subpackages_resolve_right_after_import_vislab():
    out = _python("import vislab; print(vislab.report.load_run.__name__, vislab.explain.grad_cam.__name__, vislab.plots.plot_gradcam.__name__)")
    assert out == "load_run grad_cam plot_gradcam"
    for name in PUBLIC_PACKAGES:
        assert getattr(vislab, name).__name__ == f"vislab.{name}"
