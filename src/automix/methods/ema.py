"""Momentum-encoder helpers: the reference's EMA momentum schedule and a parameter-only EMA update.

Schedule (spec 1.5, ``CosineScheduleHook`` with ``warming_up="constant"``): ``m = base`` while
``t < warmup * T``, then ``m = end - (end - base) * (cos(pi * t / T) + 1) / 2``. The cosine uses
``t / T`` (not the progress since the warm-up), so there is no jump at ``warmup * T``.
"""

from __future__ import annotations

import math
import warnings
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
        _warn_if_rounded_away(dst[0].dtype, momentum)
        torch._foreach_lerp_(dst, src, 1.0 - momentum)


def _warn_if_rounded_away(dtype: torch.dtype, momentum: float) -> None:
    """Warn when the EMA weights' dtype cannot hold this update: ``w += (1 - m) * (s - w)`` moves a weight by
    (1 - m) times its gap to the source, a few percent of the weight; below half an ulp (eps / 2 of the weight)
    the addition rounds to nothing, which for 1 - m < 16 eps is most updates (bf16 at m = 0.999 keeps ~1%)."""
    if not dtype.is_floating_point or torch.finfo(dtype).bits > 16 or 1.0 - momentum >= 16 * torch.finfo(dtype).eps:
        return
    warnings.warn(f"EMA weights in {dtype} cannot follow momentum {momentum}: an update of weight {1.0 - momentum:.2g} "
                  f"is below the precision of {dtype} (eps {torch.finfo(dtype).eps:.2g}) and rounds away, so the EMA "
                  f"encoder stays near its first weights. Keep the method in float32 and train under torch.autocast "
                  f"for 16-bit speed", UserWarning, stacklevel=4)
