"""Tuning before training: the LR range test (`LRFinder`; `vislab.lr_find` runs it on a recipe)."""

from .lr_finder import (
    DEFAULT_SUGGESTION,
    LR_FIND_JSON,
    LR_FIND_PNG,
    SUGGESTIONS,
    LRFinder,
    RangeTestError,
    format_suggestions,
    smooth,
    suggest,
    sweep_lrs,
)

__all__ = [
    "DEFAULT_SUGGESTION",
    "LR_FIND_JSON",
    "LR_FIND_PNG",
    "LRFinder",
    "RangeTestError",
    "SUGGESTIONS",
    "format_suggestions",
    "smooth",
    "suggest",
    "sweep_lrs",
]
