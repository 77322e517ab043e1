"""The course-style backend: per-sample albumentations 2.x transforms in DataLoader workers."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError, DataError
from ._spec import AugmentSpec, check_albumentations_spec
from ._tensor import _check_reflect_pad, _check_stats

if TYPE_CHECKING:
    import albumentations

# Per-sample seeds are drawn below this bound: valid for numpy's and Python's seeding, and int64.
_SEED_BOUND = 2**62


def _albumentations() -> Any:
    # Imported on first use: the import costs seconds and, unless told otherwise, asks PyPI for a newer
    # version on every start (every spawned worker too). A library should not phone home: default it off.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def build_albumentations(
    spec: AugmentSpec,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    train: bool = True,
    image_size: tuple[int, int] | None = None,
) -> albumentations.Compose:
    """The spec as an albumentations 2.0.8 Compose: HWC uint8 image -> CHW float32 normalized tensor.

    `image_size` (H, W) is needed when the spec crops: PadIfNeeded and RandomCrop take absolute sizes.
    With train=False only Normalize remains (the eval path).
    """
    import cv2

    A = _albumentations()
    from albumentations.pytorch import ToTensorV2

    mean, std = _check_stats(mean, std)
    if train:
        check_albumentations_spec(spec)
    ops: list[Any] = []
    if train and spec.crop_pad > 0:
        if image_size is None:
            raise TypeError("build_albumentations needs image_size=(H, W) when spec.crop_pad > 0.")
        h, w = image_size
        pad = spec.crop_pad
        border = cv2.BORDER_REFLECT_101 if spec.pad_mode == "reflect" else cv2.BORDER_CONSTANT
        # "center" splits int((min - size) / 2) before and the rest after: exactly pad on each side.
        ops.append(A.PadIfNeeded(min_height=h + 2 * pad, min_width=w + 2 * pad, border_mode=border, fill=0))
        ops.append(A.RandomCrop(height=h, width=w))
    if train and spec.flip_p > 0.0:
        ops.append(A.HorizontalFlip(p=spec.flip_p))
    if train and spec.rotate_deg > 0.0:
        ops.append(
            A.Rotate(
                limit=(-spec.rotate_deg, spec.rotate_deg),
                interpolation=cv2.INTER_LINEAR,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=1.0,  # Rotate defaults to p=0.5; the spec rotates every image
            )
        )
    ops.append(A.Normalize(mean=mean, std=std, max_pixel_value=255.0))
    if train and spec.has_cutout:
        # Cutout runs after Normalize, with the fill converted to normalized units. A cutout replaces pixels
        # and normalize works per pixel, so this equals cutout-then-normalize, except that on a uint8 image
        # CoarseDropout truncates the fill (mean * 255 = 125.3 -> 125) and "mean" would not land on 0.
        if spec.cutout_fill == "mean":
            fill: Any = 0.0
        else:
            fill = tuple((float(spec.cutout_fill) / 255.0 - m) / s for m, s in zip(mean, std))
        hole_h, hole_w = spec.cutout_size
        ops.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(hole_h, hole_h),  # ints are pixels (a range below 1 would mean fractions)
                hole_width_range=(hole_w, hole_w),
                fill=fill,
                p=spec.cutout_p,
            )
        )
    ops.append(ToTensorV2())
    return A.Compose(ops)


def _reseed_compose(transform: albumentations.Compose, seed: int) -> None:
    """Give the Compose and all its transforms ONE shared numpy and one Python generator seeded with `seed`.

    Compose(seed=s) / set_random_seed(s) in 2.0.8 give every child transform its own random.Random(s):
    identical streams, so e.g. the first image's crop offset and flip decision reuse the same number (seen:
    never flipped when the row offset is >= 5 of 0..8). set_random_state shares one stream instead.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


