"""Model registry: `create_model(name, num_classes, **options)` builds ResNet-9/18/34 and airbench94 (logits)."""

from vislab.models import airbench, resnet, resnet9  # noqa: F401  (importing registers the entry points)
from vislab.models._registry import create_model, list_models, register_model
from vislab.models._summary import (
    count_parameters,
    format_mult_adds,
    get_cam_layers,
    get_target_layer,
    model_summary,
)

__all__ = [
    "count_parameters",
    "create_model",
    "format_mult_adds",
    "get_cam_layers",
    "get_target_layer",
    "list_models",
    "model_summary",
    "register_model",
]
