"""Decoding one PNG/JPEG file to an RGB uint8 array, and the explicit resize/convert option.

OpenCV is used rather than PIL because it measured ~5x faster on 32x32 JPEGs (about 51,000 vs
10,000 images/s on one core) and releases the GIL, so a thread pool scales. IMREAD_UNCHANGED keeps
the file's own channel count, so grayscale/RGBA files can be reported instead of silently
converted; it also ignores EXIF orientation, as PIL does by default.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vislab.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # compared lower-case


def _mode(img: np.ndarray) -> str:
    if img.dtype != np.uint8:
        return f"{img.dtype.itemsize * 8}-bit"
    if img.ndim == 2 or img.shape[2] == 1:
        return "grayscale"
    return {3: "RGB", 4: "RGBA"}.get(img.shape[2], f"{img.shape[2]}-channel")


def _to_rgb(img: np.ndarray) -> np.ndarray:
    # Only reached with the explicit image_size option: convert like PIL's .convert("RGB") (alpha dropped).
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(img.dtype)
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_hwc(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (size, size, 3), or to (h, w, 3) for a `size` of (h, w)."""
    h, w = img.shape[:2]
    th, tw = size if isinstance(size, tuple) else (size, size)
    if (h, w) == (th, tw):
        return img
    # INTER_AREA averages when shrinking (no aliasing); it degrades to nearest when enlarging, so use bilinear there.
    interp = cv2.INTER_AREA if th < h and tw < w else cv2.INTER_LINEAR
    return cv2.resize(img, (tw, th), interpolation=interp)


def resize_nchw(x: np.ndarray, size: int) -> np.ndarray:
    """Resize a (N, 3, H, W) uint8 batch to (N, 3, size, size), image by image."""
    if x.shape[2:] == (size, size):
        return x
    out = np.empty((x.shape[0], 3, size, size), dtype=np.uint8)
    for i in range(x.shape[0]):
        out[i] = resize_hwc(np.ascontiguousarray(x[i].transpose(1, 2, 0)), size).transpose(2, 0, 1)
    return out


def decode_file(path: str | Path, image_size: int | tuple[int, int] | None) -> np.ndarray:
    """(3, H, W) RGB uint8 pixels of one file; DataError naming the file if it cannot be used.

    With `image_size` (an int for square images, or (h, w)), any 8/16-bit grayscale, palette, RGBA or CMYK
    file is converted to RGB and resized; without it, only 8-bit RGB files are accepted, as they are.
    """
    try:
        # read() + imdecode measured ~25% faster than np.fromfile, and unlike cv2.imread it
        # handles non-ASCII paths on Windows.
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read the image file {path}: {e}.") from e
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error:
        img = None
    if img is None:
        raise DataError(
            f"cannot decode {path}: it is not a valid PNG/JPEG image (truncated or another format). Delete or replace it."
        )
    mode = _mode(img)
    if image_size is None:
        if mode != "RGB":
            raise DataError(
                f"{path} is a {mode} image; the imagefolder data set needs 8-bit RGB images. Convert it, "
                "or set data.image_size to resize every image and convert grayscale/RGBA to RGB."
            )
        rgb = img[:, :, ::-1]  # OpenCV decodes to BGR
    else:
        try:
            rgb = resize_hwc(_to_rgb(img), image_size)
        except ValueError as e:
            raise DataError(f"{path} is a {mode} image, which cannot be converted to 8-bit RGB.") from e
    return rgb.transpose(2, 0, 1)  # (3, H, W) view; the caller copies it into the batch
