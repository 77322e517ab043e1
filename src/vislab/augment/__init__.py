"""Image augmentation named once (AugmentSpec), run by a batched tensor backend or by albumentations."""

from ._albu import AlbumentationsDataset, albumentations_loader, build_albumentations
from ._corrupt import CORRUPTIONS, SEVERITIES, check_corruptions, check_severities, corrupt, corruption_seed
from ._spec import BACKENDS, AugmentSpec, check_backend
from ._tensor import TensorAugment, batch_crop, batch_cutout, batch_flip, batch_rotate, normalize

__all__ = [
    "BACKENDS",
    "AugmentSpec",
    "check_backend",
    "batch_crop",
    "batch_flip",
    "batch_rotate",
    "batch_cutout",
    "normalize",
    "TensorAugment",
    "build_albumentations",
    "AlbumentationsDataset",
    "albumentations_loader",
    "CORRUPTIONS",
    "SEVERITIES",
    "check_corruptions",
    "check_severities",
    "corrupt",
    "corruption_seed",
]
