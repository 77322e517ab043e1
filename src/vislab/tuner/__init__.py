"""Tuning before training: the LR range test (`LRFinder`, `lr_find`)."""

from .lr_finder import DEFAULT_SUGGESTION, SUGGESTIONS, LRFinder, RangeTestError, smooth, suggest, sweep_lrs

__all__ = ["DEFAULT_SUGGESTION", "LRFinder", "RangeTestError", "SUGGESTIONS", "lr_find", "smooth", "suggest", "sweep_lrs"]


def __getattr__(name: str):
    # lr_find wires a recipe's data, model and engine together, which is vislab.run's job; it is
    # imported on first use so that importing the tuner does not pull in the whole run machinery.
    if name == "lr_find":
        from ..run import lr_find

        return lr_find
    raise AttributeError(f"module 'vislab.tuner' has no attribute {name!r}")
