"""The CAM method x layer sweep, SmoothGrad guided Grad-CAM, the maps' native grid in figures, and the report's choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import vislab
from conftest import make_imagefolder, tiny_config
from vislab.cli import main as cli_main
from vislab.errors import ConfigError
from vislab.explain import (
    CAM_METHODS,
    cam_targets,
    faithfulness,
    guided_grad_cam,
    pixel_relevance,
    smooth_guided_grad_cam,
)
from vislab.models import create_model, get_cam_layers
from vislab.plots import plot_gradcam
from vislab.report import commands as report_commands
from vislab.report import load_run, make_report
from vislab.report._sweep import (
    PIXEL_METHODS,
    choose_cam_from,
    read_sweep,
    sweep_loaded,
    sweep_run,
)
from vislab.rundir import SWEEP_FILE

pytestmark = pytest.mark.usefixtures("one_thread")

SWEEP_N = 12  # of the tiny run's 24 test images (3 classes)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sweep")
    data = make_imagefolder(base / "data")
    return vislab.train("quick", tiny_config(data, base / "cache"), out=base / "run").run_dir


def _copy(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def test_cli_method_names_are_the_libraries():
    assert report_commands.CAM_METHODS == CAM_METHODS


def test_smooth_guided_grad_cam_averages_noisy_guided_maps():
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.25)
    model.train()
    flags = [m.training for m in model.modules()]
    x, t = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 9, 1])
    plain = guided_grad_cam(model, x, t)
    # with (almost) no noise, one sample is captum's guided Grad-CAM itself
    near = smooth_guided_grad_cam(model, x, t, samples=1, noise=1e-9)
    torch.testing.assert_close(near, plain, rtol=1e-3, atol=1e-6)
    a = smooth_guided_grad_cam(model, x, t, samples=8, seed=1)
    b = smooth_guided_grad_cam(model, x, t, samples=8, seed=1)
    c = smooth_guided_grad_cam(model, x, t, samples=8, seed=2)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # it is a mean over `samples` noisy copies: its spread over noise draws shrinks like 1 / samples
    one = torch.stack([smooth_guided_grad_cam(model, x, t, samples=1, seed=s) for s in range(6)])
    many = torch.stack([smooth_guided_grad_cam(model, x, t, samples=16, seed=s) for s in range(6)])
    assert float(many.var(0).mean()) < 0.25 * float(one.var(0).mean())
    assert [m.training for m in model.modules()] == flags
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_pixel_relevance_is_the_channel_summed_magnitude():
    attr = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    torch.testing.assert_close(pixel_relevance(attr), torch.tensor([[[4.0, 2.5]]]))
    with pytest.raises(ConfigError, match="attributions"):
        pixel_relevance(torch.zeros(2, 3))


def test_gradcam_figure_names_method_and_native_grid():
    images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    cams = {"predicted": torch.rand(2, 32, 32), "actual": torch.rand(2, 32, 32)}
    fig = plot_gradcam(images, cams, [0, 1], [1, 0], [0.9, 0.8], ["a", "b"], method="Score-CAM", grid=(4, 4))
    texts = [t.get_text() for ax in fig.axes for t in (*ax.texts, ax.xaxis.label)]
    assert sum("(4x4)" in t for t in texts) == 4  # every map says its grid
    assert any("Score-CAM at its native 4x4 grid" in t for t in texts)  # and so does the colour bar


def test_sweep_scores_every_method_at_every_layer(run_dir, tmp_path):
    run_path = _copy(run_dir, tmp_path / "run")
    run = load_run(run_path, device="cpu")
    logits, labels, _ = run.predictions()
    layers = get_cam_layers(run.model)
    sweep = sweep_loaded(run, logits, labels, images=SWEEP_N, seed=0)
    combos = {(r.method, r.layer) for r in sweep.rows}
    assert combos == {(m, layer) for m in CAM_METHODS + PIXEL_METHODS for layer in layers}
    assert sweep.indices.numel() == SWEEP_N
    assert torch.bincount(labels[sweep.indices]).tolist() == [SWEEP_N // 3] * 3  # class-balanced
    best = max(sweep.rows, key=lambda r: r.curves.road_gap)
    assert (sweep.best.method, sweep.best.layer) == (best.method, best.layer)
    # a row's curves are those of the method's maps, scored on the sweep's images for the predicted class
    x = run.normalize(run.dataset.test_x[sweep.indices])
    targets = logits[sweep.indices].argmax(1)
    row = next(r for r in sweep.rows if r.method == "layercam" and r.layer == layers[-1])
    maps = cam_targets(run.model, x, {"t": targets}, method="layercam", layer=layers[-1]).maps["t"]
    again = faithfulness(run.model, x, maps, targets, seed=0)
    assert row.curves.road_gap == pytest.approx(again.road_gap, abs=1e-6)
    assert row.curves.deletion_auc == pytest.approx(again.deletion_auc, abs=1e-6)
    assert row.grid == tuple(cam_targets(run.model, x, {"t": targets}, layer=layers[-1], upsample=False).grid)
    # the random baseline is the same ordering-free curve for every row, computed once
    rnd = faithfulness(run.model, x, None, targets, seed=0)
    assert sweep.random.road_gap == pytest.approx(rnd.road_gap, abs=1e-6)
    assert sweep.beats_random == (best.curves.road_gap - rnd.road_gap >= 0.02)


def test_sweep_is_cached_per_checkpoint_and_settings(run_dir, tmp_path):
    run_path = _copy(run_dir, tmp_path / "run")
    run = load_run(run_path, device="cpu")
    logits, labels, _ = run.predictions()
    methods = ("gradcam", "eigencam")
    data, swept = sweep_run(run, logits, labels, images=SWEEP_N, methods=methods, seed=0)
    assert swept is not None and (run_path / SWEEP_FILE).is_file()
    again, swept2 = sweep_run(run, logits, labels, images=SWEEP_N, methods=methods, seed=0)
    assert swept2 is None and again == json.loads((run_path / SWEEP_FILE).read_text()) == json.loads(json.dumps(data))
    _, swept3 = sweep_run(run, logits, labels, images=SWEEP_N, methods=methods, seed=1)
    assert swept3 is not None  # other settings: computed again
    assert read_sweep(run)["seed"] == 1
    # another checkpoint's sweep is not this one's
    key = json.loads((run_path / SWEEP_FILE).read_text())
    key["key"]["checkpoint"] = "elsewhere"
    (run_path / SWEEP_FILE).write_text(json.dumps(key))
    assert read_sweep(run) is None


def _row(method: str, layer: str, grid: list[int], gap: float) -> dict:
    return {
        "method": method,
        "layer": layer,
        "grid": grid,
        "road_gap": gap,
        "score": gap,
        "deletion_auc": 0.3,
        "insertion_auc": 0.5,
        "road_morf_auc": 0.3,
        "road_lerf_auc": 0.3 + gap,
    }


def _sweep_json(rows: list[dict], best: dict | None, random_gap: float = 0.01) -> dict:
    return {
        "key": {},
        "rows": rows,
        "best": best,
        "random": {"road_gap": random_gap},
        "images": 12,
        "min_gap_over_random": 0.02,
    }


def test_choice_follows_the_sweep_and_says_why():
    rows = [
        _row("gradcam", "layer3", [2, 2], 0.10),
        _row("scorecam", "layer1", [8, 8], 0.30),
        _row("smooth-guided-gradcam", "layer2", [16, 16], 0.50),
    ]
    data = _sweep_json(rows, {"method": "smooth-guided-gradcam", "layer": "layer2"})
    method, layer, why = choose_cam_from(data)
    # a pixel-level winner: the gallery overlays the best CAM, at its own layer, and the sentence names both
    assert (method, layer) == ("scorecam", "layer1") and "0.300" in why and "8x8" in why
    assert "smooth-guided-gradcam at layer2" in why
    # the CAM the gallery uses must itself beat random by the margin, whatever won overall
    weak = _sweep_json(
        [_row("gradcam", "layer3", [2, 2], 0.025), _row("guided-gradcam", "layer3", [16, 16], 0.3)],
        {"method": "guided-gradcam", "layer": "layer3"},
    )
    method, layer, why = choose_cam_from(weak)
    assert (method, layer) == ("gradcam", None) and "random" in why
    plain = _sweep_json([_row("layercam", "layer2", [4, 4], 0.2)], {"method": "layercam", "layer": "layer2"})
    assert choose_cam_from(plain)[:2] == ("layercam", "layer2")
    assert choose_cam_from(None) == ("gradcam", None, None)
    # a file this version cannot read counts as absent, not as a traceback
    assert choose_cam_from({"key": {}, "best": {"method": "gradcam", "layer": "layer3"}}) == ("gradcam", None, None)


def test_sweep_of_other_weights_is_not_used(run_dir, tmp_path):
    run_path = _copy(run_dir, tmp_path / "run")
    run = load_run(run_path, device="cpu")
    logits, labels, _ = run.predictions()
    sweep_run(run, logits, labels, images=SWEEP_N, methods=("gradcam",), seed=0)
    assert read_sweep(run) is not None
    data = json.loads((run_path / SWEEP_FILE).read_text())
    data["key"]["weights"] = "ema"  # as a sweep of the moving average's predictions is keyed
    (run_path / SWEEP_FILE).write_text(json.dumps(data))
    assert read_sweep(run) is None
    (run_path / SWEEP_FILE).write_text('{"key": {}, "rows": "cut short"}')
    assert read_sweep(run) is None


def test_sweep_outside_the_run_folder_writes_nothing_into_it(run_dir, tmp_path):
    run_path = _copy(run_dir, tmp_path / "run")
    (run_path / "predictions.pt").unlink(missing_ok=True)
    before = sorted(p.relative_to(run_path) for p in run_path.rglob("*"))
    out = tmp_path / "elsewhere"
    args = [
        "explain",
        str(run_path),
        "--n",
        "1",
        "--sweep",
        "--sweep-images",
        "3",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert cli_main(args) == 0
    assert sorted(p.relative_to(run_path) for p in run_path.rglob("*")) == before
    assert (out / "cam_sweep.png").is_file() and json.loads((out / "explain.json").read_text())["sweep"]["images"] == 3


def test_explain_sweep_command_and_the_report_use_the_winner(run_dir, tmp_path, capsys):
    run_path = _copy(run_dir, tmp_path / "run")
    args = ["explain", str(run_path), "--n", "2", "--sweep", "--sweep-images", str(SWEEP_N), "--device", "cpu"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    data = json.loads((run_path / SWEEP_FILE).read_text())
    assert "CAM sweep on 12 class-balanced test images" in printed and "random" in printed
    for m in CAM_METHODS:
        assert m in printed
    info = json.loads((run_path / "explain" / "explain.json").read_text())
    method, layer, _ = choose_cam_from(data)
    assert info["method"] == method and info["layer"] == (layer or "layer3")
    assert info["sweep"]["best"] == data["best"]
    assert (run_path / "explain" / "cam_sweep.png").is_file()
    assert (run_path / "explain" / "cam_sweep_curves.png").is_file()
    rep = make_report(run_path, n=2, preview=0, robust_images=0, device="cpu")
    md = rep.markdown.read_text()
    assert "Which CAM method and layer (sweep)" in md and "random ordering (baseline)" in md
    numbers = json.loads((run_path / "report.json").read_text())
    assert (numbers["cam_method"], numbers["gradcam_layer"]) == (method, layer or "layer3")
    _, _, why = choose_cam_from(data)
    assert why in md  # the report says why these maps
    # an explicit method wins over the sweep's choice
    assert cli_main(["explain", str(run_path), "--n", "1", "--method", "hirescam", "--device", "cpu"]) == 0
    assert json.loads((run_path / "explain" / "explain.json").read_text())["method"] == "hirescam"


def test_bad_sweep_options_are_refused_before_loading(tmp_path, capsys):
    assert cli_main(["explain", str(tmp_path / "nowhere"), "--sweep", "--sweep-images", "0"]) == 2
    assert "--sweep-images = 0" in capsys.readouterr().err
    assert cli_main(["explain", str(tmp_path / "nowhere"), "--refresh"]) == 2
    assert "--sweep" in capsys.readouterr().err


def test_bad_method_is_refused_before_loading(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse's choices: usage, the allowed names, exit status 2
        cli_main(["explain", str(tmp_path / "nowhere"), "--method", "gradcam+"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--method" in err and "gradcam++" in err and "Traceback" not in err
