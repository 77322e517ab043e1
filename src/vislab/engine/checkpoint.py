"""Checkpoints and run files written atomically, and loaded without executing pickled code."""

from __future__ import annotations

import json
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np
import torch

from ..errors import VislabError


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without error (temp file, fsync,
    rename): readers and a crash at any moment see the old content or the new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state()[1].tolist(),  # the MT19937 key; weights_only can load lists
        "numpy_pos": int(np.random.get_state()[2]),
        "python": _python_rng_to_list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["data"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    version, key, gauss = state["python"]
    random.setstate((version, tuple(key), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "data" in state:
        generator.set_state(state["data"])


def _python_rng_to_list(state: tuple) -> list:
    # Plain lists and ints only, so that torch.load(weights_only=True) can read it back.
    version, key, gauss = state
    return [version, list(key), gauss]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_open(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise VislabError(f"Checkpoint {str(path)!r} does not exist; a run folder holds checkpoints/last.pt once its first epoch has ended.")
    try:
        # weights_only=True: tensors and plain containers only, never arbitrary pickled objects.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable
        raise VislabError(f"Checkpoint {str(path)!r} cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:200]}); it is truncated, corrupt or not a vislab checkpoint.") from None
