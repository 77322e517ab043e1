"""Report, explain and compare on a real (tiny) run folder: every section, self-contained HTML, cached predictions."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

import vislab
from conftest import make_imagefolder
from vislab.engine import load_checkpoint, save_checkpoint
from vislab.errors import ConfigError, VislabError
from vislab.explain import PREDICTIONS_FILE, grad_cam
from vislab.report import compare_runs, explain_run, load_run, make_report, write_report
from vislab.report.commands import add_subcommands

SECTIONS = [
    "Metrics",
    "Configuration",
    "Model",
    "Training curves",
    "Learning rate",
    "What the model sees",
    "Per-class accuracy",
    "Confusion matrix",
    "Most confused pairs",
    "Misclassified images",
    "Class activation maps: predicted vs actual class",
    "Faithfulness of the maps (deletion test)",
    "Which CAM method and layer (sweep)",
    "Timings",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """One finished 2-epoch run on the synthetic 3-class image folder (16x16), shared by the tests below."""
    base = tmp_path_factory.mktemp("report")
    data = make_imagefolder(base / "data")
    overrides = {
        "data.name": "imagefolder",
        "data.root": str(data),
        "data.cache_dir": str(base / "cache"),
        "model.width": 0.125,
        "trainer.batch_size": 16,
        "trainer.epochs": 2,
        "trainer.device": "cpu",
        "trainer.progress": False,
        "sched.peak_epoch": 0.5,
        "optim.lr": 0.05,
    }
    return vislab.train("quick", overrides, out=base / "run").run_dir


def _copy(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    for f in ("report.md", "report.html", "report.json", PREDICTIONS_FILE):
        (dest / f).unlink(missing_ok=True)
    return dest


def _external_refs(html: str) -> list[str]:
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, flags=re.IGNORECASE)
    refs += re.findall(r"url\(([^)]*)\)", html, flags=re.IGNORECASE)
    return [r for r in refs if not r.startswith("data:") and not r.startswith("#")]


def test_report_has_every_section_and_self_contained_html(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path / "run")
    rep = make_report(run, n=4, faithfulness_n=12, preview=8)
    md, html = rep.markdown.read_text(), rep.html.read_text()
    for title in SECTIONS:
        assert re.search(rf"^#+ {re.escape(title)}$", md, flags=re.MULTILINE), title
        assert re.search(rf"<h\d>{re.escape(title.replace('&', '&amp;'))}</h\d>", html), title
    # every image of the Markdown exists beside it, and the HTML carries the same images inline
    md_images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {
        "report/curves.png",
        "report/lr.png",
        "report/misclassified.png",
        "report/gradcam.png",
        "report/confusion_counts.png",
        "report/augmented.png",
    } <= set(md_images)
    assert all((run / p).is_file() and (run / p).read_bytes()[:4] == b"\x89PNG" for p in md_images)
    assert html.count('<img alt="') == len(md_images) == html.count('src="data:image/png;base64,')
    assert _external_refs(html) == [] and "<link" not in html and "<script" not in html and "@import" not in html
    # numbers the report states are the run's
    hist = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert f"| final | 2 | {hist[-1]['train_loss']:.4f} |" in md
    assert "finished (2 of 2 epochs)" in md and "checkpoints/best" in md
    numbers = json.loads((run / "report.json").read_text())
    assert numbers["test_images"] == 24 and set(numbers["per_class_acc"]) == {"alpha", "beta", "gamma"}
    assert set(numbers["faithfulness"]) == (
        {"gallery/predicted", "gallery/actual"} if numbers["misclassified"] else set()
    ) | {"random test images/predicted"}
    for stage in ("load model", "predictions", "Grad-CAM maps", "write report", "total"):
        assert stage in rep.timings or numbers["misclassified"] == 0 and stage == "Grad-CAM maps"
    assert "| predictions |" in md and "drop, top-20% CAM removed" in md


def test_predictions_are_cached_per_checkpoint(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path / "run")
    first = make_report(run, n=2, faithfulness_n=0, preview=0)
    assert first.numbers["predictions_cached"] is False and "predictions" in first.timings
    cache = torch.load(run / PREDICTIONS_FILE, weights_only=True)
    assert (
        cache["logits"].shape == (24, 3)
        and cache["logits"].dtype == torch.float32
        and cache["labels"].dtype == torch.int64
    )
    second = make_report(run, n=2, faithfulness_n=0, preview=0)
    assert second.numbers["predictions_cached"] is True and "predictions (cached)" in second.timings

    # A newer best checkpoint (here: the same run with a changed classifier) must not reuse the old logits.
    state = load_checkpoint(run / "checkpoints" / "best")
    state["model"]["fc.weight"] = state["model"]["fc.weight"].flip(0)
    save_checkpoint(run / "checkpoints" / "best", state)
    third = make_report(run, n=2, faithfulness_n=0, preview=0)
    assert third.numbers["predictions_cached"] is False
    fresh = torch.load(run / PREDICTIONS_FILE, weights_only=True)["logits"]
    assert not torch.allclose(fresh, cache["logits"])


def test_report_predicts_in_the_precision_the_run_recorded(run_dir, tmp_path, monkeypatch):
    from vislab.engine import _device, resolve_precision

    run = _copy(run_dir, tmp_path / "run")
    recorded = json.loads((run / "summary.json").read_text())["precision"]  # what auto meant where it trained
    # The machine writing the report means the other precision by auto.
    other = "bf16" if recorded == "fp32" else "fp32"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: avx2 avx512f{' avx512_bf16' if other == 'bf16' else ''}\n")
    monkeypatch.setattr(_device, "CPUINFO", cpuinfo, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: other == "bf16")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert load_run(run, device="cpu").folder.config.trainer.precision == "auto"
    assert resolve_precision("auto", torch.device("cpu")).name == other

    loaded = load_run(run, device="cpu")
    assert loaded.precision.name == recorded and loaded.prediction_key["precision"] == recorded
    # so the report's figures are the run's: the best checkpoint's accuracy is its metrics.jsonl row's
    logits, labels, _ = loaded.predictions(refresh=True)
    best = loaded.folder.best_row()
    assert loaded.checkpoint.name == "best" and loaded.checkpoint_epoch == best["epoch"]
    assert 100.0 * (logits.argmax(1) == labels).float().mean().item() == pytest.approx(best["test_acc"])
    # The checkpoint records it too, for a run that stopped before writing summary.json.
    (run / "summary.json").unlink()
    state = load_checkpoint(run / "checkpoints" / "best")
    assert state["precision"] == recorded
    assert load_run(run, device="cpu").precision.name == recorded
    # An fp16 GPU run reported on a CPU: the config refuses fp16 there for training, prediction runs it.
    state["precision"] = "fp16"
    save_checkpoint(run / "checkpoints" / "best", state)
    fp16 = load_run(run, device="cpu")
    assert fp16.precision.name == "fp16" and fp16.precision.dtype == torch.float16
    assert torch.isfinite(fp16.predictions(refresh=True)[0]).all()


def test_interrupted_run_reports_from_last_checkpoint(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "best")
    (run / "summary.json").unlink()
    rows = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(rows[0] + "\n")
    path = write_report(run, n=3, faithfulness_n=8, preview=4)
    md = path.read_text()
    assert path == run / "report.md" and "interrupted after 1 of 2 epochs" in md and "checkpoints/last" in md


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="vislab")
    sub = parser.add_subparsers(dest="command")
    add_subcommands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_choices_match_the_api_and_import_no_torch():
    import subprocess
    import sys

    from vislab import explain, report
    from vislab.report import commands

    assert commands.ORDERS == explain.ORDERS and commands.TARGETS == explain.TARGETS
    assert sorted(report.__all__) == sorted(report._LAZY) and all(getattr(report, n) for n in report.__all__)
    code = "import sys, vislab.report.commands; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_explain_command_targets(run_dir, tmp_path, capsys):
    run = _copy(run_dir, tmp_path / "run")
    out = tmp_path / "ex"
    assert (
        _cli(
            [
                "explain",
                str(run),
                "--n",
                "3",
                "--target",
                "actual",
                "--order",
                "random",
                "--seed",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert str(out / "gradcam.png") in printed and "deletion test" in printed
    info = json.loads((out / "explain.json").read_text())
    assert info["target"] == "actual" and info["layer"] == "layer3" and info["order"] == "random"
    assert all(img["true"] != img["predicted"] for img in info["images"])
    assert (out / "misclassified.png").is_file() and (out / "gradcam.png").is_file()
    assert "gallery/actual" in info["faithfulness"] and "gallery/predicted" not in info["faithfulness"]


def test_explain_both_targets_differ_for_misclassified_images(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path / "run")
    # Both sides on the CPU, whatever the machine has: "auto" would put them on a GPU where there is one.
    res = explain_run(run, n=5, target="both", layer="layer2", faithfulness_n=0, guided=True, device="cpu")
    ex = res.explanation
    if ex.indices.numel() == 0:
        pytest.skip("the tiny run classified every test image correctly")
    assert (ex.preds != ex.labels).all() and ex.layer == "layer2"
    assert set(ex.cams) == {"predicted", "actual"} and ex.cams["predicted"].shape == (ex.indices.numel(), 16, 16)
    assert any(not torch.allclose(p, a) for p, a in zip(ex.cams["predicted"], ex.cams["actual"]))
    # each map is Grad-CAM for its own class: the prediction's and the true label's
    loaded = load_run(run, device="cpu")
    x = loaded.normalize(loaded.dataset.test_x[ex.indices])
    torch.testing.assert_close(ex.cams["predicted"], grad_cam(loaded.model, x, ex.preds, layer="layer2"))
    torch.testing.assert_close(
        ex.cams["actual"], grad_cam(loaded.model, x, loaded.dataset.test_y[ex.indices], layer="layer2")
    )
    assert (res.out_dir / "guided_gradcam.png").is_file() and res.out_dir == run / "explain"


def test_report_and_compare_commands(run_dir, tmp_path, capsys):
    a = _copy(run_dir, tmp_path / "a" / "run")
    b = _copy(run_dir, tmp_path / "b" / "run")
    rows = (b / "metrics.jsonl").read_text().splitlines()
    (b / "metrics.jsonl").write_text(rows[0] + "\n")
    assert _cli(["report", str(a), "--n", "2", "--preview", "0", "--target", "predicted"]) == 0
    assert str(a / "report.html") in capsys.readouterr().out
    assert "CAM w.r.t. actual" not in (a / "report.md").read_text()
    out = tmp_path / "cmp"
    assert _cli(["compare", str(a), str(b), "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert "| a/run |" in md and "| b/run |" in md and "| 2/2 |" in md and "| 1/2 |" in md
    assert "![" in md and (out / "compare.png").is_file()
    html = (out / "compare.html").read_text()
    assert _external_refs(html) == [] and html.count('src="data:image/png;base64,') == 1
    result = compare_runs([a, b], out=tmp_path / "cmp2")
    hist_b = json.loads(rows[0])
    assert result.rows[1]["final_test_acc"] == hist_b["test_acc"]


def test_bad_input_is_a_clear_error(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="config.yaml"):
        make_report(tmp_path)
    with pytest.raises(ConfigError, match="layer9"):
        explain_run(run_dir, layer="layer9", out=tmp_path / "x")
    with pytest.raises(ConfigError, match="target"):
        explain_run(run_dir, target="neither", out=tmp_path / "x")
    empty = _copy(run_dir, tmp_path / "nockpt")
    shutil.rmtree(empty / "checkpoints")
    with pytest.raises(VislabError, match="neither a best nor a last checkpoint"):
        make_report(empty)


def test_explain_gallery_carries_its_sort_key(run_dir, tmp_path):
    # Ordered by loss, the gallery shows p(true) and the loss on each tile and in explain.json.
    from vislab.report import explain_run

    res = explain_run(_copy(run_dir, tmp_path / "run"), n=5, order="loss", device="cpu", out=tmp_path / "ex")
    images = json.loads((tmp_path / "ex" / "explain.json").read_text())["images"]
    assert images and all({"p_true", "loss"} <= set(img) for img in images)
    losses = [img["loss"] for img in images]
    assert losses == sorted(losses, reverse=True)  # what "ordered by loss" means
    assert all(img["loss"] == pytest.approx(-math.log(max(img["p_true"], 1e-12)), abs=2e-3) for img in images)
    fig = res.explanation.gallery
    texts = [x for ax in fig.axes for x in (ax.get_title(), ax.get_xlabel(), *(t.get_text() for t in ax.texts))]
    assert any(f"loss {images[0]['loss']:.2f}" in t for t in texts), texts[:6]
