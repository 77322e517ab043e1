"""Calibration of predicted probabilities: NLL, Brier score, ECE/MCE over reliability bins, temperature scaling.

Pure functions of (logits, labels), as the LR finder's `suggest`: the report, `vislab robust` and notebooks
call them on cached predictions, with no extra pass over the data. Hand-written (about 80 lines) rather
than taken from torchmetrics: torchmetrics computes ECE but returns neither the bins a reliability diagram
needs nor NLL, Brier or a fitted temperature; it is the tests' reference for ECE and MCE.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError

CALIBRATION_BINS = 15  # equal-width confidence bins, as Guo et al. (2017) and torchmetrics' default
TEMPERATURE_RANGE = (0.05, 20.0)  # a fitted temperature at either end means the search hit its bound


@dataclass
class ReliabilityBin:
    """One equal-width confidence bin [lo, hi) (the last one includes 1.0)."""

    lo: float
    hi: float
    count: int
    confidence: float  # mean top-1 confidence of the bin's predictions (nan when empty)
    accuracy: float  # fraction of them that are right, 0..1 (nan when empty)


@dataclass
class Calibration:
    """How well the top-1 confidence matches the accuracy, for one set of predictions at one temperature."""

    images: int
    temperature: float
    accuracy: float  # %, top-1
    nll: float  # mean negative log-likelihood of the true class (nats)
    brier: float  # mean over images of sum over classes (p_k - y_k)^2, 0..2
    ece: float  # expected calibration error, 0..1: sum over bins of count/N * |accuracy - confidence|
    mce: float  # maximum calibration error, 0..1: the largest |accuracy - confidence| of a non-empty bin
    bins: list[ReliabilityBin] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(logits: Tensor, labels: Tensor) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logits (N, C) and labels (N,) expected, got {tuple(logits.shape)} and {tuple(labels.shape)}")


def check_bins(bins: int) -> None:
    if not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins = {bins!r}: the number of confidence bins must be a whole number >= 1 (default 15).")


def reliability_bins(confidence: Tensor, correct: Tensor, bins: int = CALIBRATION_BINS) -> list[ReliabilityBin]:
    """Equal-width bins of `confidence` (N,) in [0, 1] with the accuracy of `correct` (N,) bool in each."""
    check_bins(bins)
    confidence, correct = confidence.double().cpu(), correct.double().cpu()
    # bin i holds [i/B, (i+1)/B); a confidence of exactly 1.0 goes into the last bin.
    idx = (confidence * bins).floor().long().clamp(0, bins - 1)
    count = torch.bincount(idx, minlength=bins)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, correct)
    out = []
    for i in range(bins):
        k = int(count[i])
        out.append(
            ReliabilityBin(
                lo=i / bins,
                hi=(i + 1) / bins,
                count=k,
                confidence=float(conf_sum[i] / k) if k else math.nan,
                accuracy=float(acc_sum[i] / k) if k else math.nan,
            )
        )
    return out


def calibration(
    logits: Tensor, labels: Tensor, *, bins: int = CALIBRATION_BINS, temperature: float = 1.0
) -> Calibration:
    """Calibration metrics of softmax(logits / temperature) against `labels`."""
    _check(logits, labels)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = int(labels.numel())
    if n == 0:
        nan = math.nan
        return Calibration(
            0, temperature, nan, nan, nan, nan, nan, reliability_bins(torch.zeros(0), torch.zeros(0), bins)
        )
    z = logits.double().cpu() / temperature
    y = labels.long().cpu()
    logp = z.log_softmax(1)
    p = logp.exp()
    conf, pred = p.max(1)
    correct = pred == y
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).double()
    rb = reliability_bins(conf, correct, bins)
    gaps = [(b.count, abs(b.accuracy - b.confidence)) for b in rb if b.count]
    return Calibration(
        images=n,
        temperature=float(temperature),
        accuracy=100.0 * float(correct.double().mean()),
        nll=float(-logp.gather(1, y[:, None]).mean()),
        brier=float(((p - onehot) ** 2).sum(1).mean()),
        ece=sum(k * g for k, g in gaps) / n,
        mce=max((g for _, g in gaps), default=0.0),
        bins=rb,
    )


def fit_temperature(logits: Tensor, labels: Tensor, *, iters: int = 100) -> float:
    """The temperature T minimising the mean NLL of softmax(logits / T) on (logits, labels).

    The NLL is convex in beta = 1/T (a log-sum-exp minus a linear term), so its derivative
    mean(E_p[z] - z_y) is non-decreasing in beta and its zero is found by bisection on log(beta):
    deterministic, no learning rate, no step count to tune (LBFGS, the usual tool, needs both).
    """
    _check(logits, labels)
    if labels.numel() == 0:
        raise ValueError("no predictions to fit a temperature on")
    z = logits.double().cpu()
    zy = z.gather(1, labels.long().cpu()[:, None])[:, 0]

    def slope(beta: float) -> float:
        p = (beta * z).softmax(1)
        return float(((p * z).sum(1) - zy).mean())

    lo, hi = math.log(1 / TEMPERATURE_RANGE[1]), math.log(1 / TEMPERATURE_RANGE[0])
    if slope(math.exp(lo)) >= 0:
        return TEMPERATURE_RANGE[1]  # even the softest allowed temperature is not soft enough
    if slope(math.exp(hi)) <= 0:
        return TEMPERATURE_RANGE[0]  # e.g. every prediction right: the NLL falls as T -> 0
    for _ in range(iters):
        mid = (lo + hi) / 2
        if slope(math.exp(mid)) < 0:
            lo = mid
        else:
            hi = mid
    return 1 / math.exp((lo + hi) / 2)
