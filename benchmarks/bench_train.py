"""Training-step throughput (images/s) of one model under each precision x memory format, in one run.

Decides the CPU defaults of `trainer.precision` and `trainer.channels_last` ("auto"). Synthetic
data (the step time does not depend on pixel values); each figure is the median of --repeats.
Usage: python benchmarks/bench_train.py --model resnet9 --width 0.25 --batch-size 512
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from vislab.engine import resolve_device, resolve_precision
from vislab.models import create_model


def step_rate(model_name, width, batch_size, steps, repeats, precision, channels_last, device) -> float:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, width=width).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    prec = resolve_precision(precision, device)
    x = torch.randn(batch_size, 3, 32, 32, device=device).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def run(n):
        for _ in range(n):
            with prec.autocast(device):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(2)  # warm-up: oneDNN/cuDNN kernel selection
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(steps)
        rates.append(steps * batch_size / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet9")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    device = resolve_device(a.device)
    rows = []
    for precision in ("fp32", "bf16"):
        for cl in (False, True):
            r = step_rate(a.model, a.width, a.batch_size, a.steps, a.repeats, precision, cl, device)
            rows.append({"precision": precision, "channels_last": cl, "images_per_s": r})
            print(
                f"{a.model} w{a.width} bs{a.batch_size} {precision:5s} channels_last={cl!s:5s} {r:9.0f} img/s",
                flush=True,
            )
    base = rows[0]["images_per_s"]
    for r in rows:
        r["vs_fp32_contiguous"] = r["images_per_s"] / base
    print(
        "ratios vs fp32 contiguous: "
        + ", ".join(
            f"{r['precision']}/{'NHWC' if r['channels_last'] else 'NCHW'} {r['vs_fp32_contiguous']:.2f}x" for r in rows
        )
    )
    if a.json:
        meta = {
            "device": str(device),
            "machine": platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "args": vars(a), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
