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
# "random": every image flipped with probability flip_p, independently each epoch. "alternate" (airbench94):
# the first epoch flips each image with probability flip_p, every later epoch flips exactly the images the
# previous epoch did not, so each image is seen both ways in every two consecutive epochs.
FLIP_MODES = ("random", "alternate")
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


def check_flip_mode(field: str, value: Any) -> str:
    if value not in FLIP_MODES:
        raise ConfigError(
            f"{field} = {value!r} is not a flip mode; use 'random' (each image flipped with probability flip_p, "
            "drawn afresh every epoch) or 'alternate' (airbench's: drawn in the first epoch, then inverted every epoch)."
        )
    return value


def check_flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{field} = {value!r} is not a switch; use true or false.")
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
    flip_p: float = 0.0  # probability of a horizontal flip (with flip "alternate": in the first epoch)
    rotate_deg: float = 0.0  # angle drawn uniformly in [-deg, +deg] per image; bilinear, zero fill; 0 disables
    cutout_size: tuple[int, int] = (0, 0)  # (height, width) of one hole; (0, 0) disables
    cutout_p: float = 1.0  # probability an image gets a hole
    cutout_fill: float | str = "mean"  # fill in pixel units 0..255, or "mean" (the data set mean: 0 after normalize)
    flip: str = "random"  # "random" or "alternate" (see FLIP_MODES)
    trivial_augment: bool = False  # TrivialAugment (wide) on the uint8 images, before everything else

    def __post_init__(self) -> None:
        # Normalise as well as validate (YAML gives lists, ints for floats) so equal specs compare equal.
        values = {
            "crop_pad": check_pad("augment.crop_pad", self.crop_pad),
            "pad_mode": check_pad_mode("augment.pad_mode", self.pad_mode),
            "flip_p": check_probability("augment.flip_p", self.flip_p),
            "flip": check_flip_mode("augment.flip", self.flip),
            "rotate_deg": check_rotate("augment.rotate_deg", self.rotate_deg),
            "cutout_size": check_hole_size("augment.cutout_size", self.cutout_size),
            "cutout_p": check_probability("augment.cutout_p", self.cutout_p),
            "cutout_fill": check_fill("augment.cutout_fill", self.cutout_fill),
            "trivial_augment": check_flag("augment.trivial_augment", self.trivial_augment),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        if self.flip == "alternate" and self.flip_p == 0.0:
            raise ConfigError(
                "augment.flip = 'alternate' with augment.flip_p = 0.0: flip_p is the share of images the first epoch "
                "flips (every later epoch inverts the previous one), and 0 reads as 'no flipping'. Set "
                "augment.flip_p=0.5 (airbench's), or augment.flip='random' to keep flipping off."
            )

    @property
    def has_cutout(self) -> bool:
        return self.cutout_size != (0, 0) and self.cutout_p > 0.0

    def is_identity(self) -> bool:
        """True when every image passes through unchanged (only normalize remains)."""
        return (
            self.crop_pad == 0
            and self.flip_p == 0.0
            and self.rotate_deg == 0.0
            and not self.has_cutout
            and not self.trivial_augment
        )


def check_albumentations_spec(spec: AugmentSpec) -> None:
    """Refuse what per-sample albumentations transforms cannot do: they see one image, never its epoch."""
    if spec.flip == "alternate":
        raise ConfigError(
            "augment.flip = 'alternate' needs each image's index and the epoch, which per-sample albumentations "
            "transforms never see: use augment.backend=tensor (the default) for alternating flips, or "
            "augment.flip=random with the albumentations backend."
        )
    if spec.trivial_augment:
        raise ConfigError(
            "augment.trivial_augment = true runs in the tensor backend only (albumentations 2.x has no "
            "TrivialAugment): use augment.backend=tensor, or augment.trivial_augment=false with albumentations."
        )
