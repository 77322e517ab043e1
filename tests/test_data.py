"""Tests for vislab.data on tiny synthetic image folders and fake CIFAR archives (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vislab.data._cifar as cifar_mod
import vislab.data._download as download_mod
import vislab.data._imagefolder as folder_mod
from vislab.data import ImageDataset, balanced_subset, default_cache_dir, list_datasets, load_dataset
from vislab.errors import ConfigError, DataError

CLASSES = ["cat", "ant", "bee"]  # deliberately unsorted: labels follow sorted names
SIZE = 8  # tiny images keep the whole file fast


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Keep every test off the user's cache and off the network (only file:// URLs may be opened)."""
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "default-cache"))
    real_urlopen = urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        assert str(url).startswith("file:"), f"test tried to reach the network: {url}"
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(download_mod.urllib.request, "urlopen", local_only)


def _pixels(seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)  # (H, W, 3)


def _make_folder(
    root: Path, n_train: int = 4, n_test: int = 2, fmt: str = "png"
) -> dict[tuple[str, str, int], np.ndarray]:
    """root/{train,test}/<class>/NN.<fmt> with random pixels; returns the written RGB arrays."""
    written = {}
    seed = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CLASSES:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                arr = _pixels(seed)
                Image.fromarray(arr).save(d / f"{i:02d}.{fmt}")
                written[(split, cls, i)] = arr
    return written


def _expected(written, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for label, cls in enumerate(sorted(CLASSES)):
        i = 0
        while (split, cls, i) in written:
            xs.append(torch.from_numpy(written[(split, cls, i)]).permute(2, 0, 1))
            ys.append(label)
            i += 1
    return torch.stack(xs), torch.tensor(ys)


def _load(root: Path, cache: Path, **kw) -> ImageDataset:
    return load_dataset("imagefolder", root, cache_dir=cache, **kw)


# ---------------------------------------------------------------- registry and config errors


def test_list_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "imagefolder"]


def test_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        load_dataset("mnist")
    msg = str(e.value)
    assert "data.name" in msg and "mnist" in msg
    assert all(n in msg for n in list_datasets())


@pytest.mark.parametrize(
    "field,kw",
    [
        ("data.train_size", {"train_size": 0}),
        ("data.test_size", {"test_size": -3}),
        ("data.train_size", {"train_size": 2.5}),
        ("data.image_size", {"image_size": 0}),
    ],
)
def test_bad_config_values(tmp_path, field, kw):
    _make_folder(tmp_path / "d", 1, 1)
    with pytest.raises(ConfigError, match=field):
        _load(tmp_path / "d", tmp_path / "c", **kw)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("VISLAB_CACHE")
    assert default_cache_dir().name == "vislab"


# ---------------------------------------------------------------- imagefolder


def test_imagefolder_shapes_labels_and_pixels(tmp_path):
    written = _make_folder(tmp_path / "d", n_train=4, n_test=2)
    ds = _load(tmp_path / "d", tmp_path / "c")
    assert ds.name == "imagefolder"
    assert ds.classes == sorted(CLASSES) and ds.num_classes == 3
    assert ds.image_size == (SIZE, SIZE)
    assert ds.train_x.shape == (12, 3, SIZE, SIZE) and ds.test_x.shape == (6, 3, SIZE, SIZE)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    assert ds.train_x.is_contiguous() and ds.test_x.is_contiguous()
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        ex, ey = _expected(written, split)  # PNG is lossless: pixels must match exactly, RGB order included
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert "train=12" in repr(ds)


def test_imagefolder_jpeg(tmp_path):
    _make_folder(tmp_path / "d", 2, 1, fmt="jpg")
    ds = _load(tmp_path / "d", tmp_path / "c")
    ref = np.array(Image.open(tmp_path / "d" / "train" / "ant" / "00.jpg").convert("RGB"))
    # Different JPEG decoders may differ by a rounding step, never by more.
    diff = (ds.train_x[0].permute(1, 2, 0).int() - torch.from_numpy(ref).int()).abs().max()
    assert ds.train_x.shape == (6, 3, SIZE, SIZE) and int(diff) <= 2


