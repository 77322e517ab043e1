"""Resolve device, precision and memory format from config values into concrete torch settings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device = {name!r}, but this machine has no usable CUDA GPU; use trainer.device=cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("trainer.device = 'mps', but MPS is not available here; use trainer.device=cpu or auto.")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    # oneDNN reports whether the CPU has native bf16 dot products (AVX512-BF16 / AMX); without them
    # bf16 autocast is emulated and slower than fp32.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None = fp32) and whether a GradScaler is needed."""

    name: str  # "bf16", "fp16" or "fp32"
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(name: str, device: torch.device) -> Precision:
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu":
            name = "bf16" if cpu_has_fast_bf16() else "fp32"
        else:
            name = "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError("trainer.precision = 'fp16' is not supported on CPU; use bf16, fp32 or auto.")
    if name == "bf16":
        return Precision("bf16", torch.bfloat16, False)
    if name == "fp16":
        # fp16 has a narrow exponent range: small gradients underflow without loss scaling.
        return Precision("fp16", torch.float16, True)
    return Precision("fp32", None, False)


def resolve_channels_last(value: str | bool, device: torch.device) -> bool:
    if value == "auto":
        # Measured (benchmarks/bench_train.py): NHWC convolutions win with bf16 on CUDA tensor cores
        # and with oneDNN on CPU.
        return device.type in ("cuda", "cpu")
    return bool(value)