class AlbumentationsDataset(Dataset):
    """(N, C, H, W) uint8 images + labels, transformed per sample by an albumentations Compose.

    An index may be an int, or an (index, seed) pair that reseeds the Compose first; the loader below uses
    pairs so that each sample's augmentation depends only on its seed, not on which worker ran it.
    """

    def __init__(self, x: Tensor, y: Tensor, transform: albumentations.Compose):
        if x.ndim != 4 or x.dtype != torch.uint8:
            raise DataError(f"images must be a uint8 tensor shaped (N, C, H, W); got {x.dtype} {tuple(x.shape)}.")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"labels must be shaped ({x.shape[0]},) to match the images; got {tuple(y.shape)}.")
        self.images = x.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) as cv2 wants
        self.labels = y.detach().cpu().to(torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        if isinstance(index, tuple):
            index, seed = index
            _reseed_compose(self.transform, seed)
        image = self.transform(image=self.images[index])["image"]  # (C, H, W) float32
        return image, self.labels[index].clone()  # clone: a view would ship the whole label storage


class _SeededSampler(Sampler):
    """One epoch of (index, seed) pairs (or bare indices), all derived from `epoch_seed`."""

    def __init__(
        self,
        n: int,
        shuffle: bool,
        with_seeds: bool,
        epoch_seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = False,
    ):
        self.n, self.shuffle, self.with_seeds = n, shuffle, with_seeds
        self.epoch_seed = epoch_seed
        # Under DDP every rank draws the same global order and takes every world_size-th sample, so a
        # rank's k-th batch is its share of global batch k. `even` drops the tail that would give
        # ranks unequal step counts (training); evaluation keeps every sample.
        self.rank, self.world_size = rank, world_size
        self.total = n - n % world_size if even else n

    def __len__(self) -> int:
        return len(range(self.rank, self.total, self.world_size))

    def __iter__(self) -> Iterator[Any]:
        g = torch.Generator().manual_seed(self.epoch_seed)
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, _SEED_BOUND, (self.n,), generator=g) if self.with_seeds else None
        mine = slice(self.rank, self.total, self.world_size)
        if seeds is None:
            return iter(order[mine].tolist())
        return iter(zip(order[mine].tolist(), seeds[mine].tolist()))


class _AlbumentationsLoader(DataLoader):
    """A DataLoader whose `generator` state alone decides each epoch: its order and every augmentation."""

    def __iter__(self):  # type: ignore[override]
        # Exactly one draw per epoch. DataLoader also draws a base seed from the generator whenever it builds
        # a new iterator: every epoch without persistent workers, only the first epoch with them. Undoing that
        # draw keeps the stream the same for 0 or 2 workers and for a resumed run with fresh workers, so
        # restoring generator.get_state() from a checkpoint replays the next epoch exactly. The workers' own
        # seeds do not matter: every sample's seed comes from the sampler.
        self.sampler.epoch_seed = int(torch.randint(0, _SEED_BOUND, (), generator=self.generator))
        state = self.generator.get_state()
        iterator = super().__iter__()
        self.generator.set_state(state)
        return iterator


def albumentations_loader(
    x: Tensor,
    y: Tensor,
    spec: AugmentSpec,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int,
    shuffle: bool,
    train: bool = True,
    num_workers: int | None = None,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Batches of (normalized float (B, C, H, W), int64 (B,)) augmented per sample in worker processes.

    Reproducible: `loader.generator` (seeded with `seed`) decides the order and each sample's augmentation
    seed, so two loaders with the same seed give identical batches for any num_workers, and saving and
    restoring `loader.generator.get_state()` between epochs resumes exactly. Under DDP, `rank` and
    `world_size` shard every epoch's global order (`batch_size` is then the per-rank batch).
    """
    if x.ndim != 4:
        raise DataError(f"images must be shaped (N, C, H, W); got {tuple(x.shape)}.")
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"augment.workers = {num_workers!r} is not a worker count; use an integer >= 0 or None.")
    h, w = x.shape[2], x.shape[3]
    if train and spec.crop_pad > 0:
        _check_reflect_pad(spec.crop_pad, spec.pad_mode, h, w)
    compose = build_albumentations(spec, mean, std, train=train, image_size=(h, w))
    dataset = AlbumentationsDataset(x, y, compose)
    randomized = train and not spec.is_identity()
    sampler = _SeededSampler(
        len(dataset), shuffle, with_seeds=randomized, epoch_seed=seed, rank=rank, world_size=world_size, even=train
    )
    generator = torch.Generator().manual_seed(seed)
    return _AlbumentationsLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=generator,
        drop_last=drop_last,
        pin_memory=pin_memory,
    )