def test_mean_std_match_direct_computation(tmp_path):
    _make_folder(tmp_path / "d", 4, 2)
    for kw in ({}, {"train_size": 6}):
        ds = _load(tmp_path / "d", tmp_path / "c", **kw)
        x = ds.train_x.double() / 255.0
        mean = x.mean(dim=(0, 2, 3))
        std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
        assert torch.allclose(torch.tensor(ds.mean, dtype=torch.float64), mean, rtol=0, atol=1e-12)
        assert torch.allclose(torch.tensor(ds.std, dtype=torch.float64), std, rtol=0, atol=1e-12)


def test_hidden_files_and_folders_are_ignored(tmp_path):
    _make_folder(tmp_path / "d", 2, 1)
    (tmp_path / "d" / "train" / "ant" / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "d" / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "d" / ".git").mkdir()
    ds = _load(tmp_path / "d", tmp_path / "c")
    assert len(ds.train_y) == 6 and ds.classes == sorted(CLASSES)


def test_os_junk_files_are_skipped_with_one_note(tmp_path, caplog):
    root = tmp_path / "d"
    written = _make_folder(root, 2, 1)
    junk = [
        root / "train" / "ant" / "Thumbs.db",
        root / "train" / "bee" / "desktop.ini",
        root / "test" / "cat" / "ehthumbs.db",
        root / "train" / "Desktop.ini",
        root / "train" / "cat" / "00.png:Zone.Identifier",
    ]
    for path in junk:
        path.write_bytes(b"\x00not an image")
    with caplog.at_level("INFO", logger="vislab.data"):
        ds = _load(root, tmp_path / "c")
    x, y = _expected(written, "train")
    assert torch.equal(ds.train_x, x) and torch.equal(ds.train_y, y) and len(ds.test_y) == 3
    notes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(notes) == 1 and "5 file(s)" in notes[0] and "'Thumbs.db'" in notes[0] and "*:Zone.Identifier" in notes[0]
    # any other file that is not an image still stops the load, naming it
    (root / "train" / "bee" / "labels.csv").write_text("a,b")
    with pytest.raises(DataError, match=str(root / "train" / "bee" / "labels.csv")):
        _load(root, tmp_path / "c")


