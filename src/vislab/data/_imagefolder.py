"""The imagefolder data set (root/train/<class>/*, root/test/<class>/*), decoded once and cached as .npz."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vislab.data._cache import load_npz, save_npz_atomic
from vislab.data._decode import IMAGE_SUFFIXES, decode_file
from vislab.errors import DataError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when decoding changes, so caches written by older code are not reused
CHUNK_FILES = 512  # files per thread-pool task: large enough to amortise the task overhead
MAX_WORKERS = 8
SPLITS = ("train", "test")
LAYOUT = (
    "The imagefolder data set expects data.root to hold train/<class>/*.png|jpg and test/<class>/*.png|jpg, "
    "with the same class folders in both; sorted class names give the labels 0, 1, ..."
)


@dataclass
class _Listing:
    classes: list[str]
    files: list[str]  # train files then test files, class by class, sorted by name inside a class
    labels: np.ndarray  # (len(files),) int64
    n_train: int
    key: str  # hex digest of everything that should invalidate the cache


def default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        cores = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cores))


# Files that file managers and OS tools drop into any folder they show or copy (lower-case names):
# Windows thumbnail caches and folder settings, macOS's custom-folder icon ("Icon\r"). Nobody puts
# them there on purpose, so they are skipped like hidden files rather than stopping the load.
OS_JUNK_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"})
# Copies from Windows into WSL leave "<file>:Zone.Identifier" (the download-origin stream) beside each file.
OS_JUNK_SUFFIXES = (":zone.identifier",)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def is_os_junk(name: str) -> bool:
    """A file an operating system or file manager creates by itself (Thumbs.db, desktop.ini, ...)."""
    low = name.lower()
    return low in OS_JUNK_NAMES or low.endswith(OS_JUNK_SUFFIXES)


def _junk_kind(name: str) -> str:
    # One label per kind, so that thousands of "<image>:Zone.Identifier" files make one short note.
    low = name.lower()
    return "*:Zone.Identifier" if low.endswith(OS_JUNK_SUFFIXES) else repr(name)


def _list_split(root: Path, split: str, junk: list[str]) -> dict[str, list[os.DirEntry]]:
    """Class name -> image entries of root/split; OS junk files found on the way are appended to `junk`."""
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} does not exist or is not a folder. {LAYOUT}")
    classes: dict[str, list[os.DirEntry]] = {}
    with os.scandir(split_dir) as it:
        class_dirs = []
        for e in it:
            if _is_hidden(e.name):
                continue
            if is_os_junk(e.name) and not e.is_dir():
                junk.append(e.path)
                continue
            class_dirs.append(e)
        class_dirs.sort(key=lambda e: e.name)
    for entry in class_dirs:
        if not entry.is_dir():
            raise DataError(f"{entry.path} is a file where only class folders are expected. {LAYOUT}")
        files = []
        with os.scandir(entry.path) as it:
            for f in it:
                if _is_hidden(f.name):
                    continue
                if is_os_junk(f.name) and not f.is_dir():
                    junk.append(f.path)
                    continue
                if f.is_dir():
                    raise DataError(
                        f"{f.path} is a folder inside a class folder; nested folders are not supported. {LAYOUT}"
                    )
                if not f.name.lower().endswith(IMAGE_SUFFIXES):
                    raise DataError(
                        f"{f.path} is not a PNG/JPEG image (by its name); only .png, .jpg and .jpeg files may sit in class folders. Move it elsewhere or hide it (a name starting with '.')."
                    )
                files.append(f)
        if not files:
            raise DataError(f"the class folder {entry.path} holds no images; remove it or add images. {LAYOUT}")
        classes[entry.name] = sorted(files, key=lambda f: f.name)
    if not classes:
        raise DataError(f"{split_dir} holds no class folders. {LAYOUT}")
    return classes


def has_imagefolder_layout(root: Path) -> bool:
    """Whether root/train holds at least one class folder with an image in it (stops at the first one found)."""
    try:
        with os.scandir(root / "train") as classes:
            for entry in classes:
                if _is_hidden(entry.name) or not entry.is_dir():
                    continue
                with os.scandir(entry.path) as files:
                    if any(f.name.lower().endswith(IMAGE_SUFFIXES) and not f.is_dir() for f in files):
                        return True
    except OSError:  # no train/ folder, or one we cannot read: not this layout as far as we can tell
        return False
    return False


def _list_files(root: Path, image_size: int | None) -> _Listing:
    junk: list[str] = []
    splits = {split: _list_split(root, split, junk) for split in SPLITS}
    if junk:
        junk.sort()
        kinds = sorted({_junk_kind(os.path.basename(j)) for j in junk})
        logger.info(
            "skipped %d file(s) that operating systems create by themselves (%s) in %s, e.g. %s: they are not images",
            len(junk),
            ", ".join(kinds),
            root,
            junk[0],
        )
    train_cls, test_cls = set(splits["train"]), set(splits["test"])
    if train_cls != test_cls:
        only_train, only_test = sorted(train_cls - test_cls), sorted(test_cls - train_cls)
        raise DataError(
            f"train and test of {root} have different class folders: only in train/: {only_train or 'none'}; "
            f"only in test/: {only_test or 'none'}. Both splits need the same classes. {LAYOUT}"
        )
    classes = sorted(train_cls)
    files: list[str] = []  # plain strings: 60,000 Path objects cost ~0.2 s on every warm load
    labels: list[int] = []
    lines = [f"vislab-imagefolder {CACHE_FORMAT}\n{root.resolve()}\nimage_size={image_size}\n"]
    n_train = 0
    for split in SPLITS:
        for label, name in enumerate(classes):
            for entry in splits[split][name]:
                try:
                    st = entry.stat()  # follows symlinks, like the decoder will
                except OSError as e:
                    raise DataError(f"cannot read the image file {entry.path}: {e}.") from e
                lines.append(f"{split}/{name}/{entry.name}\t{st.st_size}\t{st.st_mtime_ns}\n")
                files.append(entry.path)
                labels.append(label)
        if split == "train":
            n_train = len(files)
    key = hashlib.sha256("".join(lines).encode()).hexdigest()
    return _Listing(classes, files, np.asarray(labels, dtype=np.int64), n_train, key)


def _decode_all(files: list[str], image_size: int | None, workers: int) -> np.ndarray:
    """(N, 3, H, W) uint8 pixels of all files, decoded by a thread pool (OpenCV releases the GIL)."""
    first = decode_file(files[0], image_size)
    size = first.shape[1:]
    out = np.empty((len(files), 3, *size), dtype=np.uint8)
    out[0] = first

    def decode_range(lo: int) -> None:
        for i in range(max(lo, 1), min(lo + CHUNK_FILES, len(files))):
            img = decode_file(files[i], image_size)
            if img.shape[1:] != size:
                raise DataError(
                    f"{files[i]} is {img.shape[2]}x{img.shape[1]} (WxH) but the first image, {files[0]}, is "
                    f"{size[1]}x{size[0]}; all images must have the same size. Resize them, or set "
                    "data.image_size to resize every image while loading."
                )
            out[i] = img

    # Executor.map re-raises the first failing chunk in file order, so the error reported is deterministic.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vislab-decode") as pool:
        for _ in pool.map(decode_range, range(0, len(files), CHUNK_FILES)):
            pass
    return out


def _cache_path(root: Path, cache_dir: Path, key: str) -> tuple[Path, str]:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", root.resolve().name)[:40] or "root"
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
    prefix = f"{slug}-{where}-"
    return cache_dir / "imagefolder" / f"{prefix}{key[:20]}.npz", prefix


def _from_cache(path: Path, listing: _Listing) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        arrays = load_npz(path)
        train_x, test_x = arrays["train_x"], arrays["test_x"]
        labels = np.concatenate([arrays["train_y"], arrays["test_y"]])
        ok = (
            train_x.dtype == np.uint8
            and test_x.dtype == np.uint8
            and train_x.ndim == 4
            and train_x.shape[1] == 3
            and train_x.shape[1:] == test_x.shape[1:]
            and len(train_x) == listing.n_train
            and len(test_x) == len(listing.files) - listing.n_train
            and np.array_equal(labels, listing.labels)
            and arrays["classes"].tolist() == listing.classes
        )
        if ok:
            return train_x, test_x
        logger.warning("the cache %s does not match the data set; rebuilding it", path)
    except Exception as e:  # a truncated or foreign file: any failure means "rebuild"
        logger.warning("the cache %s cannot be read (%s: %s); rebuilding it", path, type(e).__name__, e)
    return None


def load_imagefolder(
    root: Path, cache_dir: Path, image_size: int | None, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train_x, train_y, test_x, test_y, classes), x as (N, 3, H, W) uint8, from the cache when still valid."""
    if not root.is_dir():
        raise DataError(f"data.root = {str(root)!r} does not exist or is not a folder. {LAYOUT}")
    start = time.perf_counter()
    listing = _list_files(root, image_size)
    n_train, labels = listing.n_train, listing.labels
    path, prefix = _cache_path(root, cache_dir, listing.key)
    if path.is_file() and (hit := _from_cache(path, listing)) is not None:
        train_x, test_x = hit
        logger.info("loaded %d images from the cache %s in %.2f s", len(labels), path, time.perf_counter() - start)
        return train_x, labels[:n_train], test_x, labels[n_train:], listing.classes

    workers = workers or default_workers()
    x = _decode_all(listing.files, image_size, workers)  # (N + M, 3, H, W)
    decoded_s = time.perf_counter() - start
    train_x, test_x = x[:n_train], x[n_train:]
    arrays = {
        "train_x": train_x,
        "train_y": labels[:n_train],
        "test_x": test_x,
        "test_y": labels[n_train:],
        "classes": np.asarray(listing.classes, dtype=str),
    }
    try:
        save_npz_atomic(path, arrays)
        # Older caches of the same folder are now stale; they would only waste disk.
        for stale in path.parent.glob(f"{prefix}*.npz"):
            if stale != path:
                stale.unlink(missing_ok=True)
        logger.info("decoded %d images in %.1f s with %d threads; cached to %s", len(x), decoded_s, workers, path)
    except OSError as e:  # a read-only or full cache folder should not stop the run
        logger.warning("decoded %d images in %.1f s but could not write the cache %s: %s", len(x), decoded_s, path, e)
    return train_x, labels[:n_train], test_x, labels[n_train:], listing.classes
