"""CIFAR-10/100 from the official "python version" (pickled batches), with a checked download.

Trust model: the batches are pickles, and unpickling runs code, so vislab unpickles only
(a) folders it extracted itself from an archive whose MD5 matched the published one, or
(b) an already-extracted folder that the user placed in data.root (or in the cache folder) by hand:
such a folder is accepted as is, because it cannot be checked against a published sum.
"""

from __future__ import annotations

import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vislab.data._download import NETWORK_ERRORS, extract_folder, fetch, md5_file
from vislab.data._imagefolder import has_imagefolder_layout
from vislab.errors import DataError

logger = logging.getLogger(__name__)

CIFAR_IMAGE_SHAPE = (3, 32, 32)  # rows of the official batches are R, G, B planes of 32x32


@dataclass(frozen=True)
class CifarSource:
    url: str
    md5: str  # of the .tar.gz, as published on the CIFAR page
    folder: str  # top folder inside the archive
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes  # key of the labels in each batch
    names_key: bytes  # key of the class names in the meta file

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# Module-level so tests can point the URL at a local file:// archive and swap the MD5.
CIFAR_SOURCES: dict[str, CifarSource] = {
    "cifar10": CifarSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
    ),
    "cifar100": CifarSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",  # the 100 fine classes; the 20 coarse superclasses are not used
        names_key=b"fine_label_names",
    ),
}


def _required(src: CifarSource) -> tuple[str, ...]:
    return (*src.train_files, *src.test_files, src.meta_file)


def _is_folder(path: Path, src: CifarSource) -> bool:
    return all((path / f).is_file() for f in _required(src))


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:  # any unpickling failure means the file is not an official batch
        raise DataError(
            f"cannot read the CIFAR batch {path}: {type(e).__name__}: {e}. Replace the folder with a fresh copy of the official archive."
        ) from e


def _read_batches(folder: Path, files: tuple[str, ...], src: CifarSource) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for name in files:
        path = folder / name
        batch = _unpickle(path)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[src.label_key], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path} is not an official CIFAR batch: missing or malformed {e}.") from e
        if data.ndim != 2 or data.shape[1] != int(np.prod(CIFAR_IMAGE_SHAPE)) or len(labels) != len(data):
            raise DataError(
                f"{path} is not an official CIFAR batch: data {data.shape}, {len(labels)} labels; expected (N, 3072) and N labels."
            )
        xs.append(data.reshape(-1, *CIFAR_IMAGE_SHAPE))  # (N, 3, 32, 32)
        ys.append(labels)
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def _read_folder(folder: Path, src: CifarSource) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    missing = [f for f in _required(src) if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"the CIFAR folder {folder} is incomplete: missing {', '.join(missing)}. Replace it with a fresh copy of the official archive ({src.archive})."
        )
    start = time.perf_counter()
    meta_path = folder / src.meta_file
    try:
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(meta_path)[src.names_key]]
    except (KeyError, TypeError) as e:
        raise DataError(f"{meta_path} is not an official CIFAR meta file: missing {src.names_key!r}.") from e
    train_x, train_y = _read_batches(folder, src.train_files, src)
    test_x, test_y = _read_batches(folder, src.test_files, src)
    for split, y in (("train", train_y), ("test", test_y)):
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise DataError(
                f"{folder}: {split} labels range from {y.min()} to {y.max()}, but {meta_path} names {len(classes)} classes."
            )
    logger.info("read %d + %d images from %s in %.1f s", len(train_y), len(test_y), folder, time.perf_counter() - start)
    return train_x, train_y, test_x, test_y, classes


def _offline_message(src: CifarSource, cache_dir: Path, root: Path | None, reason: str) -> str:
    where = f"{root} or {cache_dir}" if root is not None else str(cache_dir)
    return (
        f"{reason} To use CIFAR offline, download {src.url} on another machine (MD5 {src.md5}) and put "
        f"{src.archive} (or its extracted folder {src.folder}/) in {where}, or set data.root to a folder "
        f"holding a copy. Alternatively use data.name=imagefolder with data.root pointing at a folder laid out "
        f"as root/train/<class>/*.png|jpg and root/test/<class>/*.png|jpg."
    )


def _imagefolder_message(name: str, src: CifarSource, root: Path) -> str:
    title = f"CIFAR-{name.removeprefix('cifar')}"
    return (
        f"data.root = {str(root)!r} is laid out as an image folder (train/<class>/ and test/<class>/ holding images), "
        f"but data.name = {name!r} reads the official {title} batches, which are not in it. To train on this folder, "
        f"add --set data.name=imagefolder (in Python: load_dataset('imagefolder', root)). To use {title} instead, leave "
        f"data.root unset or point it at {src.archive} or its extracted folder {src.folder}/."
    )


def _verified_archive(path: Path, src: CifarSource) -> bool:
    got = md5_file(path)
    if got == src.md5:
        return True
    logger.warning("%s has MD5 %s, expected %s", path, got, src.md5)
    return False


def locate_cifar(name: str, root: Path | None, cache_dir: Path, download: bool) -> Path:
    """The folder of extracted batches, extracting or downloading the archive if needed."""
    src = CIFAR_SOURCES[name]
    if root is not None and not root.is_dir():
        logger.warning("data.root %s does not exist; looking for %s in the cache folder %s", root, name, cache_dir)
        root = None
    # 1. A folder the user placed (accepted without a checksum, see the module docstring).
    if root is not None:
        if (root / src.folder).is_dir():
            return root / src.folder
        if _is_folder(root, src):
            return root
    # A user who points data.root at their own image folder but forgets data.name must hear that first,
    # not get CIFAR from the cache (training on the wrong data) or advice to download an archive.
    if root is not None and not (root / src.archive).is_file() and has_imagefolder_layout(root):
        raise DataError(_imagefolder_message(name, src, root))
    # 2. A folder extracted earlier from a verified archive.
    cached = cache_dir / src.folder
    if cached.is_dir():
        return cached
    # 3. An archive the user placed: never deleted, only refused when its MD5 is wrong.
    if root is not None and (root / src.archive).is_file():
        archive = root / src.archive
        if not _verified_archive(archive, src):
            raise DataError(
                f"{archive} is not the official archive (MD5 mismatch, expected {src.md5}); it may be truncated. Replace it with a fresh download of {src.url}."
            )
        return extract_folder(archive, src.folder, cache_dir)
    # 4. An archive vislab downloaded earlier; a wrong MD5 means a corrupt or partial file: delete it.
    archive = cache_dir / src.archive
    if archive.is_file() and not _verified_archive(archive, src):
        logger.warning("deleting the corrupt %s and downloading it again", archive)
        archive.unlink()
    if not archive.is_file():
        if not download:
            raise DataError(
                _offline_message(src, cache_dir, root, f"{name} was not found and download is off (download=False).")
            )
        try:
            fetch(src.url, archive, src.md5)
        except NETWORK_ERRORS as e:
            raise DataError(_offline_message(src, cache_dir, root, f"could not download {src.url}: {e}.")) from e
    return extract_folder(archive, src.folder, cache_dir)


def load_cifar(
    name: str, root: Path | None, cache_dir: Path, download: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train_x, train_y, test_x, test_y, classes) with x as (N, 3, 32, 32) uint8, in the official order."""
    src = CIFAR_SOURCES[name]
    return _read_folder(locate_cifar(name, root, cache_dir, download), src)
