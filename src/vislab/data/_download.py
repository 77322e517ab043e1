"""Checked downloads (temporary .part file + MD5) and path-traversal-safe tar extraction."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path, PurePosixPath

from vislab.errors import DataError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0  # per socket operation, not for the whole download

# What urllib raises when the network or server is unreachable or drops the connection
# (URLError and socket timeouts are OSError subclasses; IncompleteRead is not).
NETWORK_ERRORS = (OSError, http.client.HTTPException)


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # an integrity check against the published sum, not security
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path, md5: str) -> None:
    """Download url to dest via dest.part; dest appears only once its MD5 matched.

    Network failures propagate as NETWORK_ERRORS (the caller knows what to tell the user); a
    download with the wrong MD5 is deleted and raises DataError.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5(usedforsecurity=False)
    logger.info("downloading %s to %s", url, dest)
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp, open(part, "wb") as f:
            size = 0
            while chunk := resp.read(CHUNK_BYTES):
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if got != md5:
        part.unlink(missing_ok=True)
        raise DataError(
            f"the download of {url} is corrupt: MD5 {got}, expected {md5} ({size} bytes received). "
            f"It was deleted; try again, or download the file yourself and put it at {dest}."
        )
    os.replace(part, dest)
    logger.info("downloaded %.1f MB in %.1f s", size / 1e6, time.perf_counter() - start)


def _check_members(tar: tarfile.TarFile, archive: Path) -> None:
    # Checked on every Python, also where tarfile's "data" filter exists: a member that could land
    # outside the target, or a link/device, has no business in a data set archive.
    for m in tar.getmembers():
        parts = PurePosixPath(m.name).parts
        if m.name.startswith(("/", "\\")) or ".." in parts or not (m.isfile() or m.isdir()):
            raise DataError(
                f"refusing to extract {archive}: member {m.name!r} is a link, a device or a path that "
                "leaves the target folder. Delete the archive and download the official one."
            )


def extract_folder(archive: Path, folder: str, dest_dir: Path) -> Path:
    """Extract `folder` from a .tar.gz into dest_dir/folder, atomically (via a hidden temp folder)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".extract-"))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                _check_members(tar, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # Python < 3.10.12 / 3.11.4: members were validated by _check_members above
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DataError(f"cannot extract {archive}: {e}. Delete it and download the official archive again.") from e
        src = tmp / folder
        if not src.is_dir():
            raise DataError(f"{archive} does not contain the folder {folder}/; it is not the official archive.")
        target = dest_dir / folder
        if target.exists():  # a concurrent run finished first; its copy is identical
            return target
        os.replace(src, target)
        logger.info("extracted %s to %s", archive.name, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
