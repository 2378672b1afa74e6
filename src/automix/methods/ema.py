"""Momentum-encoder helpers: the reference's EMA momentum schedule and a parameter-only EMA update.

Schedule (spec 1.5, ``CosineScheduleHook`` with ``warming_up="constant"``): ``m = base`` while
``t < warmup * T``, then ``m = end - (end - base) * (cos(pi * t / T) + 1) / 2``. The cosine uses
``t / T`` (not the progress since the warm-up), so there is no jump at ``warmup * T``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def ema_momentum(step: int, total_steps: int | None, base: float, end: float, warmup: float = 0.1) -> float:
    """EMA momentum at optimiser step ``step`` of ``total_steps`` (constant ``base`` if total is None)."""
    if total_steps is None or step < warmup * total_steps:
        return base
    t = min(step, total_steps) / total_steps
    return end - (end - base) * (math.cos(math.pi * t) + 1.0) / 2.0


@torch.no_grad()
def ema_update(targets: Iterable[nn.Module], sources: Iterable[nn.Module], momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * source`` for parameters only (not BN buffers)."""
    dst, src = [], []
    for t_mod, s_mod in zip(targets, sources):
        for t, s in zip(t_mod.parameters(), s_mod.parameters()):
            dst.append(t)
            src.append(s.detach())
    if dst:
        torch._foreach_lerp_(dst, src, 1.0 - momentum)
