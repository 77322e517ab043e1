"""The measurements of `vislab bench`: vislab's fast path and a course-style pipeline side by side, medians and ratios."""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import AugmentSpec, TensorAugment
from ..engine import (
    DeviceLoader,
    Precision,
    create_optimizer,
    evaluate,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    train_one_epoch,
)
from ..errors import ConfigError, VislabError
from ..explain import grad_cam
from ..models import create_model
from ..tuner import LRFinder
from ..version import __version__
from ._course import FP32, course_evaluate, course_loader, course_train

log = logging.getLogger(__name__)

# The augmentation, used by every measurement on both sides: pad-crop 4 + flip + rotate +-5 deg
# + one 16x16 cutout + normalize.
AUGMENT_SPEC = AugmentSpec(
    crop_pad=4, pad_mode="reflect", flip_p=0.5, rotate_deg=5.0, cutout_size=(16, 16), cutout_p=1.0
)
IMAGE_SIZE = 32
NUM_CLASSES = 10
GRAD_CAM_IMAGES = 25
BENCH_FILE = "bench.json"
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GLIBC_TUNABLES", "LD_PRELOAD", "CUDA_VISIBLE_DEVICES")
# Low enough that random labels never make the loss non-finite; the LR does not change a step's cost.
LR = 0.01
LR_FIND_RANGE = (1e-5, 1e-2)
# The course pipeline's figures on a Colab GPU, quoted by issue 6 (not measured here).
COURSE_REFERENCE = {
    "resnet18-bn": "40 s per epoch (BatchNorm) to 4.6 min (GroupNorm), Colab GPU",
    "resnet9-onecycle": "about 6 min for 24 epochs, 90.6% test accuracy, Colab GPU",
}
# ratio name -> (measurement, numerator figure, denominator figure); a ratio is the quotient of the two medians.
RATIOS = {
    "augment_tensor_vs_albumentations": ("augment", "tensor", "albumentations"),
    # "course" is the strongest course-style baseline (its loop with vislab's autocast precision and channels_last);
    # "course_fp32" is the loop as the course ran it (fp32, NCHW), so the _fp32 ratios include the precision's gain.
    "train_resnet9_vislab_vs_course": ("train_resnet9", "vislab", "course"),
    "train_resnet9_vislab_vs_course_fp32": ("train_resnet9", "vislab", "course_fp32"),
    "train_resnet9_compiled_vs_course": ("train_resnet9", "vislab_compiled", "course"),
    "train_resnet18_vislab_vs_course": ("train_resnet18", "vislab", "course"),
    "train_resnet18_vislab_vs_course_fp32": ("train_resnet18", "vislab", "course_fp32"),
    "train_resnet18_compiled_vs_course": ("train_resnet18", "vislab_compiled", "course"),
    "engine_vs_bare_loop": ("engine_overhead", "engine", "bare_loop"),
    "evaluate_vislab_vs_course": ("evaluate", "vislab", "course"),
    "evaluate_vislab_vs_course_fp32": ("evaluate", "vislab", "course_fp32"),
    "grad_cam_batched_vs_one_at_a_time": ("grad_cam", "batched", "one_at_a_time"),
    "lr_find_step_vs_train_step": ("lr_find", "lr_find", "train_step"),  # seconds per step: lower is cheaper
}


@dataclass(frozen=True)
class Case:
    """A model and how many optimizer steps of which batch size one timed repeat runs."""

    model: str  # registry name
    width: float  # channel multiplier (1.0 = the recipes' model)
    batch_size: int
    steps: int  # timed steps per repeat; an untimed warm-up step comes first

    def describe(self) -> str:
        return f"{self.model} width {self.width:g}, batch {self.batch_size}, {self.steps} steps"


@dataclass(frozen=True)
class BenchSize:
    """How much each measurement runs; `SIZES` holds the presets."""

    repeats: int  # timed repeats per figure (the median is reported)
    augment_images: int  # images per augmentation pass
    augment_batch: int
    train: tuple[Case, ...]  # item 2: vislab engine vs course-style baseline, one case per model
    small: Case  # items 3 and 4: engine overhead, evaluation, Grad-CAM and LR range test
    eval_images: int
    efficiency: tuple[Case, ...] = ()  # the quick and fast recipes' models, against the machine's matmul rate
    matmul_size: int = 2048  # side of the square matrices whose product measures the matmul rate
    time_to_accuracy: bool = False  # train the default recipe and the one it replaced to completion (needs data)


