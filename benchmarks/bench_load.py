"""Time loading an imagefolder data set: cold (empty vislab cache, decodes every file) and warm (from the .npz cache).

Usage: python benchmarks/bench_load.py [--root ../shared/data/cifar10-jpeg] [--cache-dir DIR] [--json out.json]

"Cold" means vislab's cache is empty; the operating system may still hold the image files in its page
cache from an earlier run, so the first run after a reboot is slower still.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from vislab.data import load_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="imagefolder root (train/<class>, test/<class>)")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="parent folder for the cache (default: a fresh temp folder)"
    )
    p.add_argument("--repeats", type=int, default=3, help="warm loads; the median is reported")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--keep-cache", action="store_true", help="do not delete the cache written by this run")
    p.add_argument("-v", "--verbose", action="store_true", help="show vislab's log lines")
    return p.parse_args(argv)


def _load_avg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.cache_dir is not None:
        args.cache_dir.mkdir(parents=True, exist_ok=True)
    # Always a fresh sub-folder, so that "cold" really starts from an empty cache.
    cache = Path(tempfile.mkdtemp(prefix="vislab-bench-load-", dir=args.cache_dir))
    load_before = _load_avg()
    try:
        start = time.perf_counter()
        ds = load_dataset("imagefolder", args.root, cache_dir=cache)
        cold_s = time.perf_counter() - start
        warm = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            load_dataset("imagefolder", args.root, cache_dir=cache)
            warm.append(time.perf_counter() - start)
    finally:
        if not args.keep_cache:
            shutil.rmtree(cache, ignore_errors=True)
    n = len(ds.train_y) + len(ds.test_y)
    warm_s = statistics.median(warm)
    result = {
        "root": str(args.root),
        "images": n,
        "image_size": list(ds.image_size),
        "cold_s": round(cold_s, 3),
        "cold_images_per_s": round(n / cold_s),
        "warm_s": round(warm_s, 3),
        "warm_runs_s": [round(w, 3) for w in warm],
        "warm_images_per_s": round(n / warm_s),
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": _load_avg(),
        "python": platform.python_version(),
    }
    print(f"data set   {args.root}: {n} images of {ds.image_size[0]}x{ds.image_size[1]}, {ds.num_classes} classes")
    print(f"cold load  {cold_s:7.2f} s  {n / cold_s:10,.0f} images/s  (empty vislab cache: decode + write .npz)")
    print(
        f"warm load  {warm_s:7.2f} s  {n / warm_s:10,.0f} images/s  (median of {len(warm)}: {', '.join(f'{w:.2f}' for w in warm)} s)"
    )
    print(f"machine    {os.cpu_count()} CPUs, load average before {load_before}, after {result['load_avg_after']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
