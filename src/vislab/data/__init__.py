"""Data sets held in memory as uint8 tensors: CIFAR-10/100 (official pickles) and image folders."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vislab.data._cache import default_cache_dir, resolve_cache_dir
from vislab.data._cifar import load_cifar
from vislab.data._dataset import (
    ImageDataset,
    balanced_indices,
    balanced_subset,
    channel_stats,
    check_subset_size,
    split_validation,
    with_validation_split,
)
from vislab.data._decode import IMAGE_SUFFIXES, decode_file, resize_nchw
from vislab.data._imagefolder import load_imagefolder
from vislab.errors import ConfigError, DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageDataset",
    "balanced_subset",
    "decode_file",
    "default_cache_dir",
    "list_datasets",
    "load_dataset",
    "with_validation_split",
]

logger = logging.getLogger(__name__)

_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


def _load_cifar10(root: Path | None, cache_dir: Path, download: bool, image_size: int | None) -> _Arrays:
    return _resized(load_cifar("cifar10", root, cache_dir, download), image_size)


def _load_cifar100(root: Path | None, cache_dir: Path, download: bool, image_size: int | None) -> _Arrays:
    return _resized(load_cifar("cifar100", root, cache_dir, download), image_size)


def _load_imagefolder(root: Path | None, cache_dir: Path, download: bool, image_size: int | None) -> _Arrays:
    if root is None:
        raise DataError(
            "data.root is not set: the imagefolder data set needs data.root pointing at a folder holding "
            "train/<class>/*.png|jpg and test/<class>/*.png|jpg."
        )
    return load_imagefolder(root, cache_dir, image_size)  # resizes while decoding (the size is part of the cache key)


def _resized(arrays: _Arrays, image_size: int | None) -> _Arrays:
    if image_size is None:
        return arrays
    train_x, train_y, test_x, test_y, classes = arrays
    return resize_nchw(train_x, image_size), train_y, resize_nchw(test_x, image_size), test_y, classes


# name -> loader(root, cache_dir, download, image_size); the one registry load_dataset dispatches on.
_LOADERS: dict[str, Callable[[Path | None, Path, bool, int | None], _Arrays]] = {
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "imagefolder": _load_imagefolder,
}


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def _subset(
    x: torch.Tensor, y: torch.Tensor, n: int | None, num_classes: int, field: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None:
        return x, y
    idx = balanced_indices(y, n, num_classes, field)
    if len(idx) == len(y):
        return x, y
    return x[idx].contiguous(), y[idx].contiguous()


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    download: bool = True,
    cache_dir: str | Path | None = None,
    image_size: int | None = None,
    val_size: int = 0,
    val_seed: int = 0,
) -> ImageDataset:
    """Load a whole data set into memory as uint8 tensors.

    train_size / test_size take class-balanced subsets (the first images of each class in data set
    order); image_size resizes every image to image_size x image_size (and, for image folders,
    converts grayscale/RGBA to RGB). val_size > 0 holds out a class-balanced random (seeded by
    val_seed) validation split from the training images first; train_size then subsets what is
    left. mean/std are computed on the returned train split.

    CIFAR is read from root (the extracted folder, or the official .tar.gz) or else from cache_dir,
    downloading the archive there when allowed. Archives are unpickled only after their MD5 matched
    the published one; an extracted folder placed by the user is trusted as is. Image folders are
    decoded once and cached under cache_dir/imagefolder, keyed by file names, sizes and mtimes.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _LOADERS:
        raise ConfigError(f"data.name = {name!r} is not a known data set; choose one of: {', '.join(list_datasets())}.")
    train_size = check_subset_size(train_size, "data.train_size")
    test_size = check_subset_size(test_size, "data.test_size")
    if isinstance(val_size, bool) or not isinstance(val_size, int) or val_size < 0:
        raise ConfigError(
            f"data.val_size = {val_size!r} is not allowed: give a whole number of images to hold out of the training split for validation, or 0 for none."
        )
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0):
        raise ConfigError(
            f"data.image_size = {image_size!r} is not allowed: give a positive whole number of pixels (square images), or leave it unset."
        )
    root_path = Path(root).expanduser() if root is not None else None

    train_x, train_y, test_x, test_y, classes = _LOADERS[key](
        root_path, resolve_cache_dir(cache_dir), download, image_size
    )
    train_x, train_y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    test_x, test_y = torch.from_numpy(test_x), torch.from_numpy(test_y)
    val_x = val_y = None
    if val_size:
        train_x, train_y, val_x, val_y = split_validation(train_x, train_y, val_size, len(classes), val_seed)
    train_x, train_y = _subset(train_x, train_y, train_size, len(classes), "data.train_size")
    test_x, test_y = _subset(test_x, test_y, test_size, len(classes), "data.test_size")
    mean, std = channel_stats(train_x)
    ds = ImageDataset(
        key,
        train_x.contiguous(),
        train_y.long(),
        test_x.contiguous(),
        test_y.long(),
        list(classes),
        mean,
        std,
        val_x,
        val_y,
    )
    logger.info("%r", ds)
    return ds