SIZES = {
    # Batch sizes are the recipes' (resnet9-onecycle 512, resnet18-bn 128). On the 2-core EPYC a width-1
    # ResNet9 step of 512 takes 2.5 s (vislab) to 8 s (course), so --quick times 2-3 steps per repeat:
    # long enough for a steady state, and the whole run stays near 3 minutes.
    "full": BenchSize(
        repeats=5,
        augment_images=10_000,
        augment_batch=512,
        train=(Case("resnet9", 1.0, 512, 6), Case("resnet18", 1.0, 128, 8)),
        small=Case("resnet9", 0.25, 512, 12),
        eval_images=10_000,
        efficiency=(Case("resnet9", 0.25, 512, 4), Case("airbench", 1.0, 1024, 2)),
        time_to_accuracy=True,
    ),
    "quick": BenchSize(
        repeats=5,
        augment_images=4096,
        augment_batch=512,
        train=(Case("resnet9", 1.0, 512, 2), Case("resnet18", 1.0, 128, 3)),
        small=Case("resnet9", 0.25, 512, 12),
        eval_images=2048,
        efficiency=(Case("resnet9", 0.25, 512, 2), Case("airbench", 1.0, 512, 1)),
        matmul_size=1024,
    ),
    # For the tests: every code path in seconds; the figures mean nothing.
    "tiny": BenchSize(
        repeats=2,
        augment_images=48,
        augment_batch=16,
        train=(Case("resnet9", 0.125, 8, 2), Case("resnet18", 0.125, 8, 2)),
        small=Case("resnet9", 0.125, 4, 12),
        eval_images=16,
        efficiency=(Case("resnet9", 0.125, 8, 1), Case("airbench", 0.125, 8, 1)),
        matmul_size=64,
    ),
}


# -- helpers ---------------------------------------------------------------------------------------


def synthetic_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...], tuple[float, ...]]:
    """n random 32x32 RGB uint8 images (N, 3, H, W), labels in [0, 10), and their per-channel mean/std in [0, 1] units.

    A step's cost does not depend on pixel values or labels, so random data measures throughput fairly.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=g)  # (N, C, H, W)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    xf = x.float() / 255
    return x, y, tuple(xf.mean(dim=(0, 2, 3)).tolist()), tuple(xf.std(dim=(0, 2, 3)).tolist())


def engine_defaults(device: torch.device) -> tuple[Precision, bool]:
    """The engine's default precision and memory format on `device` (trainer.precision / channels_last = auto)."""
    return resolve_precision("auto", device), resolve_channels_last("auto", device)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    # As vislab.run: on CUDA, drawing on the device avoids a host-to-device copy per batch.
    return torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(seed)


def _model(case: Case, device: torch.device, channels_last: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # both sides start from the same weights
    model = create_model(case.model, num_classes=NUM_CLASSES, width=case.width).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return create_optimizer(model, "sgd", LR, weight_decay=5e-4, nesterov=True)


def _scaler(device: torch.device, precision: Precision) -> torch.amp.GradScaler | None:
    # As vislab.run: fp16 (CUDA GPUs below sm80) trains with a GradScaler, so the vislab side pays for its
    # unscale and overflow check as training does (the course side makes its own, bench/_course.py).
    return torch.amp.GradScaler(device.type) if precision.use_scaler else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Callable[[], int], device: torch.device) -> float:
    """Images/s of one call of fn(), which returns how many images it processed."""
    _sync(device)
    start = time.perf_counter()
    n = fn()
    _sync(device)
    return n / (time.perf_counter() - start)


def _started(loader: Iterable) -> Iterator:
    """The loader's batches with the first one already fetched.

    Starting the worker processes is left out of the timed part; from then on the workers prepare the next
    batches while the timed loop trains on the earlier ones, the course pipeline's steady state.
    """
    it = iter(loader)
    first = next(it)
    return itertools.chain([first], it)


def _side_by_side(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, dict[str, Any]]:
    """Median, min, max and all runs of each variant; every repeat runs every variant once.

    Other work on a shared machine comes and goes, so the variants alternate within each repeat, in
    reversed order every other repeat: a drift in the load then hits both sides alike.
    """
    runs: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(variants[name]())
    return {name: {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v} for name, v in runs.items()}


def _compare(
    variants: dict[str, Callable[[], float]],
    repeats: int,
    *,
    setup: str,
    unit: str,
    settings: dict[str, Any],
    warm_up: bool = True,
) -> dict[str, Any]:
    """One measurement's result: each variant run once untimed (unless warm_up=False), then side by side."""
    if warm_up:
        for fn in variants.values():
            fn()  # first-call costs: oneDNN / cuDNN kernel choice, allocations, worker start-up
    return {"setup": setup, "unit": unit, "settings": settings, "figures": _side_by_side(variants, repeats)}


def _load_avg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


# -- the measurements ------------------------------------------------------------------------------


