"""Where vislab keeps downloads and decoded arrays, and how it writes them without leaving half files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import platformdirs

CACHE_ENV = "VISLAB_CACHE"  # environment variable that overrides the cache folder


def default_cache_dir() -> Path:
    """$VISLAB_CACHE if set, else the platform's user cache folder / "vislab" (e.g. ~/.cache/vislab)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir()) / "vislab"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an uncompressed .npz next to `path`, then rename it into place.

    os.replace is atomic on one file system, so a run killed mid-write leaves only a stray temp file
    (hidden, ignored by readers), never a truncated cache under the real name. No fsync: a cache that
    is corrupt after a power cut fails to load and is simply rebuilt.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # Uncompressed: compression would make warm loads CPU-bound for little disk gain on uint8 pixels.
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an .npz into memory (no pickles allowed)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
