"""The machine a run happens on: logging set-up, device name, library versions, seeding and determinism."""

from __future__ import annotations

import logging
import os
import platform
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .version import __version__


def setup_logging(level: int = logging.INFO) -> None:
    """Send vislab's log lines to stderr through tqdm, so that they do not break progress bars."""
    logger = logging.getLogger("vislab")
    if logger.handlers:
        return
    from tqdm.auto import tqdm

    class _TqdmHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            tqdm.write(self.format(record), file=sys.stderr)

    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def device_name(device: torch.device) -> str:
    """A readable name of the device: the GPU's name, or the CPU's model and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def versions() -> dict[str, str]:
    """Versions of what decides a run's numbers, recorded in summary.json and bench.json."""
    import albumentations

    return {
        "vislab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "albumentations": albumentations.__version__,
        "python": platform.python_version(),
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the duration of a run, restored afterwards (no global leaks)."""
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    try:
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # Some CUDA kernels (e.g. adaptive max-pool backward) have no deterministic version:
            # warn there instead of failing, CPU kernels are all covered.
            torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.backends.cudnn.benchmark = prev_bench
