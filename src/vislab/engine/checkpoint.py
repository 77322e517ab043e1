"""Checkpoints and run files written atomically, and loaded without executing pickled code."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
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
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; run files are as readable as any other
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


MODEL_FILE = "model.safetensors"  # weights: safetensors, a format that cannot carry code
STATE_FILE = "state.pt"  # optimizer, scheduler, RNG, history: tensors and plain data only
SUMS_FILE = "checksums.json"  # sha256 of both, to refuse truncated or altered files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint folder (model.safetensors, state.pt, checksums.json) atomically.

    The folder is built under a temporary name and swapped in with renames; a kill between the
    two renames leaves `.NAME.old`, which `load_checkpoint` falls back to. So at every moment a
    complete checkpoint exists.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = path.with_name(f".{path.name}.old")
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        weights = {k: v.detach().to("cpu").contiguous() for k, v in state["model"].items()}
        save_file(weights, str(tmp / MODEL_FILE))
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save({k: v for k, v in state.items() if k != "model"}, f)
        sums = {}
        for name in (MODEL_FILE, STATE_FILE):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
            sums[name] = _sha256(tmp / name)
        with open(tmp / SUMS_FILE, "w") as f:
            json.dump(sums, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_exists(path: str | Path) -> bool:
    path = Path(path)
    return (path / SUMS_FILE).is_file() or (path.with_name(f".{path.name}.old") / SUMS_FILE).is_file()


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint folder after checking its checksums; never runs pickled code."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / SUMS_FILE).is_file() and (path.with_name(f".{path.name}.old") / SUMS_FILE).is_file():
        path = path.with_name(f".{path.name}.old")  # killed between the two renames of a save
    if not path.is_dir():
        raise VislabError(f"Checkpoint {str(path)!r} does not exist; a run folder holds checkpoints/last once its first epoch has ended.")
    try:
        sums = json.loads((path / SUMS_FILE).read_text())
        for name in (MODEL_FILE, STATE_FILE):
            if _sha256(path / name) != sums[name]:
                raise VislabError(f"{name} does not match its checksum")
        state = torch.load(path / STATE_FILE, map_location=map_location, weights_only=True)
        state["model"] = load_file(str(path / MODEL_FILE), device=str(map_location))
    except Exception as e:  # noqa: BLE001 - any failure means the checkpoint is unusable
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise VislabError(
            f"Checkpoint {str(path)!r} is refused: {reason}. It is truncated, altered or not a vislab checkpoint; "
            "nothing was loaded from it."
        ) from None
    return state
