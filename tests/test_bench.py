"""Benchmark suite: bench.json structure, ratios, alternation, and what each side of a comparison really runs."""

from __future__ import annotations

import contextlib
import io
import json
import statistics

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import tiny_config
from vislab.augment import TensorAugment
from vislab.bench import (
    AUGMENT_SPEC,
    BENCH_FILE,
    RATIOS,
    SIZES,
    _suite,
    bench_recipes,
    bench_time_to_accuracy,
    bench_train,
    compute_ratios,
    course_loader,
    course_train,
    engine_defaults,
    format_table,
    run_bench,
    synthetic_data,
    time_to_accuracy,
)
from vislab.cli import main
from vislab.engine import DeviceLoader, Precision
from vislab.errors import ConfigError
from vislab.models import create_model

CPU = torch.device("cpu")
REQUIRED_RATIOS = (
    "augment_tensor_vs_albumentations",
    "train_resnet9_vislab_vs_course",
    "train_resnet9_vislab_vs_course_fp32",
    "evaluate_vislab_vs_course",
    "evaluate_vislab_vs_course_fp32",
)


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """One tiny run through the CLI: (bench.json as loaded, printed stdout)."""
    out = tmp_path_factory.mktemp("bench") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["bench", "--size", "tiny", "--device", "cpu", "--workers", "0", "--out", str(out)])
    assert rc == 0
    return json.loads((out / BENCH_FILE).read_text()), stdout.getvalue()


def test_bench_json_structure(tiny_bench):
    report, _ = tiny_bench
    for key in (
        "vislab",
        "date",
        "command",
        "machine",
        "device",
        "versions",
        "load_avg",
        "results",
        "ratios",
        "seconds",
    ):
        assert key in report
    assert report["command"].startswith("vislab bench")
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch_threads"] >= 1
    assert report["device"]["type"] == "cpu"
    assert {"torch", "albumentations", "numpy"} <= set(report["versions"])
    assert len(report["load_avg"]["before"]) == 3 and len(report["load_avg"]["after"]) == 3
    preset = SIZES["tiny"]
    expected = {
        "augment",
        "engine_overhead",
        "evaluate",
        "grad_cam",
        "lr_find",
        *(f"train_{c.model}" for c in preset.train),
    }
    assert expected <= set(report["results"])
    for key in expected:
        r = report["results"][key]
        assert r["unit"] in ("images/s", "s/step") and r["setup"]
        for fig in r["figures"].values():
            assert len(fig["runs"]) == preset.repeats
            assert all(v > 0 for v in fig["runs"])
            assert fig["median"] == pytest.approx(statistics.median(fig["runs"]))
            assert (fig["min"], fig["max"]) == (min(fig["runs"]), max(fig["runs"]))  # the spread is reported


def test_ratios_are_quotients_of_the_medians(tiny_bench):
    report, _ = tiny_bench
    ratios, results = report["ratios"], report["results"]
    assert set(REQUIRED_RATIOS) <= set(ratios)
    for name, value in ratios.items():
        key, num, den = RATIOS[name]
        figs = results[key]["figures"]
        assert value == pytest.approx(figs[num]["median"] / figs[den]["median"])
    # No compiled variant was asked for, so its ratio is absent rather than made up.
    assert "train_resnet9_compiled_vs_course" not in ratios


def test_table_is_printed_with_every_measurement(tiny_bench):
    report, stdout = tiny_bench
    assert stdout == format_table(report) + "\n" + stdout.splitlines()[-1] + "\n"
    assert stdout.splitlines()[-1].endswith(BENCH_FILE)
    for label in (
        "augmentation",
        "train resnet9",
        "train resnet18",
        "engine overhead",
        "evaluate",
        "grad-cam",
        "lr range test",
    ):
        assert label in stdout
    assert f"{report['ratios']['train_resnet9_vislab_vs_course']:.2f}x" in stdout
    assert f"{report['ratios']['train_resnet9_vislab_vs_course_fp32']:.2f}x" in stdout
    fig = report["results"]["train_resnet9"]["figures"]["course_fp32"]
    assert f"course fp32 NCHW {fig['median']:,.0f} images/s [{fig['min']:,.0f}-{fig['max']:,.0f}]" in stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_recipes_are_skipped_without_cuda(tiny_bench):
    report, stdout = tiny_bench
    assert report["results"]["recipes"] == {"skipped": "no CUDA device"}
    assert "skipped: no CUDA device" in stdout
    assert bench_recipes(CPU, None) == {"skipped": "no CUDA device"}


