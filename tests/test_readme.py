"""The README's Python example runs as written (on a small run instead of a real one)."""

from __future__ import annotations

import re
from pathlib import Path

import vislab

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tests/test_readme.py runs the next block on a small run -->"


def _block() -> str:
    text = README.read_text()
    assert MARKER in text, "the README lost the tested example"
    m = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert m, "the marker must be followed by a ```python block"
    return m.group(1)


def test_readme_load_run_example_runs(tiny_overrides, tmp_path, monkeypatch):
    # A barely trained model: plenty of misclassified test images for the gallery and Grad-CAM.
    ov = {**tiny_overrides, "trainer.epochs": 1, "sched.name": "none", "optim.lr": 1e-4}
    run_dir = vislab.train("quick", ov, out=tmp_path / "run").run_dir
    monkeypatch.chdir(tmp_path)
    scope = {"RUN_DIR": run_dir}
    exec(compile(_block(), str(README), "exec"), scope)  # noqa: S102 - the README's own example
    assert (tmp_path / "gradcam.png").stat().st_size > 0
    assert (run_dir / "predictions.pt").is_file() and scope["ex"].faithfulness
