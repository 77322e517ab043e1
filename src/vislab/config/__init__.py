"""Typed, validated experiment config, recipes and `--set` overrides."""

from ._load import (
    DEFAULT_RECIPE,
    apply_overrides,
    config_to_yaml,
    list_recipes,
    load_config,
    parse_config_yaml,
    parse_override,
    read_recipe,
    recipe_info,
    validate_config,
)
from ._schema import (
    AugmentConfig,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    TrainerConfig,
)

__all__ = [
    "AugmentConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "SchedConfig",
    "TrainerConfig",
    "DEFAULT_RECIPE",
    "apply_overrides",
    "config_to_yaml",
    "list_recipes",
    "load_config",
    "parse_config_yaml",
    "parse_override",
    "read_recipe",
    "recipe_info",
    "validate_config",
]