def test_recipes_item_trains_both_recipes_on_the_cuda_device_and_keeps_going_past_a_failure(monkeypatch, tmp_path):
    # The item's own loop (overrides, what it reads from each run, a refused recipe) on a machine without a GPU:
    # torch is told a CUDA device exists and vislab.train is replaced, so no CUDA code runs here.
    import types

    import vislab

    calls = []

    def fake_train(recipe, overrides, out=None):
        calls.append((recipe, overrides, out))
        if recipe == "resnet18-bn":
            raise vislab.VislabError("no data here")
        summary = {
            "epochs_completed": 24,
            "wall_seconds": 400.0,
            "train_seconds": 350.0,
            "lr_find": {"seconds": 20.0},
            "final": {"test_acc": 90.1},
            "best": {"test_acc": 90.2},
            "run_dir": str(out),
        }
        return types.SimpleNamespace(summary=summary)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    monkeypatch.setattr(vislab, "train", fake_train)
    (tmp_path / "data" / "train").mkdir(parents=True)
    res = bench_recipes(torch.device("cuda"), tmp_path / "bench", data_root=tmp_path / "data")
    assert [c[0] for c in calls] == ["resnet9-onecycle", "resnet18-bn"]
    for _, overrides, _ in calls:
        assert overrides["trainer.device"] == "cuda" and overrides["data.name"] == "imagefolder"
    assert calls[1][1]["trainer.epochs"] == 1 and calls[0][2] == tmp_path / "bench" / "recipes" / "resnet9-onecycle"
    assert res["resnet9-onecycle"] == {
        "epochs": 24,
        "wall_seconds": 400.0,
        "train_seconds": 350.0,
        "lr_find_seconds": 20.0,
        "test_acc": 90.1,
        "best_test_acc": 90.2,
        "run_dir": str(tmp_path / "bench" / "recipes" / "resnet9-onecycle"),
    }
    assert res["resnet18-bn"] == {"skipped": "no data here"}


def test_variants_alternate_within_repeats():
    calls = []
    variants = {name: (lambda name=name: calls.append(name) or float(len(calls))) for name in ("a", "b")}
    figures = _suite._side_by_side(variants, repeats=4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert figures["a"]["runs"] == [1.0, 4.0, 5.0, 8.0] and figures["a"]["median"] == 4.5


def test_compute_ratios_skips_missing_figures():
    results = {"augment": {"figures": {"tensor": {"median": 9.0}, "albumentations": {"median": 3.0}}}}
    assert compute_ratios(results) == {"augment_tensor_vs_albumentations": 3.0}


def test_started_keeps_every_batch():
    loader = DataLoader(list(range(10)), batch_size=3)
    assert [b.tolist() for b in _suite._started(loader)] == [b.tolist() for b in loader]


def test_bad_size_and_repeats_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="'huge'"):
        run_bench(tmp_path, size="huge")
    with pytest.raises(ConfigError, match="--repeats = 0"):
        run_bench(tmp_path, size="tiny", repeats=0)
    assert not (tmp_path / BENCH_FILE).exists()


def _record_forward(model: torch.nn.Module, seen: list) -> None:
    def hook(_mod, args):
        x = args[0]
        seen.append(
            {
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
                "dtype": x.dtype,
                "channels_last": x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(),
            }
        )

    model.register_forward_pre_hook(hook)


def test_course_baseline_is_dataloader_albumentations_plain_loop():
    import albumentations as A

    x, y, mean, std = synthetic_data(12)
    loader = course_loader(x, y, AUGMENT_SPEC, mean, std, batch_size=4, num_workers=0)
    assert type(loader) is DataLoader
    assert isinstance(loader.dataset.transform, A.Compose)
    names = [type(t).__name__ for t in loader.dataset.transform.transforms]
    assert names[:4] == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "Rotate"] and "CoarseDropout" in names
    torch.manual_seed(0)
    model = create_model("resnet9", num_classes=10, width=0.125)
    before = [p.detach().clone() for p in model.parameters()]
    seen: list = []
    _record_forward(model, seen)
    out = course_train(model, loader, torch.optim.SGD(model.parameters(), lr=0.1), CPU)
    assert out["images"] == 12 and len(seen) == 3
    assert all(not s["autocast"] and s["dtype"] == torch.float32 and not s["channels_last"] for s in seen)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it really trained
    # The strongest baseline: the same loop with one autocast line and channels_last.
    seen.clear()
    model = model.to(memory_format=torch.channels_last)
    course_train(
        model, loader, torch.optim.SGD(model.parameters(), lr=0.1), CPU, Precision("bf16", torch.bfloat16, False), True
    )
    assert len(seen) == 3 and all(
        s["autocast"] and s["autocast_dtype"] == torch.bfloat16 and s["channels_last"] for s in seen
    )


