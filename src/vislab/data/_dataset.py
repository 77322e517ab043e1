"""The in-memory ImageDataset container, class-balanced subsets and per-channel statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vislab.errors import ConfigError, DataError


@dataclass(repr=False)
class ImageDataset:
    """A whole image-classification data set held in memory as uint8 tensors (airbench style)."""

    name: str  # registry name the data set was loaded with, e.g. "cifar10"
    train_x: torch.Tensor  # (N, 3, H, W) uint8, contiguous
    train_y: torch.Tensor  # (N,) int64, values in [0, num_classes)
    test_x: torch.Tensor  # (M, 3, H, W) uint8, contiguous
    test_y: torch.Tensor  # (M,) int64
    classes: list[str]  # class name per label: classes[label]
    mean: tuple[float, float, float]  # per-channel mean of train_x in [0, 1] units
    std: tuple[float, float, float]  # per-channel population std (ddof=0) of train_x in [0, 1] units
    val_x: torch.Tensor | None = None  # (V, 3, H, W) uint8 held out from the training split (data.val_size), or None
    val_y: torch.Tensor | None = None  # (V,) int64

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return (int(self.train_x.shape[2]), int(self.train_x.shape[3]))

    def __repr__(self) -> str:
        # The default dataclass repr would print tensor contents; a summary is what people want to see.
        h, w = self.image_size
        mean = ", ".join(f"{m:.4f}" for m in self.mean)
        std = ", ".join(f"{s:.4f}" for s in self.std)
        return (
            f"ImageDataset(name={self.name!r}, train={len(self.train_y)}, "
            + (f"val={len(self.val_y)}, " if self.val_y is not None else "")
            + f"test={len(self.test_y)}, "
            f"image_size=({h}, {w}), num_classes={self.num_classes}, mean=({mean}), std=({std}))"
        )


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and population std of uint8 images (N, 3, H, W), in [0, 1] units.

    A 256-bin histogram per channel is exact (integer counts) and ~10x faster than casting the whole
    set to float64; the moments are then taken over the 256 bins in float64.
    """
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (N, 3, H, W) uint8 tensor, got {tuple(x.shape)} {x.dtype}")
    if x.shape[0] == 0:
        raise DataError("cannot compute the per-channel mean/std of an empty training split.")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(3):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)  # (256,)
        n = counts.sum()
        mean = (counts * values).sum() / n
        # Two-pass variance over the bins avoids the E[x^2] - E[x]^2 cancellation.
        var = (counts * (values - mean) ** 2).sum() / n
        means.append(float(mean))
        stds.append(float(var.sqrt()))
    return (means[0], means[1], means[2]), (stds[0], stds[1], stds[2])


def check_subset_size(n: object, field: str) -> int | None:
    """Validate a train_size/test_size config value (None = everything)."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(
            f"{field} = {n!r} is not allowed: give a positive whole number of images, or leave it unset (null) to use every image."
        )
    return n


def balanced_indices(y: torch.Tensor, n: int, num_classes: int, field: str = "n") -> torch.Tensor:
    """Indices (ascending, so data set order is kept) of the first images of each class.

    Class c gets n // C images, plus one for the first n % C classes. n equal to len(y) returns
    everything even when the classes are unbalanced: "all images" needs no balancing.
    """
    total = int(y.shape[0])
    if n == total:
        return torch.arange(total)
    if n > total or n < num_classes:
        raise DataError(
            f"{field} = {n} is not possible: the split has {total} images in {num_classes} classes, "
            f"so it must be between {num_classes} (one per class) and {total}."
        )
    if total and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataError(f"labels must lie in [0, {num_classes}), found values from {int(y.min())} to {int(y.max())}.")
    quota = torch.full((num_classes,), n // num_classes, dtype=torch.int64)
    quota[: n % num_classes] += 1
    counts = torch.bincount(y, minlength=num_classes)
    short = (counts < quota).nonzero().flatten().tolist()
    if short:
        c = short[0]
        raise DataError(
            f"{field} = {n} needs {int(quota[c])} images of class {c}, but the split has only {int(counts[c])}; "
            f"choose a smaller {field} (at most {int(counts.min()) * num_classes} is always balanced)."
        )
    # Rank of each image within its class, in data set order.
    order = torch.argsort(y, stable=True)  # image indices grouped by class, data order inside a class
    starts = torch.cumsum(counts, 0) - counts  # (C,) first position of each class in `order`
    rank = torch.empty_like(y)
    rank[order] = torch.arange(total) - starts[y[order]]
    return (rank < quota[y]).nonzero().flatten()


def balanced_random_indices(y: torch.Tensor, n: int, num_classes: int, seed: int, field: str = "n") -> torch.Tensor:
    """Indices of n images drawn at random within each class, with balanced_indices' quotas, in a random order.

    Unlike balanced_indices (the FIRST images of each class, so subsets nest), the draw is seeded
    and random: a validation split should not be whatever happens to come first in a folder, and
    its first batches (all an LR range test reads) should mix the classes, not hold one or two.
    """
    total = int(y.shape[0])
    if n >= total:
        raise DataError(
            f"{field} = {n} leaves no training images: the training split has only {total}; choose a smaller {field}."
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=g)  # a random order; balanced_indices then keeps its first images per class
    return perm[balanced_indices(y[perm], n, num_classes, field)]  # balanced_indices keeps perm's (random) order


def split_validation(
    x: torch.Tensor, y: torch.Tensor, val_size: int, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, val_x, val_y): val_size class-balanced random images held out.

    Train keeps data set order; validation comes in the random order of the draw (classes mixed).
    """
    idx = balanced_random_indices(y, val_size, num_classes, seed, "data.val_size")
    held = torch.zeros(len(y), dtype=torch.bool)
    held[idx] = True
    return x[~held].contiguous(), y[~held].contiguous(), x[idx].contiguous(), y[idx].long().contiguous()


def with_validation_split(ds: ImageDataset, val_size: int, seed: int = 0) -> ImageDataset:
    """A copy of an in-memory data set with val_size training images held out for validation (mean/std recomputed)."""
    if ds.val_x is not None:
        raise DataError(
            f"the data set already has a validation split of {len(ds.val_y)} images; data.val_size cannot take another."
        )
    train_x, train_y, val_x, val_y = split_validation(ds.train_x, ds.train_y, val_size, ds.num_classes, seed)
    mean, std = channel_stats(train_x)
    return ImageDataset(ds.name, train_x, train_y, ds.test_x, ds.test_y, list(ds.classes), mean, std, val_x, val_y)


def balanced_subset(x: torch.Tensor, y: torch.Tensor, n: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n // num_classes images of each class in data set order (+1 for the first n % C classes).

    The kept images stay in data set order; n == len(y) returns x, y unchanged.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    idx = balanced_indices(y, n, num_classes)
    if len(idx) == len(y):
        return x, y
    return x[idx].contiguous(), y[idx].contiguous()
