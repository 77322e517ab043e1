"""Images/s of the batched tensor backend vs the albumentations DataLoader backend, on random 32x32 uint8 data.

Both run pad-crop 4 (reflect) + flip 0.5 + rotate 5 deg + one 16x16 cutout + normalize. The tensor backend
augments whole batches in this process (torch intra-op threads); the albumentations backend runs per sample
in `--workers` DataLoader worker processes. Each repeat is one full pass over the data per backend (the backends
alternate); a warm-up pass is excluded; the median of the repeats is reported.

    python benchmarks/bench_augment.py --n 10000 --repeats 3 --json bench-out/augment.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from vislab.augment import AugmentSpec, TensorAugment, albumentations_loader

SPEC = AugmentSpec(crop_pad=4, pad_mode="reflect", flip_p=0.5, rotate_deg=5.0, cutout_size=(16, 16), cutout_p=1.0)
IMAGE_SIZE = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="images per pass")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per backend (median reported)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers for albumentations")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def tensor_pass(x: torch.Tensor, aug: TensorAugment, batch_size: int, generator: torch.Generator) -> int:
    # What the training loop does per epoch: one permutation, then index + augment each batch.
    order = torch.randperm(x.shape[0], generator=generator)
    seen = 0
    for i in range(0, x.shape[0], batch_size):
        out = aug(x[order[i : i + batch_size]], generator)
        seen += out.shape[0]
    return seen


def loader_pass(loader: torch.utils.data.DataLoader) -> int:
    return sum(images.shape[0] for images, _ in loader)


def rate(fn) -> float:
    """Images/s of one call of fn(), which returns the number of images it produced."""
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randint(0, 256, (args.n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8, generator=g)  # (N, C, H, W)
    y = torch.randint(0, 10, (args.n,), generator=g)
    mean = tuple((x.float().mean(dim=(0, 2, 3)) / 255).tolist())
    std = tuple((x.float().std(dim=(0, 2, 3)) / 255).tolist())

    aug = TensorAugment(SPEC, mean, std)
    loader = albumentations_loader(
        x, y, SPEC, mean, std, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, seed=args.seed
    )
    passes = {"tensor": lambda: tensor_pass(x, aug, args.batch_size, g), "albumentations": lambda: loader_pass(loader)}
    for fn in passes.values():
        fn()  # warm-up, excluded: worker start-up, first-call allocations
    # Repeats alternate between the backends so that both see the same (shared, drifting) machine load.
    rates: dict[str, list[float]] = {name: [] for name in passes}
    for _ in range(args.repeats):
        for name, fn in passes.items():
            rates[name].append(rate(fn))
    del loader  # stops the persistent workers

    rows = rates
    medians = {k: statistics.median(v) for k, v in rows.items()}
    ratio = medians["tensor"] / medians["albumentations"]

    print(f"\n{args.n} images {IMAGE_SIZE}x{IMAGE_SIZE}, batch {args.batch_size}, {args.repeats} repeats, "
          f"torch threads {torch.get_num_threads()}, albumentations workers {args.workers}, cpus {os.cpu_count()}")
    print(f"{'backend':<16}{'median img/s':>14}{'min':>10}{'max':>10}")
    for name, rates in rows.items():
        print(f"{name:<16}{medians[name]:>14,.0f}{min(rates):>10,.0f}{max(rates):>10,.0f}")
    print(f"ratio tensor / albumentations: {ratio:.2f}x")

    result = {
        "spec": SPEC.__dict__,
        "n": args.n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "images_per_s": rows,
        "median_images_per_s": medians,
        "ratio": ratio,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