def test_cache_hit_does_not_decode(tmp_path, monkeypatch):
    _make_folder(tmp_path / "d", 2, 1)
    first = _load(tmp_path / "d", tmp_path / "c")
    assert len(list((tmp_path / "c" / "imagefolder").glob("*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(folder_mod, "decode_file", boom)
    second = _load(tmp_path / "d", tmp_path / "c")
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    assert first.classes == second.classes and first.mean == second.mean


def _count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = folder_mod.decode_file

    def counting(path, image_size):
        calls.append(str(path))
        return real(path, image_size)

    monkeypatch.setattr(folder_mod, "decode_file", counting)
    return calls


def test_cache_invalidated_by_touch_and_new_file(tmp_path, monkeypatch):
    root, cache = tmp_path / "d", tmp_path / "c"
    _make_folder(root, 2, 1)
    calls = _count_decodes(monkeypatch)
    _load(root, cache)
    assert len(calls) == 9
    _load(root, cache)
    assert len(calls) == 9  # warm

    f = root / "train" / "bee" / "00.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: same bytes, same size
    _load(root, cache)
    assert len(calls) == 18

    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(f)
    ds = _load(root, cache)
    assert len(calls) == 27
    assert int(ds.train_x[2].sum()) == 0  # bee is label 1; its first image is the rewritten one

    Image.fromarray(_pixels(99)).save(root / "test" / "cat" / "09.png")
    ds = _load(root, cache)
    assert len(calls) == 37 and len(ds.test_y) == 4
    # The stale caches of the same folder were replaced, not accumulated.
    assert len(list((cache / "imagefolder").glob("*.npz"))) == 1


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    root, cache = tmp_path / "d", tmp_path / "c"
    written = _make_folder(root, 2, 1)
    _load(root, cache)
    (npz,) = (cache / "imagefolder").glob("*.npz")
    npz.write_bytes(npz.read_bytes()[:200])  # as if truncated
    calls = _count_decodes(monkeypatch)
    ds = _load(root, cache)
    assert len(calls) == 9
    assert torch.equal(ds.train_x, _expected(written, "train")[0])
    _load(root, cache)
    assert len(calls) == 9  # the rebuilt cache is valid again


def test_killed_cache_write_leaves_no_cache(tmp_path, monkeypatch):
    root, cache = tmp_path / "d", tmp_path / "c"
    _make_folder(root, 2, 1)

    def killed(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        _load(root, cache)
    assert list((cache / "imagefolder").iterdir()) == []  # neither a cache nor a temp file


def test_unwritable_cache_still_loads(tmp_path, monkeypatch):
    _make_folder(tmp_path / "d", 2, 1)

    def full(f, **arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    ds = _load(tmp_path / "d", tmp_path / "c")
    assert len(ds.train_y) == 6
    assert list((tmp_path / "c" / "imagefolder").iterdir()) == []


def _save_mode(path: Path, mode: str, size: int = SIZE) -> None:
    Image.fromarray(_pixels(7, size)).convert(mode).save(path)


@pytest.mark.parametrize(
    "case",
    ["corrupt", "empty_file", "not_image", "other_size", "grayscale", "rgba", "nested"],
)
def test_bad_files_name_the_file(tmp_path, case):
    root = tmp_path / "d"
    _make_folder(root, 2, 1)
    d = root / "train" / "bee"
    bad = {
        "corrupt": d / "99.png",
        "empty_file": d / "99.jpg",
        "not_image": d / "notes.txt",
        "other_size": d / "99.png",
        "grayscale": d / "99.png",
        "rgba": d / "99.png",
        "nested": d / "sub",
    }[case]
    if case == "corrupt":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a real png")
    elif case == "empty_file":
        bad.write_bytes(b"")
    elif case == "not_image":
        bad.write_text("hello")
    elif case == "other_size":
        Image.fromarray(_pixels(3, SIZE + 2)).save(bad)
    elif case == "grayscale":
        _save_mode(bad, "L")
    elif case == "rgba":
        _save_mode(bad, "RGBA")
    else:
        bad.mkdir()
    with pytest.raises(DataError) as e:
        _load(root, tmp_path / "c")
    assert str(bad) in str(e.value)
    if case in ("grayscale", "rgba", "other_size"):
        assert "data.image_size" in str(e.value)  # the message names the way out


def test_empty_class_folder(tmp_path):
    _make_folder(tmp_path / "d", 1, 1)
    (tmp_path / "d" / "train" / "dog").mkdir()
    (tmp_path / "d" / "train" / "dog" / ".hidden").write_bytes(b"")
    with pytest.raises(DataError, match=str(tmp_path / "d" / "train" / "dog")):
        _load(tmp_path / "d", tmp_path / "c")


def test_class_sets_must_match(tmp_path):
    _make_folder(tmp_path / "d", 1, 1)
    (tmp_path / "d" / "test" / "ant").rename(tmp_path / "d" / "test" / "dog")
    with pytest.raises(DataError) as e:
        _load(tmp_path / "d", tmp_path / "c")
    assert "['ant']" in str(e.value) and "['dog']" in str(e.value)


@pytest.mark.parametrize("missing", ["root", "train", "test"])
def test_missing_layout(tmp_path, missing):
    root = tmp_path / "d"
    _make_folder(root, 1, 1)
    target = root if missing == "root" else root / missing
    os.rename(target, tmp_path / "moved")
    with pytest.raises(DataError) as e:
        _load(root, tmp_path / "c")
    assert str(target) in str(e.value) and "train/<class>" in str(e.value)


def test_imagefolder_needs_root():
    with pytest.raises(DataError, match="data.root"):
        load_dataset("imagefolder")


def test_image_size_resizes_and_converts(tmp_path, monkeypatch):
    root, cache = tmp_path / "d", tmp_path / "c"
    _make_folder(root, 2, 1)
    d = root / "train" / "bee"
    Image.fromarray(_pixels(3, 20)).save(d / "97.png")
    _save_mode(d / "98.png", "L")
    _save_mode(d / "99.png", "RGBA")
    with pytest.raises(DataError):
        _load(root, cache)
    ds = _load(root, cache, image_size=4)
    assert ds.train_x.shape == (9, 3, 4, 4) and ds.image_size == (4, 4)
    gray = ds.train_x[5]  # after ant's 2 images, bee holds 00, 01, 97, 98 (gray), 99
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # Resizing a flat image must keep its colour exactly.
    Image.fromarray(np.full((SIZE, SIZE, 3), (10, 200, 30), np.uint8)).save(d / "96.png")
    ds = _load(root, cache, image_size=16)
    assert ds.train_x.shape[2:] == (16, 16)
    assert ds.train_x[4].flatten(1).unique(dim=1).T.tolist() == [[10, 200, 30]]


# ---------------------------------------------------------------- subsets


def test_balanced_subset_takes_first_per_class():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (60,), generator=g)
    x = torch.arange(60)
    for n in (3, 7, 30, 31):
        sx, sy = balanced_subset(x, y, n, 3)
        counts = torch.bincount(sy, minlength=3).tolist()
        assert counts == [n // 3 + (c < n % 3) for c in range(3)]
        expected = []
        for c in range(3):
            expected += (y == c).nonzero().flatten()[: counts[c]].tolist()
        assert sx.tolist() == sorted(expected)  # the first images of each class, in data set order
        assert torch.equal(sy, y[sx])


def test_balanced_subset_errors():
    y = torch.tensor([0, 0, 0, 1, 2, 2])
    x = torch.zeros(6, 1)
    with pytest.raises(DataError, match="between 3"):
        balanced_subset(x, y, 2, 3)
    with pytest.raises(DataError, match="between 3"):
        balanced_subset(x, y, 7, 3)
    with pytest.raises(DataError, match="class 1"):
        balanced_subset(x, y, 5, 3)  # needs 2 of class 1, which has only 1
    assert balanced_subset(x, y, 6, 3)[1].tolist() == y.tolist()  # "everything" needs no balancing


def test_load_subsets(tmp_path):
    written = _make_folder(tmp_path / "d", 4, 2)
    ds = _load(tmp_path / "d", tmp_path / "c", train_size=7, test_size=3)
    assert torch.bincount(ds.train_y).tolist() == [3, 2, 2] and torch.bincount(ds.test_y).tolist() == [1, 1, 1]
    full_x, full_y = _expected(written, "train")
    assert torch.equal(ds.train_x, full_x[[0, 1, 2, 4, 5, 8, 9]])
    assert ds.train_x.is_contiguous()
    for kw, field in (({"train_size": 13}, "data.train_size"), ({"test_size": 2}, "data.test_size")):
        with pytest.raises(DataError, match=field):
            _load(tmp_path / "d", tmp_path / "c", **kw)


# ---------------------------------------------------------------- CIFAR (fake official pickles)

C10 = cifar_mod.CIFAR_SOURCES["cifar10"]
C100 = cifar_mod.CIFAR_SOURCES["cifar100"]
PER_BATCH = 4


def _batch(seed: int, n: int, label_key: bytes, num_classes: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in (np.arange(n) + seed * n) % num_classes],
        b"batch_label": b"fake",
    }


def _make_cifar10(folder: Path) -> dict[str, dict]:
    folder.mkdir(parents=True)
    batches = {name: _batch(i, PER_BATCH, b"labels", 10) for i, name in enumerate((*C10.train_files, *C10.test_files))}
    for name, b in batches.items():
        (folder / name).write_bytes(pickle.dumps(b))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    return batches


def test_cifar10_from_extracted_folder(tmp_path):
    batches = _make_cifar10(tmp_path / "data" / C10.folder)
    for root in (tmp_path / "data", tmp_path / "data" / C10.folder):  # root or root/that-folder
        ds = load_dataset("cifar10", root, cache_dir=tmp_path / "c", download=False)
        assert ds.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and ds.test_x.shape == (PER_BATCH, 3, 32, 32)
        assert ds.classes == [f"c{i}" for i in range(10)]
        row = batches["data_batch_2"][b"data"][1]  # R plane, then G, then B, each 32x32 row-major
        assert torch.equal(ds.train_x[PER_BATCH + 1], torch.from_numpy(row.reshape(3, 32, 32)))
        assert ds.train_y.tolist() == sum((batches[f][b"labels"] for f in C10.train_files), [])
        assert ds.test_y.tolist() == batches["test_batch"][b"labels"]
    small = load_dataset(
        "cifar10", tmp_path / "data", cache_dir=tmp_path / "c", download=False, image_size=16, train_size=10
    )
    assert small.train_x.shape == (10, 3, 16, 16) and torch.bincount(small.train_y).tolist() == [1] * 10


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / C100.folder
    folder.mkdir()
    train, test = _batch(1, 6, b"fine_labels", 100), _batch(2, 3, b"fine_labels", 100)
    for b in (train, test):
        b[b"coarse_labels"] = [0] * len(b[b"fine_labels"])
    (folder / "train").write_bytes(pickle.dumps(train))
    (folder / "test").write_bytes(pickle.dumps(test))
    names = [f"f{i}".encode() for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20}))
    ds = load_dataset("cifar100", tmp_path, cache_dir=tmp_path / "c", download=False)
    assert ds.num_classes == 100 and ds.classes[5] == "f5"
    assert ds.train_y.tolist() == train[b"fine_labels"] and len(ds.test_y) == 3


def test_cifar_incomplete_folder_names_missing_file(tmp_path):
    _make_cifar10(tmp_path / C10.folder)
    (tmp_path / C10.folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "c", download=False)


def _make_archive(path: Path, src_folder: Path, arcname: str, evil: bool = False) -> str:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src_folder, arcname=arcname)
        if evil:
            data = b"owned"
            info = tarfile.TarInfo("../evil.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A fake cifar-10 archive served from a file:// URL, with the MD5 table pointing at it."""
    batches = _make_cifar10(tmp_path / "src" / C10.folder)
    archive = tmp_path / "server" / C10.archive
    archive.parent.mkdir()
    md5 = _make_archive(archive, tmp_path / "src" / C10.folder, C10.folder)
    monkeypatch.setitem(cifar_mod.CIFAR_SOURCES, "cifar10", dataclasses.replace(C10, url=archive.as_uri(), md5=md5))
    return archive, md5, batches


def test_download_verify_extract(tmp_path, served):
    archive, md5, batches = served
    cache = tmp_path / "c"
    ds = load_dataset("cifar10", cache_dir=cache)
    assert hashlib.md5((cache / C10.archive).read_bytes()).hexdigest() == md5
    assert (cache / C10.folder / "data_batch_1").is_file()
    assert not list(cache.glob("*.part")) and not list(cache.glob(".extract-*"))
    assert ds.test_y.tolist() == batches["test_batch"][b"labels"]


@pytest.mark.parametrize("leftover", ["corrupt_archive", "truncated_archive", "part_file"])
def test_bad_cached_file_is_replaced(tmp_path, served, leftover):
    archive, md5, _ = served
    cache = tmp_path / "c"
    cache.mkdir()
    if leftover == "corrupt_archive":
        (cache / C10.archive).write_bytes(b"not a tarball at all")
    elif leftover == "truncated_archive":
        (cache / C10.archive).write_bytes(archive.read_bytes()[:100])
    else:
        (cache / (C10.archive + ".part")).write_bytes(b"half a download")
    ds = load_dataset("cifar10", cache_dir=cache)
    assert len(ds.train_y) == 5 * PER_BATCH
    assert hashlib.md5((cache / C10.archive).read_bytes()).hexdigest() == md5
    assert not (cache / (C10.archive + ".part")).exists()


def test_download_with_wrong_md5_is_deleted(tmp_path, served, monkeypatch):
    archive, _, _ = served
    monkeypatch.setitem(
        cifar_mod.CIFAR_SOURCES, "cifar10", dataclasses.replace(C10, url=archive.as_uri(), md5="0" * 32)
    )
    cache = tmp_path / "c"
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("cifar10", cache_dir=cache)
    assert not (cache / C10.archive).exists() and not (cache / (C10.archive + ".part")).exists()
    assert not (cache / C10.folder).exists()


def test_user_archive_in_root_is_verified_not_deleted(tmp_path, served):
    archive, _, batches = served
    root = tmp_path / "root"
    root.mkdir()
    (root / C10.archive).write_bytes(archive.read_bytes())
    ds = load_dataset("cifar10", root, cache_dir=tmp_path / "c", download=False)
    assert ds.test_y.tolist() == batches["test_batch"][b"labels"]
    (root / C10.archive).write_bytes(archive.read_bytes()[:-10])
    with pytest.raises(DataError, match="MD5"):
        load_dataset("cifar10", root, cache_dir=tmp_path / "c2", download=False)
    assert (root / C10.archive).exists()


def _assert_offline_message(msg: str, cache: Path) -> None:
    assert C10.archive in msg and str(cache) in msg and "data.root" in msg and "imagefolder" in msg


@pytest.mark.parametrize("failure", ["missing_url", "urlerror", "timeout"])
def test_no_network_message(tmp_path, monkeypatch, failure):
    cache = tmp_path / "c"
    if failure == "missing_url":
        url = (tmp_path / "nowhere" / C10.archive).as_uri()
        monkeypatch.setitem(cifar_mod.CIFAR_SOURCES, "cifar10", dataclasses.replace(C10, url=url))
    else:
        exc = urllib.error.URLError("Name or service not known") if failure == "urlerror" else TimeoutError("timed out")

        def offline(*a, **k):
            raise exc

        monkeypatch.setattr(download_mod.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", cache_dir=cache)
    _assert_offline_message(str(e.value), cache)
    assert not list(cache.glob("*.part"))


def test_download_false_never_downloads(tmp_path, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("download=False must not open URLs")

    monkeypatch.setattr(download_mod.urllib.request, "urlopen", forbidden)
    cache = tmp_path / "c"
    with pytest.raises(DataError, match="download=False") as e:
        load_dataset("cifar10", tmp_path / "empty-root", cache_dir=cache, download=False)
    _assert_offline_message(str(e.value), cache)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_name_with_an_imagefolder_root_says_to_set_the_name(tmp_path, monkeypatch, name):
    def forbidden(*a, **k):
        raise AssertionError("an image folder in data.root must not start a CIFAR download")

    monkeypatch.setattr(download_mod.urllib.request, "urlopen", forbidden)
    root = tmp_path / "mine"
    _make_folder(root, 1, 1, fmt="jpg")
    cache = tmp_path / "c"
    # Even with CIFAR already in the cache the user gets told, not silently handed CIFAR instead of their folder.
    _make_cifar10(cache / C10.folder)
    with pytest.raises(DataError) as e:
        load_dataset(name, root, cache_dir=cache)
    msg = str(e.value)
    assert msg.startswith(f"data.root = {str(root)!r} is laid out as an image folder")
    assert "--set data.name=imagefolder" in msg and f"data.name = {name!r}" in msg and "\n" not in msg
    # the hint holds: the same folder loads as an image folder
    assert load_dataset("imagefolder", root, cache_dir=cache).classes == sorted(CLASSES)


def test_cifar_root_with_the_archive_is_not_taken_for_an_imagefolder(tmp_path, served):
    archive, _, batches = served
    root = tmp_path / "root"
    _make_folder(root, 1, 1)  # stray train/test folders beside the official archive: the archive wins
    (root / C10.archive).write_bytes(archive.read_bytes())
    ds = load_dataset("cifar10", root, cache_dir=tmp_path / "c", download=False)
    assert ds.test_y.tolist() == batches["test_batch"][b"labels"]


def test_path_traversal_member_is_refused(tmp_path, monkeypatch):
    _make_cifar10(tmp_path / "src" / C10.folder)
    cache = tmp_path / "deep" / "c"
    cache.mkdir(parents=True)
    md5 = _make_archive(cache / C10.archive, tmp_path / "src" / C10.folder, C10.folder, evil=True)
    monkeypatch.setitem(cifar_mod.CIFAR_SOURCES, "cifar10", dataclasses.replace(C10, md5=md5))
    with pytest.raises(DataError, match="evil"):
        load_dataset("cifar10", cache_dir=cache, download=False)
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (cache / "evil.txt").exists()
    assert not (cache / C10.folder).exists() and not list(cache.glob(".extract-*"))
