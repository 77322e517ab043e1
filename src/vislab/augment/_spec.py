"""The augmentation vocabulary shared by both backends, validated once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from ..errors import ConfigError

BACKENDS = ("tensor", "albumentations")
PAD_MODES = ("reflect", "constant")
MAX_ROTATE_DEG = 180.0


def check_backend(name: str) -> str:
    """Return `name` if it is a known backend, else raise ConfigError listing the valid ones."""
    if name not in BACKENDS:
        raise ConfigError(f"augment.backend = {name!r} is not a known backend; choose one of {', '.join(BACKENDS)}.")
    return name


def _is_real(value: Any) -> bool:
    # bool is an int subclass, but `flip_p: true` in a YAML file is a mistake, not a probability.
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return _is_real(value) and float(value).is_integer()


def check_probability(field: str, value: Any) -> float:
    if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{field} = {value!r} is not a probability; use a number in [0, 1].")
    return float(value)


def check_pad(field: str, value: Any) -> int:
    if not _is_int(value) or int(value) < 0:
        raise ConfigError(f"{field} = {value!r} is not a pixel count; use an integer >= 0 (0 disables the crop).")
    return int(value)


def check_pad_mode(field: str, value: Any) -> str:
    if value not in PAD_MODES:
        raise ConfigError(f"{field} = {value!r} is not a pad mode; use one of {', '.join(map(repr, PAD_MODES))}.")
    return value


def check_rotate(field: str, value: Any) -> float:
    if not _is_real(value) or not math.isfinite(float(value)) or not 0.0 <= float(value) <= MAX_ROTATE_DEG:
        raise ConfigError(
            f"{field} = {value!r} is not a rotation limit; use degrees in [0, {MAX_ROTATE_DEG:g}] "
            "(0 disables rotation)."
        )
    return float(value)


def check_hole_size(field: str, value: Any) -> tuple[int, int]:
    is_pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    ok = is_pair and all(_is_int(v) for v in value)
    if ok:
        h, w = int(value[0]), int(value[1])
        ok = (h == 0 and w == 0) or (h > 0 and w > 0)
    if not ok:
        raise ConfigError(
            f"{field} = {value!r} is not a hole size; use (height, width) as two integers > 0, "
            "or (0, 0) to disable cutout."
        )
    return h, w


def check_fill(field: str, value: Any) -> float | str:
    if value == "mean":
        return "mean"
    if not _is_real(value) or not 0.0 <= float(value) <= 255.0:
        raise ConfigError(f"{field} = {value!r} is not a fill value; use a number in [0, 255] (pixel units) or 'mean'.")
    return float(value)


@dataclass(frozen=True)
class AugmentSpec:
    """What to do to each training image; both backends read the same spec."""

    crop_pad: int = 0  # pad each side by this many pixels, then random-crop back to H x W; 0 disables
    pad_mode: str = "reflect"  # "reflect" (= cv2.BORDER_REFLECT_101) or "constant" (zeros)
    flip_p: float = 0.0  # probability of a horizontal flip
    rotate_deg: float = 0.0  # angle drawn uniformly in [-deg, +deg] per image; bilinear, zero fill; 0 disables
    cutout_size: tuple[int, int] = (0, 0)  # (height, width) of one hole; (0, 0) disables
    cutout_p: float = 1.0  # probability an image gets a hole
    cutout_fill: float | str = "mean"  # fill in pixel units 0..255, or "mean" (the data set mean: 0 after normalize)

    def __post_init__(self) -> None:
        # Normalise as well as validate (YAML gives lists, ints for floats) so equal specs compare equal.
        values = {
            "crop_pad": check_pad("augment.crop_pad", self.crop_pad),
            "pad_mode": check_pad_mode("augment.pad_mode", self.pad_mode),
            "flip_p": check_probability("augment.flip_p", self.flip_p),
            "rotate_deg": check_rotate("augment.rotate_deg", self.rotate_deg),
            "cutout_size": check_hole_size("augment.cutout_size", self.cutout_size),
            "cutout_p": check_probability("augment.cutout_p", self.cutout_p),
            "cutout_fill": check_fill("augment.cutout_fill", self.cutout_fill),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def has_cutout(self) -> bool:
        return self.cutout_size != (0, 0) and self.cutout_p > 0.0

    def is_identity(self) -> bool:
        """True when every image passes through unchanged (only normalize remains)."""
        return self.crop_pad == 0 and self.flip_p == 0.0 and self.rotate_deg == 0.0 and not self.has_cutout