def bench_augment(
    *, images: int, batch_size: int, device: torch.device, repeats: int, workers: int, seed: int = 0
) -> dict[str, Any]:
    """Item 1: images/s of the tensor backend vs plain per-sample albumentations in a DataLoader, one epoch per run.

    The baseline is the course's DataLoader (no per-sample reseeding, which vislab's reproducible
    albumentations backend adds); its worker start-up and first batch are left out of the time.
    """
    x, y, mean, std = synthetic_data(images, seed)
    tensor_loader = DeviceLoader(
        x.to(device),
        y.to(device),
        batch_size,
        TensorAugment(AUGMENT_SPEC, mean, std),
        shuffle=True,
        generator=_generator(device, seed),
    )
    albu_loader = course_loader(
        x, y, AUGMENT_SPEC, mean, std, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )

    def drain(loader: Iterable) -> int:
        # Every batch ends on `device`, where training would use it.
        return sum(xb.to(device, non_blocking=True).shape[0] for xb, _ in loader)

    def albu_run() -> float:
        it = iter(albu_loader)
        next(it)  # workers started and the first batch made, untimed
        return _rate(lambda: drain(it), device)

    variants = {
        "tensor": lambda: _rate(lambda: drain(tensor_loader), device),
        "albumentations": albu_run,
    }
    return _compare(
        variants,
        repeats,
        setup=f"{images} images, batch {batch_size}, plain DataLoader + per-sample albumentations, {workers} workers",
        unit="images/s",
        settings={"images": images, "batch_size": batch_size, "workers": workers, "spec": AUGMENT_SPEC.__dict__},
    )