def test_with_fp16_the_vislab_side_trains_with_a_grad_scaler_as_training_does(monkeypatch):
    # fp16 is what CUDA GPUs below sm80 train in; autocast fp16 and GradScaler("cpu") let the bench's own
    # wiring run here. Every vislab-side step must get a scaler (one per model), as vislab.run gives it.
    fp16 = Precision("fp16", torch.float16, True)
    monkeypatch.setattr(_suite, "engine_defaults", lambda device: (fp16, False))
    scalers = []
    real_engine = _suite.train_one_epoch

    def engine_spy(model, loader, optimizer, **kw):
        scalers.append(kw.get("scaler"))
        return real_engine(model, loader, optimizer, **kw)

    monkeypatch.setattr(_suite, "train_one_epoch", engine_spy)
    monkeypatch.setattr(_suite, "course_train", lambda model, batches, *a: {"images": sum(len(y) for _, y in batches)})
    tiny = SIZES["tiny"]
    bench_train(tiny.train[0], device=CPU, repeats=1, workers=0)
    assert len(scalers) == 2 and all(isinstance(s, torch.amp.GradScaler) for s in scalers) and scalers[0] is scalers[1]
    scalers.clear()
    result = _suite.bench_engine_overhead(tiny.small, device=CPU, repeats=1)
    assert set(result["figures"]) == {"engine", "bare_loop"}
    assert scalers and all(isinstance(s, torch.amp.GradScaler) for s in scalers)


