"""Issue 14's accuracy-vs-time curve on the 2-core fp32 CPU: test accuracy after each epoch against the
seconds spent so far, for today's quick, quick-b and fast (with its EMA, 10 epochs and cut to 6), beside the
two targets.

Reads figures only: the side-by-side time-to-accuracy run (time_to_accuracy-2026-11-24.json, written by
vislab.bench.bench_time_to_accuracy), the recorded fast run (docs/results/fast/metrics.jsonl) and fast with
trainer.epochs=6 (fast-6-epochs/metrics.jsonl).

    python benchmarks/issue14/plot_accuracy_vs_time.py   # writes docs/benchmarks/issue14-accuracy-vs-time.png
"""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def main() -> None:
    side = json.loads((HERE / "time_to_accuracy-2026-11-24.json").read_text())["runs"]
    fast = _rows(ROOT / "docs/results/fast/metrics.jsonl")
    fast6 = _rows(HERE / "fast-6-epochs/metrics.jsonl")
    curves = {}
    for key, label in (("baseline", "quick of 2026-11-23 (resnet9 w0.25)"), (None, "quick-b (airbench w0.5)")):
        run = side[key] if key else next(v for k, v in side.items() if k != "baseline")
        secs, accs = zip(*run["curve"])
        curves[label] = (list(accumulate(secs)), list(accs))
    colours = {}  # a run and its EMA share a colour: solid the raw weights, dashed the EMA
    for rows, label, colour in (
        (fast, "fast (airbench w1, 10 epochs)", "tab:green"),
        (fast6, "fast, trainer.epochs=6", "tab:purple"),
    ):
        t = list(accumulate(r["seconds"] for r in rows))
        curves[label] = (t, [r["test_acc"] for r in rows])
        curves[f"{label}: EMA weights"] = (t, [r["ema_test_acc"] for r in rows])
        colours[label] = colours[f"{label}: EMA weights"] = colour

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for label, (x, y) in curves.items():
        ax.plot(
            [s / 60 for s in x],
            y,
            marker="o",
            ms=3,
            label=label,
            ls="--" if "EMA" in label else "-",
            color=colours.get(label),
        )
    ax.plot([side["baseline"]["wall_seconds"] / 60], [88], marker="*", ms=12, color="black", ls="")
    ax.annotate(
        "quick target: 88% in today's quick's time",
        (side["baseline"]["wall_seconds"] / 60, 88),
        textcoords="offset points",
        xytext=(8, 4),
        fontsize=8,
    )
    ax.plot([30], [93], marker="*", ms=12, color="black", ls="")
    ax.annotate("fast target: 93% in 30 min", (30, 93), textcoords="offset points", xytext=(-60, 6), fontsize=8)
    ax.set(
        xlabel="minutes (training and per-epoch evaluation, quiet machine)",
        ylabel="test accuracy (%)",
        title="CIFAR-10 (JPEG copy), 2-core AMD EPYC, fp32 (no native bf16)",
        ylim=(45, 96),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out = ROOT / "docs/benchmarks/issue14-accuracy-vs-time.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out)
    print(out)


if __name__ == "__main__":
    main()
