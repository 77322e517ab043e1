"""An exponential moving average of a model's weights, updated after every optimizer step.

Written here rather than taken from torch.optim.swa_utils.AveragedModel: with `use_buffers=True`
(needed so BatchNorm's running statistics follow the averaged weights) AveragedModel runs its average
over integer buffers too (`num_batches_tracked`), and it has no warm-up. timm's ModelEmaV3 is the
model for the behaviour: floating-point parameters and buffers are averaged, the rest copied, and the
decay warms up as min(decay, (1 + t) / (10 + t)) so that the first updates are not dominated by the
random initialisation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_decay_at(decay: float, updates: int, warmup: bool) -> float:
    """The decay used by update number `updates` (1-based): warm-up keeps early averages close to the weights."""
    return min(decay, (1 + updates) / (10 + updates)) if warmup else decay


class ModelEma:
    """`module`: a frozen copy of the model in eval mode holding the averaged weights."""

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def _pairs(
        self, model: nn.Module
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        ema_state, model_state = self.module.state_dict(), model.state_dict()
        avg_e, avg_m, copy_e, copy_m = [], [], [], []
        for name, e in ema_state.items():
            m = model_state[name].detach()
            if e.is_floating_point():
                avg_e.append(e)
                avg_m.append(m.to(e.dtype))
            else:
                copy_e.append(e)
                copy_m.append(m)
        return avg_e, avg_m, copy_e, copy_m

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (call after each optimizer step)."""
        self.updates += 1
        d = ema_decay_at(self.decay, self.updates, self.warmup)
        avg_e, avg_m, copy_e, copy_m = self._pairs(model)
        if avg_e:
            torch._foreach_lerp_(avg_e, avg_m, 1.0 - d)  # e += (1 - d) * (m - e), one fused pass
        for e, m in zip(copy_e, copy_m):
            e.copy_(m)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