def bench_train(
    case: Case, *, device: torch.device, repeats: int, workers: int, seed: int = 0, compile_model: bool = False
) -> dict[str, Any]:
    """Item 2: training images/s through the vislab engine (defaults) vs two course-style baselines.

    Same model, weights, optimizer, batch size, augmentation and device on every side. vislab: uint8 data
    on the device, TensorAugment, `train_one_epoch` with the engine's default precision and memory format.
    Course: DataLoader + per-sample albumentations in `workers` processes and a plain loop, once with
    vislab's precision (autocast) and channels_last ("course", the strongest baseline) and once in fp32
    NCHW as the course ran it ("course_fp32").
    """
    precision, channels_last = engine_defaults(device)
    n = case.batch_size * case.steps
    x, y, mean, std = synthetic_data(n, seed)

    model = _model(case, device, channels_last, seed)
    optimizer = _optimizer(model)
    aug = TensorAugment(AUGMENT_SPEC, mean, std, channels_last=channels_last)
    gen = _generator(device, seed)
    x_dev, y_dev = x.to(device), y.to(device)
    loader = DeviceLoader(x_dev, y_dev, case.batch_size, aug, shuffle=True, drop_last=True, generator=gen)
    warm = DeviceLoader(x_dev[: case.batch_size], y_dev[: case.batch_size], case.batch_size, aug, generator=gen)
    course = course_loader(
        x, y, AUGMENT_SPEC, mean, std, batch_size=case.batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    course_sides = {"course": (precision, channels_last), "course_fp32": (FP32, False)}
    course_models = {name: _model(case, device, cl, seed) for name, (_, cl) in course_sides.items()}
    course_opts = {name: _optimizer(m) for name, m in course_models.items()}
    scaler = _scaler(device, precision)
    step = {"device": device, "precision": precision, "channels_last": channels_last, "scaler": scaler}

    def vislab_epoch(m: nn.Module) -> int:
        train_one_epoch(m, loader, optimizer, **step)
        return n

    def course_run(name: str) -> float:
        prec, cl = course_sides[name]
        batches = _started(course)
        return _rate(
            lambda: int(course_train(course_models[name], batches, course_opts[name], device, prec, cl)["images"]),
            device,
        )

    # Warm-up (untimed): oneDNN / cuDNN pick their kernels on the first step of each shape.
    train_one_epoch(model, warm, optimizer, **step)
    for name, (prec, cl) in course_sides.items():
        course_train(course_models[name], itertools.islice(course, 1), course_opts[name], device, prec, cl)
    variants: dict[str, Callable[[], float]] = {
        "vislab": lambda: _rate(lambda: vislab_epoch(model), device),
        "course": lambda: course_run("course"),
        "course_fp32": lambda: course_run("course_fp32"),
    }
    if compile_model:
        # Opt-in: on the 2-core EPYC, ResNet9 w1 bf16 ran 205 img/s compiled and 205 eager, after a 40 s compile.
        compiled = torch.compile(model)
        log.info("bench: compiling %s (untimed)", case.model)
        train_one_epoch(compiled, warm, optimizer, **step)
        variants["vislab_compiled"] = lambda: _rate(lambda: vislab_epoch(compiled), device)
    settings = {
        **case.__dict__,
        "workers": workers,
        "precision": precision.name,
        "channels_last": channels_last,
        "course_precision": precision.name,
        "course_channels_last": channels_last,
        "course_fp32_precision": "fp32",
        "course_fp32_channels_last": False,
        "optimizer": "sgd nesterov",
        "compile": compile_model,
    }
    return _compare(
        variants,
        repeats,
        setup=f"{case.describe()}, course workers {workers}",
        unit="images/s",
        settings=settings,
        warm_up=False,
    )


def bench_engine_overhead(case: Case, *, device: torch.device, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Item 3: `train_one_epoch` vs a bare loop over the same pre-made batches (same precision and format)."""
    precision, channels_last = engine_defaults(device)
    n = case.batch_size * case.steps
    x, y, mean, std = synthetic_data(n, seed)
    aug = TensorAugment(AUGMENT_SPEC, mean, std, channels_last=channels_last)
    # Augmented once, up front: only the loop itself differs between the two sides.
    batches = list(
        DeviceLoader(x.to(device), y.to(device), case.batch_size, aug, shuffle=True, generator=_generator(device, seed))
    )
    model = _model(case, device, channels_last, seed)
    optimizer = _optimizer(model)
    scaler = _scaler(device, precision)

    def engine() -> int:
        train_one_epoch(
            model, batches, optimizer, device=device, precision=precision, channels_last=channels_last, scaler=scaler
        )
        return n

    def bare() -> int:
        model.train()
        for xb, yb in batches:
            with precision.autocast(device):
                loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        return n

    variants = {"engine": lambda: _rate(engine, device), "bare_loop": lambda: _rate(bare, device)}
    settings = {**case.__dict__, "precision": precision.name, "channels_last": channels_last}
    return _compare(
        variants, repeats, setup=f"{case.describe()} (pre-made batches)", unit="images/s", settings=settings
    )


def bench_evaluate(
    case: Case, *, images: int, device: torch.device, repeats: int, workers: int, seed: int = 0
) -> dict[str, Any]:
    """Item 4a: `evaluate` over device-resident data vs the course's test loop over a DataLoader."""
    precision, channels_last = engine_defaults(device)
    batch_size = 2 * case.batch_size  # vislab.run's default trainer.eval_batch_size, used on both sides
    x, y, mean, std = synthetic_data(images, seed)
    aug = TensorAugment(AUGMENT_SPEC, mean, std, channels_last=channels_last)
    loader = DeviceLoader(x.to(device), y.to(device), batch_size, lambda xb, g: aug.normalize_only(xb))
    model = _model(case, device, channels_last, seed)
    course = course_loader(
        x,
        y,
        AUGMENT_SPEC,
        mean,
        std,
        batch_size=batch_size,
        train=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    course_sides = {
        "course": (precision, channels_last),
        "course_fp32": (FP32, False),
    }  # strongest / as the course ran it
    course_models = {name: _model(case, device, cl, seed) for name, (_, cl) in course_sides.items()}

    def vislab_eval() -> int:
        evaluate(model, loader, device=device, precision=precision, channels_last=channels_last)
        return images

    def course_run(name: str) -> float:
        prec, cl = course_sides[name]
        batches = _started(course)
        return _rate(lambda: int(course_evaluate(course_models[name], batches, device, prec, cl)["images"]), device)

    variants = {
        "vislab": lambda: _rate(vislab_eval, device),
        "course": lambda: course_run("course"),
        "course_fp32": lambda: course_run("course_fp32"),
    }
    return _compare(
        variants,
        repeats,
        setup=f"{case.model} width {case.width:g}, {images} images, batch {batch_size}, course workers {workers}",
        unit="images/s",
        settings={
            "model": case.model,
            "width": case.width,
            "images": images,
            "batch_size": batch_size,
            "workers": workers,
        },
    )


def bench_grad_cam(
    case: Case, *, device: torch.device, repeats: int, seed: int = 0, images: int = GRAD_CAM_IMAGES
) -> dict[str, Any]:
    """Item 4b: Grad-CAM maps per second for `images` images, one batched call vs one call per image."""
    _, channels_last = engine_defaults(device)
    x, y, mean, std = synthetic_data(images, seed)
    inp = TensorAugment(AUGMENT_SPEC, mean, std).normalize_only(x.to(device))  # (N, 3, H, W)
    targets = y.to(device)
    model = _model(case, device, channels_last, seed)  # a trained vislab model is channels_last on CPU and CUDA

    def batched() -> int:
        grad_cam(model, inp, targets)
        return images

    def one_at_a_time() -> int:
        for i in range(images):
            grad_cam(model, inp[i : i + 1], targets[i : i + 1])
        return images

    variants = {"batched": lambda: _rate(batched, device), "one_at_a_time": lambda: _rate(one_at_a_time, device)}
    return _compare(
        variants,
        repeats,
        setup=f"{case.model} width {case.width:g}, {images} images",
        unit="images/s",
        settings={"model": case.model, "width": case.width, "images": images},
    )


def bench_lr_find(case: Case, *, device: torch.device, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Item 4c: seconds per step of the LR range test (snapshot and restore included) vs a training step."""
    precision, channels_last = engine_defaults(device)
    x, y, mean, std = synthetic_data(case.batch_size * case.steps, seed)
    gen = _generator(device, seed)
    aug = TensorAugment(AUGMENT_SPEC, mean, std, channels_last=channels_last)
    loader = DeviceLoader(x.to(device), y.to(device), case.batch_size, aug, shuffle=True, drop_last=True, generator=gen)
    model = _model(case, device, channels_last, seed)
    optimizer = _optimizer(model)
    finder = LRFinder(
        model, optimizer, loader, device=device, precision=precision, channels_last=channels_last, generator=gen
    )
    scaler = _scaler(device, precision)

    def sweep() -> float:
        r = finder.range_test(*LR_FIND_RANGE, num_iter=case.steps)
        return r["seconds"] / max(r["steps"], 1)

    def train_step() -> float:
        _sync(device)
        start = time.perf_counter()
        train_one_epoch(
            model, loader, optimizer, device=device, precision=precision, channels_last=channels_last, scaler=scaler
        )
        _sync(device)
        return (time.perf_counter() - start) / len(loader)

    return _compare(
        {"lr_find": sweep, "train_step": train_step},
        repeats,
        setup=f"{case.describe()}, lr {LR_FIND_RANGE[0]:g}..{LR_FIND_RANGE[1]:g}",
        unit="s/step",
        settings={**case.__dict__, "start_lr": LR_FIND_RANGE[0], "end_lr": LR_FIND_RANGE[1]},
    )


def _matmul_rate(n: int, dtype: torch.dtype, device: torch.device) -> float:
    """FLOP/s of one (n x n) @ (n x n) product in `dtype`: 2 n^3 multiply-adds counted as FLOPs."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    a @ b  # first-call costs
    _sync(device)
    t0 = time.perf_counter()
    a @ b
    _sync(device)
    return 2 * n**3 / (time.perf_counter() - t0)


def train_flops_per_image(model: nn.Module, image_size: int = 32) -> float:
    """FLOPs one training image costs: the forward pass's multiply-adds (torchinfo) x 2 FLOPs x 3 (forward,
    and a backward pass of about twice the forward's work)."""
    from torchinfo import summary

    info = summary(model, input_size=(1, 3, image_size, image_size), verbose=0, device="cpu", mode="train")
    return 6.0 * float(info.total_mult_adds)


def bench_efficiency(
    cases: tuple[Case, ...], *, device: torch.device, repeats: int, matmul_size: int, seed: int = 0
) -> dict[str, Any]:
    """Training throughput of the quick and fast recipes' models as a share of the machine's matmul rate.

    The rate is the median of `repeats` square products in the engine's precision (and fp32 beside it when
    that is another); a model's FLOP rate is images/s x train_flops_per_image. The share says how far the
    step is from the machine (convolutions as matmuls, memory traffic, the optimizer), not how good the
    model is.
    """
    precision, channels_last = engine_defaults(device)
    dtypes = {"fp32": torch.float32, **({precision.name: precision.dtype} if precision.dtype is not None else {})}
    matmul = {
        name: statistics.median(_matmul_rate(matmul_size, dt, device) for _ in range(repeats))
        for name, dt in dtypes.items()
    }
    rate = matmul[precision.name]
    variants: dict[str, Callable[[], float]] = {}
    flops: dict[str, float] = {}
    for case in cases:
        name = f"{case.model}_w{case.width:g}"
        x, y, mean, std = synthetic_data(case.batch_size * case.steps, seed)
        model = _model(case, device, channels_last, seed)
        flops[name] = train_flops_per_image(create_model(case.model, num_classes=NUM_CLASSES, width=case.width))
        opt = _optimizer(model)
        aug = TensorAugment(AUGMENT_SPEC, mean, std, channels_last=channels_last)
        loader = DeviceLoader(
            x.to(device),
            y.to(device),
            case.batch_size,
            aug,
            shuffle=True,
            drop_last=True,
            generator=_generator(device, seed),
        )

        scaler = _scaler(device, precision)

        def epoch(m=model, o=opt, ld=loader, sc=scaler, n=case.batch_size * case.steps) -> int:
            train_one_epoch(m, ld, o, device=device, precision=precision, channels_last=channels_last, scaler=sc)
            return n

        variants[name] = lambda fn=epoch: _rate(fn, device)
    res = _compare(
        variants,
        repeats,
        setup=", ".join(c.describe() for c in cases) + f"; matmul {matmul_size}x{matmul_size}",
        unit="images/s",
        settings={"cases": [c.__dict__ for c in cases], "precision": precision.name, "channels_last": channels_last},
    )
    res["matmul_flops"] = matmul
    res["train_flops_per_image"] = flops
    res["efficiency"] = {k: f["median"] * flops[k] / rate for k, f in res["figures"].items()}
    return res


def bench_recipes(device: torch.device, out: Path | None, data_root: str | Path | None = None) -> dict[str, Any]:
    """Item 5, CUDA only: wall time and test accuracy of `resnet9-onecycle` (24 epochs) and one `resnet18-bn` epoch."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return {"skipped": "no CUDA device" if not torch.cuda.is_available() else f"device is {device.type}, not CUDA"}
    from .. import train  # the public API: the bench trains recipes exactly as a user would
    from ..env import device_name

    base: dict[str, Any] = {"trainer.device": str(device), "trainer.progress": False, "trainer.report": False}
    if data_root is not None:
        root = Path(data_root)
        base.update({"data.name": "imagefolder" if (root / "train").is_dir() else "cifar10", "data.root": str(root)})
    results: dict[str, Any] = {"course_reference": COURSE_REFERENCE}
    for recipe, extra in (("resnet9-onecycle", {}), ("resnet18-bn", {"trainer.epochs": 1})):
        log.info("bench: training recipe %s on %s", recipe, device_name(device))
        try:
            run = train(recipe, {**base, **extra}, out=None if out is None else out / "recipes" / recipe)
        except VislabError as e:  # e.g. no CIFAR-10 on an offline machine: say so, keep the other figures
            results[recipe] = {"skipped": str(e)}
            continue
        s = run.summary
        results[recipe] = {
            "epochs": s["epochs_completed"],
            "wall_seconds": s["wall_seconds"],
            "train_seconds": s["train_seconds"],
            "lr_find_seconds": (s.get("lr_find") or {}).get("seconds"),
            "test_acc": s["final"]["test_acc"],
            "best_test_acc": s["best"]["test_acc"],
            "run_dir": s["run_dir"],
        }
    return results


# The default recipe as shipped until issue 14, kept in the checkout to time the new default against it.
BASELINE_QUICK = Path("benchmarks") / "quick-2026-11-23.yaml"


def time_to_accuracy(history: list[dict[str, Any]], target: float) -> float | None:
    """Training seconds (sum of the epochs' `seconds`) until the first epoch whose test accuracy reaches `target`."""
    spent = 0.0
    for row in history:
        spent += float(row["seconds"])
        if float(row["test_acc"]) >= target:
            return spent
    return None


def bench_time_to_accuracy(
    out: Path | None,
    data_root: str | Path | None,
    *,
    device: torch.device,
    recipe: str = "quick",
    baseline: str | Path = BASELINE_QUICK,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Item 6 (full mode): train `recipe` and the `baseline` recipe file to completion on the same data, one after
    the other in this process, and compare wall time, final test accuracy and the training time each needs to
    reach the lower of the two final accuracies. `overrides` go to both (the tests shrink the runs with them)."""
    from .. import train  # the public API: the bench trains recipes exactly as a user would

    base_path = Path(baseline)
    if not base_path.is_file():
        return {"skipped": f"no baseline recipe file {str(base_path)!r} (run from the checkout, where benchmarks/ is)"}
    if data_root is None:
        return {
            "skipped": "no data: give --data-root (an imagefolder copy of CIFAR-10, e.g. ../shared/data/cifar10-jpeg)"
        }
    root = Path(data_root)
    common: dict[str, Any] = {
        "trainer.device": str(device),
        "trainer.progress": False,
        "trainer.report": False,
        "data.name": "imagefolder" if (root / "train").is_dir() else "cifar10",
        "data.root": str(root),
        **(overrides or {}),
    }
    runs: dict[str, Any] = {}
    for name, source in ((recipe, recipe), ("baseline", str(base_path))):
        log.info("bench: training %s to completion for the time-to-accuracy row", source)
        folder = "baseline" if name == "baseline" else Path(name).stem  # a recipe may be given as a file path
        try:
            run = train(source, common, out=None if out is None else out / "time_to_accuracy" / folder)
        except VislabError as e:  # e.g. no CIFAR-10 on an offline machine: say so, keep the other figures
            return {"skipped": str(e)}
        s = run.summary
        runs[name] = {
            "source": source,
            "epochs": s["epochs_completed"],
            "wall_seconds": s["wall_seconds"],
            "train_seconds": s["train_seconds"],
            "test_acc": s["final"]["test_acc"],
            "tta_test_acc": (s.get("tta") or {}).get("tta_test_acc"),
            "curve": [(float(r["seconds"]), float(r["test_acc"])) for r in run.history],
            "run_dir": s["run_dir"],
        }
        runs[name]["_history"] = run.history
    target = min(r["test_acc"] for r in runs.values())
    for r in runs.values():
        r["seconds_to_target"] = time_to_accuracy(r.pop("_history"), target)
    return {
        "target_acc": target,
        "runs": runs,
        "setup": f"{recipe} vs {base_path.name}, same data, one after the other",
    }


# -- the suite -------------------------------------------------------------------------------------


def compute_ratios(results: dict[str, Any]) -> dict[str, float]:
    """Each ratio in RATIOS whose two figures were measured: the numerator's median over the denominator's."""
    ratios = {}
    for name, (key, num, den) in RATIOS.items():
        figures = results.get(key, {}).get("figures", {})
        if num in figures and den in figures:
            ratios[name] = figures[num]["median"] / figures[den]["median"]
    return ratios


def _check_int(field: str, value: Any, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise ConfigError(f"{field} = {value!r} is not valid; use an integer >= {lowest}.")
    return value


def run_bench(
    out: str | Path | None = None,
    *,
    size: str = "full",
    device: str = "auto",
    repeats: int | None = None,
    workers: int | None = None,
    seed: int = 0,
    compile_model: bool = False,
    recipes: bool = True,
    data_root: str | Path | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run every measurement in this process, side by side; returns the report and writes `out/bench.json`.

    size: "full", "quick" (a few minutes on a 2-core CPU) or "tiny" (tests); repeats overrides the
    preset's; workers: the albumentations/course DataLoader processes (default: the CPU count).
    """
    if size not in SIZES:
        raise ConfigError(f"bench size = {size!r} is not known; choose one of {', '.join(SIZES)}.")
    preset = SIZES[size] if repeats is None else replace(SIZES[size], repeats=_check_int("--repeats", repeats, 1))
    workers = (os.cpu_count() or 1) if workers is None else _check_int("--workers", workers, 0)
    dev = resolve_device(device)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        try:  # fail now, not after minutes of measuring
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"--out {str(out_dir)!r} cannot be created ({e.strerror}); choose another folder."
            ) from None
    from ..env import determinism, device_name, versions

    precision, channels_last = engine_defaults(dev)
    load_before = _load_avg()
    started = time.perf_counter()
    log.info(
        "bench (%s) on %s: %s, channels_last=%s, median of %d repeats",
        size,
        device_name(dev),
        precision.name,
        channels_last,
        preset.repeats,
    )
    common = {"device": dev, "repeats": preset.repeats, "seed": seed}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (
            "augment",
            lambda: bench_augment(
                images=preset.augment_images, batch_size=preset.augment_batch, workers=workers, **common
            ),
        ),
        *[
            (f"train_{c.model}", lambda c=c: bench_train(c, workers=workers, compile_model=compile_model, **common))
            for c in preset.train
        ],
        ("engine_overhead", lambda: bench_engine_overhead(preset.small, **common)),
        ("evaluate", lambda: bench_evaluate(preset.small, images=preset.eval_images, workers=workers, **common)),
        ("grad_cam", lambda: bench_grad_cam(preset.small, **common)),
        ("lr_find", lambda: bench_lr_find(preset.small, **common)),
        (
            "efficiency",
            lambda: bench_efficiency(preset.efficiency, matmul_size=preset.matmul_size, **common),
        ),
    ]
    results: dict[str, Any] = {}
    for key, measure in steps:
        t0 = time.perf_counter()
        # As training (vislab.run): cuDNN autotuning on CUDA, for both sides of every comparison; restored after.
        with determinism(False, dev):
            results[key] = measure()
        medians = ", ".join(f"{k} {v['median']:.4g}" for k, v in results[key]["figures"].items())
        log.info("bench: %-16s %s (%s) in %.0f s", key, medians, results[key]["unit"], time.perf_counter() - t0)
    results["recipes"] = (
        bench_recipes(dev, out_dir, data_root) if recipes else {"skipped": "not requested (--no-recipes)"}
    )
    results["time_to_accuracy"] = (
        bench_time_to_accuracy(out_dir, data_root, device=dev)
        if preset.time_to_accuracy
        else {"skipped": f"only in the full bench (this is --size {size})"}
    )

    report = {
        "vislab": __version__,
        "date": datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "size": size,
        "repeats": preset.repeats,
        "machine": {
            "cpu": device_name(torch.device("cpu")),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            # Settings outside vislab that change the figures (GLIBC_TUNABLES=glibc.malloc.hugetlb=1: see docs/benchmarks.md).
            "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        },
        "device": {
            "type": dev.type,
            "name": device_name(dev),
            "precision": precision.name,
            "channels_last": channels_last,
        },
        "versions": versions(),
        "load_avg": {"before": load_before, "after": _load_avg()},
        "seconds": time.perf_counter() - started,
        "results": results,
        "ratios": compute_ratios(results),
    }
    if out_dir is not None:
        (out_dir / BENCH_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


# -- the table -------------------------------------------------------------------------------------

_COURSE = {
    "vislab": "vislab",
    "course": "course (same precision, channels_last)",
    "course_fp32": "course fp32 NCHW",
    "vislab_compiled": "compiled",
}
_ROWS = (  # (measurement, row label, label of each figure)
    ("augment", "augmentation", {"tensor": "tensor", "albumentations": "albumentations"}),
    ("train_resnet9", "train resnet9", _COURSE),
    ("train_resnet18", "train resnet18", _COURSE),
    ("engine_overhead", "engine overhead", {"engine": "engine", "bare_loop": "bare loop"}),
    ("evaluate", "evaluate", _COURSE),
    ("grad_cam", "grad-cam", {"batched": "batched", "one_at_a_time": "one at a time"}),
    ("lr_find", "lr range test", {"lr_find": "lr-find", "train_step": "train step"}),
)


def _value(v: float, unit: str) -> str:
    return f"{v:.3f} {unit}" if unit == "s/step" else f"{v:,.0f} {unit}"


def _spread(f: dict[str, Any], unit: str) -> str:
    """median [min-max]: the spread over the repeats shows how far the machine's load moved the figure."""
    fmt = (lambda v: f"{v:.3f}") if unit == "s/step" else (lambda v: f"{v:,.0f}")
    lo, hi = f.get("min", f["median"]), f.get("max", f["median"])
    return f"{_value(f['median'], unit)} [{fmt(lo)}-{fmt(hi)}]"


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: one row per measurement, medians, the ratio of the two sides."""
    results, ratios = report["results"], report["ratios"]
    by_figures = {(key, num, den): name for name, (key, num, den) in RATIOS.items()}
    rows = [("measurement", "setup", "vislab side", "baseline side", "ratio")]
    for key, label, names in _ROWS:
        if key not in results:
            continue
        r = results[key]
        figs = list(r["figures"].items())
        (a, fa), (b, fb) = figs[0], figs[1]
        ratio = f"{ratios[by_figures[(key, a, b)]]:.2f}x"
        if key == "engine_overhead":
            ratio += f" ({100 * (fb['median'] / fa['median'] - 1):+.1f}% time)"
        rows.append(
            (label, r["setup"], f"{names[a]} {_spread(fa, r['unit'])}", f"{names[b]} {_spread(fb, r['unit'])}", ratio)
        )
        for extra, fe in figs[2:]:
            if extra.startswith("course"):  # another baseline: vislab's side against it
                ratio = ratios.get(by_figures.get((key, a, extra), ""), fa["median"] / fe["median"])
                rows.append(("", "", "", f"{names[extra]} {_spread(fe, r['unit'])}", f"{ratio:.2f}x"))
            else:
                ratio = ratios.get(by_figures.get((key, extra, b), ""), fe["median"] / fb["median"])
                rows.append(("", "torch.compile", f"{names[extra]} {_spread(fe, r['unit'])}", "", f"{ratio:.2f}x"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    dev = report["device"]
    lines = [
        (
            f"vislab bench ({report['size']}), {report['date']}: {dev['name']}, device {dev['type']} ({dev['precision']}, "
            f"channels_last={dev['channels_last']}), torch {report['versions']['torch']}, median [min-max] of {report['repeats']} repeats"
        ),
        f"load average (1/5/15 min) before {report['load_avg']['before']}, after {report['load_avg']['after']}; {report['seconds']:.0f} s",
        "",
    ]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    eff = results.get("efficiency")
    if eff:
        prec = report["device"]["precision"]
        rates = ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in eff["matmul_flops"].items())
        lines.append(f"matmul rate ({eff['setup'].rpartition('; ')[2]}): {rates}")
        for name, f in eff["figures"].items():
            lines.append(
                f"training {name}: {_spread(f, 'images/s')} x {eff['train_flops_per_image'][name] / 1e9:.3f} GFLOP per image "
                f"= {100 * eff['efficiency'][name]:.0f}% of the {prec} matmul rate"
            )
    tta = results.get("time_to_accuracy", {})
    if "skipped" in tta:
        lines.append(f"time to accuracy: skipped: {tta['skipped']}")
    elif tta:
        lines.append(f"time to accuracy ({tta['setup']}), target {tta['target_acc']:.2f}% test accuracy:")
        for r in tta["runs"].values():
            reach = f"{r['seconds_to_target']:.0f} s" if r["seconds_to_target"] is not None else "not reached"
            extra = f", {r['tta_test_acc']:.2f}% with TTA" if r.get("tta_test_acc") is not None else ""
            lines.append(
                f"  {r['source']}: {r['test_acc']:.2f}%{extra} after {r['epochs']} epochs, {r['wall_seconds']:.0f} s wall "
                f"({r['train_seconds']:.0f} s training); target reached after {reach} of training"
            )
    rec = results.get("recipes", {})
    if "skipped" in rec:
        lines.append(f"recipes on CUDA: skipped: {rec['skipped']}")
    else:
        for recipe, ref in rec.get("course_reference", {}).items():
            r = rec.get(recipe, {})
            if "skipped" in r:
                lines.append(f"{recipe}: skipped: {r['skipped']}")
                continue
            lines.append(
                f"{recipe}: {r['epochs']} epochs in {r['wall_seconds']:.0f} s wall ({r['train_seconds']:.0f} s training), "
                f"test accuracy {r['test_acc']:.2f}% (best {r['best_test_acc']:.2f}%); course: {ref}"
            )
    return "\n".join(lines)
