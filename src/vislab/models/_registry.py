"""The model registry: `@register_model` fills a name -> entry point dict, `create_model` is the one way in."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from vislab.errors import ConfigError

F = TypeVar("F", bound=Callable[..., nn.Module])
M = TypeVar("M", bound=nn.Module)

# Filled by @register_model when the architecture modules are imported (vislab.models imports them).
_MODEL_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: F) -> F:
    """Register `fn` under its function name; it must build a model from keyword options."""
    name = fn.__name__
    old = _MODEL_ENTRYPOINTS.get(name)
    # Re-registering the same function (a module reload) is fine; two different ones sharing a name is a bug.
    if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ValueError(f"model name {name!r} is registered twice: {old.__module__} and {fn.__module__}")
    _MODEL_ENTRYPOINTS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_MODEL_ENTRYPOINTS)


def create_model(name: str, num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Build the registered model `name`; it returns logits of shape (N, num_classes)."""
    if name not in _MODEL_ENTRYPOINTS:
        raise ConfigError(
            f"model.name: {name!r} is not a registered model; valid names are {', '.join(list_models())}."
        )
    return _MODEL_ENTRYPOINTS[name](num_classes=num_classes, **kwargs)


def build_model(model_cls: type[M], kwargs: dict[str, Any], **fixed: Any) -> M:
    """Construct `model_cls(**fixed, **kwargs)`, turning an unknown option into a ConfigError.

    Entry points call this so that a typo (`widht=0.5`) names the option and lists the
    accepted ones instead of surfacing as a bare TypeError; `fixed` are the options the
    entry point decides itself (e.g. the block counts) and the user may not override.
    """
    params = inspect.signature(model_cls).parameters
    allowed = sorted(
        p
        for p, spec in params.items()
        if p not in fixed and spec.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise ConfigError(
            f"model.{unknown[0]}: {model_cls.__name__} does not take the option(s) {', '.join(unknown)}; "
            f"accepted options are {', '.join(allowed)}."
        )
    return model_cls(**fixed, **kwargs)
