"""Image augmentation named once (AugmentSpec), run by a batched tensor backend or by albumentations."""

from ._albu import AlbumentationsDataset, albumentations_loader, build_albumentations
from ._corrupt import CORRUPTIONS, SEVERITIES, check_corruptions, check_severities, corrupt, corruption_seed
from ._mix import cutmix, mixup, sample_beta
from ._spec import BACKENDS, FLIP_MODES, AugmentSpec, check_albumentations_spec, check_backend
from ._tensor import (
    TensorAugment,
    alternate_flips,
    batch_alternate_flip,
    batch_crop,
    batch_cutout,
    batch_flip,
    batch_rotate,
    normalize,
)
from ._trivial import TRIVIAL_OPS, apply_trivial, trivial_augment

__all__ = [
    "BACKENDS",
    "FLIP_MODES",
    "AugmentSpec",
    "check_backend",
    "batch_crop",
    "batch_flip",
    "alternate_flips",
    "batch_alternate_flip",
    "batch_rotate",
    "batch_cutout",
    "normalize",
    "TensorAugment",
    "TRIVIAL_OPS",
    "trivial_augment",
    "apply_trivial",
    "mixup",
    "cutmix",
    "sample_beta",
    "build_albumentations",
    "check_albumentations_spec",
    "AlbumentationsDataset",
    "albumentations_loader",
    "CORRUPTIONS",
    "SEVERITIES",
    "check_corruptions",
    "check_severities",
    "corrupt",
    "corruption_seed",
]
