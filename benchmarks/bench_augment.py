"""Images/s of the batched tensor backend vs the albumentations DataLoader backend, on random 32x32 uint8 data.

Item 1 of `vislab bench` on its own (the measurement lives in `vislab.bench.bench_augment`). Both run
pad-crop 4 (reflect) + flip 0.5 + rotate 5 deg + one 16x16 cutout + normalize. The tensor backend augments
whole batches in this process (torch intra-op threads); the albumentations backend runs per sample in
`--workers` DataLoader worker processes. Each repeat is one full pass over the data per backend (the backends
alternate); a warm-up pass is excluded; the median of the repeats is reported.

    python benchmarks/bench_augment.py --n 10000 --repeats 3 --json bench-out/augment.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from vislab.bench import bench_augment, compute_ratios
from vislab.engine import resolve_device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="images per pass")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per backend (median reported)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="DataLoader workers for albumentations")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="where the tensor backend runs and batches end up (cpu, cuda, auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench_augment(
        images=args.n,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        repeats=args.repeats,
        workers=args.workers,
        seed=args.seed,
    )
    ratio = compute_ratios({"augment": result})["augment_tensor_vs_albumentations"]
    print(
        f"\n{result['setup']}, {args.repeats} repeats, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    )
    print(f"{'backend':<16}{'median img/s':>14}{'min':>10}{'max':>10}")
    for name, fig in result["figures"].items():
        print(f"{name:<16}{fig['median']:>14,.0f}{min(fig['runs']):>10,.0f}{max(fig['runs']):>10,.0f}")
    print(f"ratio tensor / albumentations: {ratio:.2f}x")
    result.update(
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        torch=torch.__version__,
        ratio=ratio,
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
