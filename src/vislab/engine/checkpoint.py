"""Checkpoints and run files written atomically, and loaded without executing pickled code."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TrainingDiverged, VislabError
from ..files import current_umask

log = logging.getLogger(__name__)


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
    """Restore what `rng_state` saved; what this machine cannot take is re-seeded, said in one log line.

    A checkpoint may come from another machine: more or fewer GPUs than this one (one CUDA state is
    saved per visible GPU), or a data generator on another device (a CUDA generator's state is 16
    bytes, a CPU generator's 5,056), as when a GPU run is resumed on a CPU or the other way round.
    """
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    version, key, gauss = state["python"]
    random.setstate((version, tuple(key), gauss))
    _set_cuda_rng_states(list(state.get("cuda", [])))
    if generator is not None and "data" in state:
        _set_generator_state(generator, _cpu_bytes(state["data"]))


def _cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    # set_rng_state / Generator.set_state take CPU byte tensors only, whichever device the state is for.
    return t.detach().to("cpu", torch.uint8)


def _set_cuda_rng_states(saved: list[torch.Tensor]) -> None:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # One by one rather than set_rng_state_all, which fails with an IndexError when the checkpoint
    # holds more states than this machine has GPUs.
    for i in range(min(len(saved), gpus)):
        torch.cuda.set_rng_state(_cpu_bytes(saved[i]), i)
    if len(saved) == gpus:
        return
    if not gpus:
        log.info(
            "the checkpoint's CUDA RNG states (%d GPU(s)) are not restored: this machine has no CUDA GPU", len(saved)
        )
    elif not saved:
        log.info(
            "the checkpoint holds no CUDA RNG state (it was saved without CUDA): the %d GPU(s) keep the states seeded from trainer.seed",
            gpus,
        )
    else:
        log.warning(
            "the checkpoint holds CUDA RNG states of %d GPU(s), this machine has %d: restored %d, the rest keep the states "
            "seeded from trainer.seed",
            len(saved),
            gpus,
            min(len(saved), gpus),
        )


def _set_generator_state(generator: torch.Generator, saved: torch.Tensor) -> None:
    try:
        generator.set_state(saved)
        return
    except RuntimeError:  # the state of a generator on another device type (size and layout differ)
        pass
    # Seeded from the saved state, so that a resume is still reproducible and does not replay the
    # first epoch's order and augmentation, as re-seeding with trainer.seed would.
    seed = int.from_bytes(hashlib.sha256(saved.numpy().tobytes()).digest()[:8], "little")
    generator.manual_seed(seed)
    log.warning(
        "the checkpoint's data generator state (%d bytes) does not fit this run's %s generator (%d bytes; it was saved "
        "on another device type): re-seeded it from the saved state, so data order and augmentation from here on differ "
        "from an uninterrupted run",
        saved.numel(),
        generator.device.type,
        generator.get_state().numel(),
    )


def _python_rng_to_list(state: tuple) -> list:
    # Plain lists and ints only, so that torch.load(weights_only=True) can read it back.
    version, key, gauss = state
    return [version, list(key), gauss]


MODEL_FILE = "model.safetensors"  # weights: safetensors, a format that cannot carry code
STATE_FILE = "state.pt"  # optimizer, scheduler, RNG, history: tensors and plain data only
SUMS_FILE = "checksums.json"  # sha256 of both, to refuse truncated or altered files


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity (one host sync for all)."""
    names = [k for k, v in tensors.items() if v.is_floating_point() or v.is_complex()]
    if not names:
        return []
    dev = tensors[names[0]].device
    finite = torch.stack([torch.isfinite(tensors[k]).all().to(dev) for k in names]).tolist()
    return [k for k, ok in zip(names, finite) if not ok]


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
    complete checkpoint exists. Weights holding NaN or infinity are refused (`TrainingDiverged`)
    before anything is written, so the checkpoint already there is kept.
    """
    from safetensors.torch import save_file

    path = Path(path)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in state["model"].items()}
    bad = nonfinite_tensors(weights)
    if bad:
        kept = (
            "the checkpoint already there is kept"
            if checkpoint_exists(path)
            else "there is no earlier checkpoint there"
        )
        raise TrainingDiverged(
            f"Checkpoint {str(path)!r} is not written: {len(bad)} weight tensor(s) hold NaN or infinite values (first: {bad[0]}), "
            f"so the weights are unusable; {kept}. Lower optim.lr (or sched.max_lr), or set optim.grad_clip (e.g. 1.0)."
        )
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = path.with_name(f".{path.name}.old")
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
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
    """Load a checkpoint folder after checking its checksums; never runs pickled code.

    The weights go to `map_location`; everything else stays on the CPU: RNG states must reach
    `set_rng_state` as CPU byte tensors, and `Optimizer.load_state_dict` moves its state to the
    parameters' device itself.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / SUMS_FILE).is_file() and (path.with_name(f".{path.name}.old") / SUMS_FILE).is_file():
        path = path.with_name(f".{path.name}.old")  # killed between the two renames of a save
    if not path.is_dir():
        raise VislabError(
            f"Checkpoint {str(path)!r} does not exist; a run folder holds checkpoints/last once its first epoch has ended."
        )
    try:
        sums = json.loads((path / SUMS_FILE).read_text())
        for name in (MODEL_FILE, STATE_FILE):
            if _sha256(path / name) != sums[name]:
                raise VislabError(f"{name} does not match its checksum")
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        weights = load_file(str(path / MODEL_FILE), device="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means the checkpoint is unusable
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise VislabError(
            f"Checkpoint {str(path)!r} is refused: {reason}. It is truncated, altered or not a vislab checkpoint; "
            "nothing was loaded from it."
        ) from None
    state["model"] = {k: v.to(map_location) for k, v in weights.items()}
    return state
