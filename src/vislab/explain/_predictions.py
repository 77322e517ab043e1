"""Test-set predictions computed once per checkpoint and cached in the run folder as `predictions.pt`."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..files import atomic_write_bytes

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.pt"
PREDICT_BATCH = 1000
TTA_MODES = ("none", "flip", "flip_translate")


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(
            f"tta = {mode!r}: choose none, flip (the mean logits of the image and its mirror) or flip_translate (airbench's "
            "six views: mirrored or not, times unshifted or shifted one pixel up-left or down-right)."
        )
    return mode


def tta_logits(model: nn.Module, x: Tensor, mode: str = "none") -> Tensor:
    """Logits of a normalized batch (N, C, H, W) averaged over test-time views, as airbench94 weights them.

    flip: 0.5 f(x) + 0.5 f(mirror x). flip_translate: 0.5 flip(x) + 0.25 flip(x shifted up-left by one pixel)
    + 0.25 flip(x shifted down-right), the shifts taken from a one-pixel reflect pad (the training translate's).
    """
    if mode == "none":
        return model(x)

    def mirror(v: Tensor) -> Tensor:
        return 0.5 * model(v) + 0.5 * model(v.flip(-1))

    out = mirror(x)
    if mode == "flip_translate":
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = 0.5 * mirror(padded[..., 0:h, 0:w]) + 0.5 * mirror(padded[..., 2 : h + 2, 2 : w + 2])
        out = 0.5 * out + 0.5 * shifted
    return out


def predict(
    model: nn.Module,
    images: Tensor,
    transform: Callable[[Tensor], Tensor],
    *,
    batch_size: int = PREDICT_BATCH,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    tta: str = "none",
) -> Tensor:
    """Logits (N, num_classes) float32 on the CPU for uint8 `images` (N, C, H, W), in eval mode, batch by batch.

    `transform` turns a uint8 batch on `device` into the model's input (e.g. `TensorAugment.normalize_only`);
    `tta` averages the logits over test-time views (`tta_logits`).
    """
    check_tta(tta)
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    try:
        with torch.inference_mode():
            for i in range(0, images.shape[0], batch_size):
                x = transform(images[i : i + batch_size].to(device)).to(memory_format=memory_format)
                ctx = (
                    torch.autocast(device.type, dtype=autocast_dtype)
                    if autocast_dtype is not None
                    else contextlib.nullcontext()
                )
                with ctx:
                    out.append(tta_logits(model, x, tta).float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, 0)
    return torch.cat(out)  # (N, num_classes)


def checkpoint_key(path: str | Path, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the cached predictions depend on: the checkpoint (name and content checksums) and its epoch/step."""
    path = Path(path)
    sums = path / "checksums.json"
    digest = sums.read_text() if sums.is_file() else f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
    key: dict[str, Any] = {"checkpoint": path.name, "content": digest}
    if checkpoint is not None:
        key["epoch"] = int(checkpoint.get("epoch", -1))
        key["global_step"] = int(checkpoint.get("global_step", -1))
    return key


def save_predictions(path: str | Path, logits: Tensor, labels: Tensor, key: dict[str, Any]) -> None:
    """Write logits (float32) and labels (int64) with the key they belong to, atomically."""
    buf = io.BytesIO()
    torch.save({"logits": logits.float().cpu(), "labels": labels.long().cpu(), "key": dict(key)}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_predictions(path: str | Path, key: dict[str, Any]) -> tuple[Tensor, Tensor] | None:
    """(logits, labels) from `path` when it was written for `key`; None when absent, stale or unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    except Exception as e:  # noqa: BLE001 - an unreadable cache is simply recomputed
        log.warning("ignoring unreadable %s (%s); recomputing the predictions", path, type(e).__name__)
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        log.info("%s belongs to another checkpoint or data set; recomputing", path)
        return None
    logits, labels = data.get("logits"), data.get("labels")
    if not isinstance(logits, Tensor) or not isinstance(labels, Tensor) or logits.shape[0] != labels.shape[0]:
        return None
    return logits, labels
