"""What the predictions say: misclassified images in a chosen order, confusion matrix, per-class accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

ORDERS = ("loss", "confidence", "random")
TARGETS = ("predicted", "actual", "both")


def check_order(order: str) -> str:
    if order not in ORDERS:
        raise ConfigError(f"order = {order!r} is not a gallery ordering; choose one of {', '.join(ORDERS)}.")
    return order


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ConfigError(f"target = {target!r} is not a Grad-CAM target; choose one of {', '.join(TARGETS)}.")
    return target


def check_count(n: int, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"{name} = {n!r}: give a whole number of images >= 0.")
    return n


def per_sample_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """(N,) plain cross-entropy (no label smoothing): how wrong each prediction is."""
    return F.cross_entropy(logits.float(), labels.long(), reduction="none")


def select_misclassified(logits: Tensor, labels: Tensor, n: int = 20, order: str = "loss", seed: int = 0) -> Tensor:
    """Indices (at most n) of misclassified samples, by descending loss ("top losses"), by descending
    confidence in the wrong class, or at random (reproducible with `seed`)."""
    check_order(order)
    n = check_count(n)
    wrong = (logits.argmax(1) != labels).nonzero().flatten()
    if order == "random":
        g = torch.Generator().manual_seed(seed)
        return wrong[torch.randperm(wrong.numel(), generator=g)[:n]]
    if order == "loss":
        score = per_sample_loss(logits[wrong], labels[wrong])
    else:
        score = logits[wrong].float().softmax(1).amax(1)
    # stable sort: equal scores keep test-set order, so the gallery is reproducible
    return wrong[score.argsort(descending=True, stable=True)[:n]]


def confusion_matrix(preds: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def normalize_confusion(cm: Tensor) -> Tensor:
    """Rows divided by their sums (the share of each true class predicted as each class); empty rows stay 0."""
    cm = cm.double()
    return cm / cm.sum(1, keepdim=True).clamp_min(1)


def per_class_accuracy(cm: Tensor) -> Tensor:
    """(C,) accuracy in percent per true class (NaN for a class absent from the set)."""
    total = cm.sum(1).double()
    acc = 100.0 * cm.diag().double() / total.clamp_min(1)
    return torch.where(total > 0, acc, torch.full_like(acc, float("nan")))


def most_confused(cm: Tensor, k: int = 10) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal cells as (true class, predicted class, count), largest first, zeros dropped."""
    off = cm.clone()
    off.fill_diagonal_(0)
    c = cm.shape[0]
    counts, idx = off.flatten().sort(descending=True, stable=True)
    return [(int(i) // c, int(i) % c, int(v)) for v, i in zip(counts[:k], idx[:k]) if int(v) > 0]
