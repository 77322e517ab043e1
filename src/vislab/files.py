"""Files written atomically (temp file, fsync, rename) and JSON lines: shared by checkpoints, runs and reports."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only when the block ends without error (temp file, fsync,
    rename): readers and a crash at any moment see the old content or the new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; run files are as readable as any other
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
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


def read_json(path: str | Path) -> Any:
    """The JSON value in `path`; None when the file is missing, unreadable or not JSON (a cache or an optional
    file: the caller recomputes or goes without, and a damaged file is logged, not fatal)."""
    import logging

    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logging.getLogger(__name__).warning("ignoring unreadable %s (%s)", path, e)
        return None


# config.yaml's header: a leading block of comment lines that a run writes and that --resume, `vislab compare` and
# tools/results.py read back. Its first line names the vislab version and the recipe (config_header); an LR range test
# that resolved an `auto` field adds one line per field (auto_note). Only that leading block is read: the YAML below
# it is the config itself.
_HEADER_RECIPE = re.compile(r"^# vislab \S+ resolved config of recipe '([^']+)'")
_HEADER_AUTO = re.compile(r"^# (\w+\.\w+): auto -> \S+ \(LR range test")


def config_header(version: str, recipe: str) -> str:
    """The first line of a run's config.yaml: the vislab version and the recipe the run was made from."""
    return f"# vislab {version} resolved config of recipe {recipe!r}\n"


def auto_note(field: str, value: float, method: str) -> str:
    """The header line recording that the LR range test resolved `field` (e.g. "sched.max_lr") from `auto` to `value`."""
    return f"# {field}: auto -> {value!r} (LR range test, {method} suggestion; sweep in lr_find.json)\n"


def _header_lines(config_text: str) -> list[str]:
    lines = []
    for line in config_text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def header_recipe(config_text: str) -> str | None:
    """The recipe a run's config.yaml names in its header (config_header), or None for a file without one."""
    for line in _header_lines(config_text):
        if m := _HEADER_RECIPE.match(line):
            return m.group(1)
    return None


def header_auto_notes(config_text: str) -> list[str]:
    """The auto_note lines of a run's config.yaml header, as written (a resumed run writes them again)."""
    return [line for line in _header_lines(config_text) if _HEADER_AUTO.match(line)]


def range_test_fields(config_text: str) -> frozenset[str]:
    """The `auto` fields (e.g. "sched.max_lr") that the LR range test resolved, as config.yaml's header records them."""
    return frozenset(m.group(1) for line in _header_lines(config_text) if (m := _HEADER_AUTO.match(line)))
