"""Shared fixtures: small synthetic data sets built in temporary folders (never real CIFAR)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import vislab

# Child processes (`python -m vislab`, torchrun's workers) must import the vislab under test. With a relative
# PYTHONPATH (PYTHONPATH=src) a child started in a temporary folder no longer finds it and silently imports
# whatever copy an editable install points at (another checkout sharing the venv): its recipes and code then
# differ from the test process's. The absolute source folder goes first on every child's path.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [
        str(Path(vislab.__file__).resolve().parent.parent),
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
)

# Under pytest-xdist (`make test` runs one worker per core) each worker and every child process it starts
# computes on one thread: two workers with a 2-thread OpenMP pool each on a 2-core machine spin against each
# other (see `one_thread` below for how slow that gets).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

CLASSES = ("alpha", "beta", "gamma")
SIZE = 16


def _image(label: int, rng: np.random.Generator) -> np.ndarray:
    # Class k has a bright 6x6 patch in its own corner; noise elsewhere. Learnable in a few steps.
    img = rng.integers(0, 90, size=(SIZE, SIZE, 3), dtype=np.uint8)
    r, c = [(1, 1), (1, 9), (9, 5)][label]
    img[r : r + 6, c : c + 6, label] = 250
    return img


def make_imagefolder(root: Path, train_per_class: int = 24, test_per_class: int = 8, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_image(k, rng)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def imagefolder(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "data")


def tiny_config(root: Path, cache_dir: Path, **more) -> dict:
    """Overrides that make any recipe a seconds-long CPU run on a synthetic image folder (`more` on top,
    e.g. **{"trainer.epochs": 1}); module-scoped fixtures call it with their own folders."""
    return {
        "data.name": "imagefolder",
        "data.root": str(root),
        "data.cache_dir": str(cache_dir),
        "model.name": "resnet9",
        "model.width": 0.125,
        "trainer.batch_size": 16,
        "trainer.epochs": 2,
        "trainer.device": "cpu",
        "trainer.progress": False,
        "trainer.report": False,
        "sched.name": "onecycle",
        "sched.peak_epoch": 0.5,
        "optim.lr": 0.05,
        **more,
    }


@pytest.fixture
def tiny_overrides(imagefolder: Path, tmp_path: Path) -> dict:
    """Overrides that make any recipe a seconds-long CPU run on the synthetic image folder."""
    return tiny_config(imagefolder, tmp_path / "cache")


@pytest.fixture(autouse=True)
def _restore_torch_state():
    # Tests may flip torch's global determinism switches through vislab.train; keep them isolated.
    det = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(det)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a test module of tiny tensors: they gain nothing from a second thread,
    and on a 2-core machine shared with other jobs a spinning 2-thread OpenMP pool ran small training
    loops 50x slower (measured: 54 s vs 0.8 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def vislab_log(caplog):
    """caplog for vislab's loggers, which stop propagating to the root logger once a run has set up logging."""
    logger = logging.getLogger("vislab")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="vislab")
    yield caplog
    logger.removeHandler(caplog.handler)
