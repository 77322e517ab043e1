"""Resolve device, precision and memory format from config values into concrete torch settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device = {name!r}, but this machine has no usable CUDA GPU; use trainer.device=cpu or auto."
        )
    if name.startswith("cuda:"):
        count = torch.cuda.device_count()
        index = name.partition(":")[2]
        if not index.isdigit() or int(index) >= count:
            raise ConfigError(
                f"trainer.device = {name!r}, but this machine's CUDA GPUs are cuda:0 to cuda:{count - 1}; "
                "use one of them, cuda (the current one) or auto."
            )
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("trainer.device = 'mps', but MPS is not available here; use trainer.device=cpu or auto.")
    return torch.device(name)


CPUINFO = Path("/proc/cpuinfo")
# x86 flags of native bf16 dot products: AVX512-BF16 (Intel Cooper Lake, AMD Zen 4 and later) and AMX
# (Intel Sapphire Rapids and later). Plain AVX512 is not enough: oneDNN then emulates bf16, slower
# than fp32, although torch.ops.mkldnn._is_mkldnn_bf16_supported() says yes (Skylake, Cascade Lake).
# aarch64's `bf16` feature is left out: bf16 has not been measured to win there.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# CUDA compute capability from which bf16 runs natively on tensor cores (Ampere, sm80). Below it
# (V100 sm70, T4 sm75) torch.cuda.is_bf16_supported() still says yes, counting emulation, but bf16
# convolutions are slow and compiled kernels may fail: fp16 with a GradScaler is what those GPUs run.
MIN_BF16_CAPABILITY = (8, 0)


def cpu_flags(path: str | Path | None = None) -> frozenset[str]:
    """The feature flags of the first processor listed in /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        text = Path(path if path is not None else CPUINFO).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / aarch64
            return frozenset(value.split())
    return frozenset()


def auto_precision(
    device_type: str, *, cuda_capability: tuple[int, int] | None = None, flags: Iterable[str] = ()
) -> str:
    """What `trainer.precision = auto` means on a device, from the hardware facts alone: "bf16", "fp16" or "fp32".

    CUDA: bf16 from compute capability 8.0, fp16 (with a GradScaler) below. CPU: bf16 when its
    feature `flags` include native bf16 instructions (NATIVE_BF16_FLAGS), else fp32. Anything else: fp32.
    """
    if device_type == "cuda":
        return "bf16" if cuda_capability is not None and tuple(cuda_capability) >= MIN_BF16_CAPABILITY else "fp16"
    if device_type == "cpu":
        return "bf16" if NATIVE_BF16_FLAGS.intersection(flags) else "fp32"
    return "fp32"


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
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        # The native bf16 instructions reach torch's CPU convolutions through oneDNN; a build without it gains nothing.
        flags = cpu_flags() if device.type == "cpu" and torch.backends.mkldnn.is_available() else frozenset()
        name = auto_precision(device.type, cuda_capability=capability, flags=flags)
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
