"""Batches from a device-resident uint8 data set: one permutation per epoch, augmentation per batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

# (x_uint8 (B, 3, H, W), generator) -> normalized float (B, 3, H, W). A transform whose `needs_index` is
# True (TensorAugment with alternating flips) is also given index= (the (B,) data set positions of the
# batch's images) and epoch= (the loader's epoch, 0-based).
Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class DeviceLoader:
    """Iterates (images, labels) batches over tensors that already live on the training device.

    This is the fast path (airbench style): no worker processes, no per-sample Python, no
    host-to-device copies per step. All randomness (order and augmentation) comes from
    `generator`, whose state the checkpoints save, so a resumed run draws the same batches.

    `epoch` counts the iterations: each pass over the loader runs as epoch `self.epoch` and then advances it.
    Only a transform with `needs_index` reads it; whoever resumes a run mid-way (or iterates the loader for
    something else first, such as an LR range test) sets it with `set_epoch`, as with torch's DistributedSampler.
    """

    def __init__(
        self,
        x: torch.Tensor,  # (N, 3, H, W) uint8
        y: torch.Tensor,  # (N,) int64
        batch_size: int,
        transform: Transform,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
        rank: int = 0,
        world_size: int = 1,
        epoch: int = 0,
    ):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} images but y has {y.shape[0]} labels")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.rank, self.world_size = rank, world_size
        self.set_epoch(epoch)
        self._order: torch.Tensor | None = None  # the pass in progress: its order and how many batches it gave
        self._given = 0
        self._resume: tuple[torch.Tensor, int] | None = None

    def position(self) -> dict:
        """Where the pass in progress stands: its image order and how many batches it has given.

        With the generator's state (saved with the run) this is all a resumed run needs to give the rest of
        the epoch's batches exactly as the interrupted pass would have (`resume_from`).
        """
        if self._order is None:
            raise RuntimeError("position() is only defined while a pass over the loader is in progress")
        return {"order": self._order.to("cpu"), "batch": self._given}

    def resume_from(self, position: dict) -> None:
        """Make the next pass continue a saved `position`: the same order, from its next batch, drawing nothing new."""
        order, start = position["order"], int(position["batch"])
        if order.shape != (self.x.shape[0],) or not 0 <= start <= len(self):
            raise ValueError(
                f"the saved loader position (order of {order.numel()} images, batch {start}) does not fit this loader "
                f"({self.x.shape[0]} images, {len(self)} batches)"
            )
        self._resume = (order.to(self.x.device), start)

    def set_epoch(self, epoch: int) -> None:
        """The 0-based epoch the next pass over the loader runs as."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        epoch, self.epoch = self.epoch, self.epoch + 1
        indexed = getattr(self.transform, "needs_index", False)
        start = 0
        if self._resume is not None:
            (order, start), self._resume = self._resume, None
        elif self.shuffle:
            gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
            order = torch.randperm(n, generator=self.generator, device=gen_device).to(self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        self._order, self._given = order, start
        for i in range(start, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            kwargs = {"index": idx, "epoch": epoch} if indexed else {}
            # Counted before the batch is drawn: while the caller works on batch i, i + 1 batches are given.
            self._given = i + 1
            if self.world_size == 1:
                yield self.transform(self.x[idx], self.generator, **kwargs), self.y[idx]
                continue
            # Each rank takes an interleaved shard of the global batch; the global batch size stays
            # what the config says. Every rank augments the WHOLE global batch and keeps its shard:
            # the generator is in the same state on every rank, so augmenting only the shard would give
            # the k-th image of every rank the same crop, flip, angle and hole. This way each image gets
            # exactly the draw of a 1-process run, at the cost of (world_size - 1) x B extra augmented
            # images per step, a few percent of one training step.
            mine = slice(self.rank, None, self.world_size)
            # clone: a strided slice is dense in neither memory format; keep the one the transform chose.
            # The global batch's indices go along, so alternating flips too match a 1-process run.
            out = self.transform(self.x[idx], self.generator, **kwargs)[mine].clone(memory_format=torch.preserve_format)
            yield out, self.y[idx][mine]