def test_augment_baseline_is_plain_per_sample_albumentations(monkeypatch):
    made = []
    real = _suite.course_loader
    monkeypatch.setattr(_suite, "course_loader", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    result = _suite.bench_augment(images=32, batch_size=8, device=CPU, repeats=1, workers=0)
    assert len(made) == 1 and type(made[0]) is DataLoader and type(made[0].sampler).__name__ == "RandomSampler"
    assert set(result["figures"]) == {"tensor", "albumentations"}


def test_bench_train_runs_the_engine_with_defaults_and_the_course_side_without(monkeypatch):
    precision, channels_last = engine_defaults(CPU)
    engine_calls, course_calls = [], []
    real_engine, real_course = _suite.train_one_epoch, _suite.course_train

    def engine_spy(model, loader, optimizer, **kw):
        seen: list = []
        handle = model.register_forward_pre_hook(
            lambda _m, a: seen.append(
                (torch.is_autocast_enabled("cpu"), a[0].is_contiguous(memory_format=torch.channels_last))
            )
        )
        try:
            out = real_engine(model, loader, optimizer, **kw)
        finally:
            handle.remove()
        engine_calls.append({"loader": loader, "seen": seen, **kw})
        return out

    def course_spy(model, batches, optimizer, device, prec, cl):
        seen: list = []
        handle = model.register_forward_pre_hook(
            lambda _m, a: seen.append(
                (
                    torch.is_autocast_enabled("cpu"),
                    a[0].dtype,
                    a[0].is_contiguous(memory_format=torch.channels_last) and not a[0].is_contiguous(),
                )
            )
        )
        try:
            out = real_course(model, batches, optimizer, device, prec, cl)
        finally:
            handle.remove()
        course_calls.append((prec.name, cl, seen))
        return out

    monkeypatch.setattr(_suite, "train_one_epoch", engine_spy)
    monkeypatch.setattr(_suite, "course_train", course_spy)
    case = SIZES["tiny"].train[0]
    result = bench_train(case, device=CPU, repeats=1, workers=0)
    assert set(result["figures"]) == {"vislab", "course", "course_fp32"}
    assert len(engine_calls) == 2 and len(course_calls) == 4  # warm-up + one timed repeat each
    for call in engine_calls:
        assert call["precision"] == precision and call["channels_last"] == channels_last
        assert isinstance(call["loader"], DeviceLoader) and isinstance(call["loader"].transform, TensorAugment)
        assert call["seen"] and all(s == (precision.dtype is not None, channels_last) for s in call["seen"])
    timed = engine_calls[-1]
    assert len(timed["loader"]) == case.steps and timed["loader"].batch_size == case.batch_size
    for want in ((precision.name, channels_last), ("fp32", False)):
        calls = [seen for prec, cl, seen in course_calls if (prec, cl) == want]
        assert len(calls) == 2 and sum(len(seen) for seen in calls) == 1 + case.steps
    # fp32 NCHW as the course ran it; the strongest baseline with the engine's autocast and memory format
    assert all(
        s == (False, torch.float32, False) for prec, cl, seen in course_calls if prec == "fp32" and not cl for s in seen
    )
    assert all(
        s[0] == (precision.dtype is not None) and s[2] == channels_last
        for prec, cl, seen in course_calls
        if (prec, cl) == (precision.name, channels_last)
        for s in seen
    )
    assert (
        result["settings"]["course_precision"] == precision.name
        and result["settings"]["course_fp32_precision"] == "fp32"
    )


def test_efficiency_is_the_training_flop_rate_over_the_matmul_rate(tiny_bench):
    report, stdout = tiny_bench
    eff = report["results"]["efficiency"]
    prec = report["device"]["precision"]
    assert set(eff["figures"]) == {"resnet9_w0.125", "airbench_w0.125"}
    for name, f in eff["figures"].items():
        want = f["median"] * eff["train_flops_per_image"][name] / eff["matmul_flops"][prec]
        assert eff["efficiency"][name] == pytest.approx(want)
    assert eff["matmul_flops"]["fp32"] > 0
    assert "matmul rate" in stdout and "% of the" in stdout


def test_train_flops_per_image_counts_forward_multiply_adds_six_times():
    from torch import nn

    from vislab.bench import train_flops_per_image

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    # torchinfo counts a Linear's multiply-adds as its weights plus its bias adds
    assert train_flops_per_image(model) == 6 * (3 * 32 * 32 * 10 + 10)


def test_time_to_accuracy_sums_epoch_seconds_until_the_target():
    hist = [
        {"seconds": 10.0, "test_acc": 50.0},
        {"seconds": 12.0, "test_acc": 70.0},
        {"seconds": 11.0, "test_acc": 69.0},
    ]
    assert time_to_accuracy(hist, 60.0) == 22.0
    assert time_to_accuracy(hist, 50.0) == 10.0
    assert time_to_accuracy(hist, 71.0) is None


def test_time_to_accuracy_row_trains_both_recipes_on_the_same_data(tmp_path, imagefolder):
    baseline = tmp_path / "old-quick.yaml"
    baseline.write_text("recipe: quick\nmodel:\n  name: resnet9\n  width: 0.125\ntrainer:\n  epochs: 1\n")
    tiny = {k: v for k, v in tiny_config(imagefolder, tmp_path / "cache").items() if not k.startswith("data.")}
    tiny.pop("model.name")  # each recipe keeps its own model
    tiny["model.width"] = 0.125
    candidate = tmp_path / "new-quick.yaml"  # a recipe given as a file, as the candidates of issue 14 were
    candidate.write_text("recipe: quick\n")
    res = bench_time_to_accuracy(
        tmp_path / "out", imagefolder, device=CPU, recipe=str(candidate), baseline=baseline, overrides=tiny
    )
    runs = res["runs"]
    assert set(runs) == {str(candidate), "baseline"} and runs["baseline"]["source"] == str(baseline)
    assert (tmp_path / "out" / "time_to_accuracy" / "new-quick").is_dir()
    assert (tmp_path / "out" / "time_to_accuracy" / "baseline").is_dir()
    assert runs[str(candidate)]["epochs"] == 2 and runs["baseline"]["epochs"] == 2  # the overrides go to both
    for r in runs.values():
        assert (tmp_path / "out" / "time_to_accuracy").is_dir()
        assert len(r["curve"]) == r["epochs"]
    assert res["target_acc"] == min(r["test_acc"] for r in runs.values())
    # the run whose final accuracy is the target reaches it by its last epoch at the latest
    slow = min(runs.values(), key=lambda r: r["test_acc"])
    assert slow["seconds_to_target"] is not None and slow["seconds_to_target"] <= slow["train_seconds"] + 1e-6
    table = format_table(
        {
            "results": {"time_to_accuracy": res},
            "ratios": {},
            "device": {"name": "cpu", "type": "cpu", "precision": "fp32", "channels_last": False},
            "size": "full",
            "date": "today",
            "versions": {"torch": torch.__version__},
            "repeats": 1,
            "load_avg": {"before": None, "after": None},
            "seconds": 1.0,
        }
    )
    assert f"target {res['target_acc']:.2f}% test accuracy" in table and str(baseline) in table


def test_time_to_accuracy_row_says_why_it_is_skipped(tmp_path):
    missing = bench_time_to_accuracy(None, tmp_path, device=CPU, baseline=tmp_path / "none.yaml")
    assert "no baseline recipe file" in missing["skipped"]
    nodata = bench_time_to_accuracy(None, None, device=CPU, baseline=__file__)
    assert "--data-root" in nodata["skipped"]
