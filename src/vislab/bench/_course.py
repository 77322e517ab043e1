"""The course-style baselines the suite measures vislab against: DataLoader + per-sample albumentations + a plain loop."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..augment import AlbumentationsDataset, AugmentSpec, build_albumentations
from ..engine import Precision

FP32 = Precision("fp32", None, False)


def course_loader(
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AugmentSpec,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    batch_size: int,
    train: bool = True,
    num_workers: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A plain torch DataLoader over per-sample albumentations, as the course notebooks built it.

    x: (N, C, H, W) uint8, y: (N,). The same transform as vislab's albumentations backend, but none
    of its extras (no seeded sampler, no per-sample reseeding, no persistent workers): shuffle=True,
    num_workers = cores by default, pin_memory on CUDA.
    """
    compose = build_albumentations(spec, mean, std, train=train, image_size=(x.shape[2], x.shape[3]))
    workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    return DataLoader(
        AlbumentationsDataset(x, y, compose),
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        pin_memory=pin_memory,
    )


def course_train(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    precision: Precision = FP32,
    channels_last: bool = False,
) -> dict[str, float]:
    """The course's training loop, the loss and the accuracy read back to the host every step.

    As the course ran it: fp32, NCHW (the defaults). The strongest course-style baseline adds what a
    course user would copy from PyTorch's AMP recipe: one `torch.autocast` line (plus a GradScaler for
    fp16) and a channels_last model and input, with vislab's precision and memory format.
    """
    model.train()
    scaler = torch.amp.GradScaler(device.type) if precision.use_scaler else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_total, correct, seen, steps = 0.0, 0, 0, 0
    for data, target in batches:
        data, target = data.to(device, memory_format=memory_format), target.to(device)  # (B, 3, H, W) float32, (B,)
        optimizer.zero_grad()
        with precision.autocast(device):
            output = model(data)
            loss = F.cross_entropy(output, target)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        # What the course's tqdm line printed each step; on CUDA each .item() waits for the GPU.
        loss_total += loss.item()
        correct += output.argmax(dim=1).eq(target).sum().item()
        seen += target.shape[0]
        steps += 1
    return {"train_loss": loss_total / max(steps, 1), "train_acc": 100.0 * correct / max(seen, 1), "images": seen}


def course_evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    precision: Precision = FP32,
    channels_last: bool = False,
) -> dict[str, float]:
    """The course's test loop under no_grad, summed loss and correct count read back every batch (fp32 NCHW by default)."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    loss_total, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for data, target in batches:
            data, target = data.to(device, memory_format=memory_format), target.to(device)
            with precision.autocast(device):
                output = model(data)
            loss_total += F.cross_entropy(output.float(), target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
            seen += target.shape[0]
    return {"test_loss": loss_total / max(seen, 1), "test_acc": 100.0 * correct / max(seen, 1), "images": seen}
