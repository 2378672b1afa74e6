"""Momentum-encoder helpers: the reference's EMA momentum schedule and a parameter-only EMA update.

Schedule (AutoMix arXiv:2103.13027; ``CosineScheduleHook`` with ``warming_up="constant"`` in
OpenMixup (github.com/Westlake-AI/openmixup @ 37e1372) ``openmixup/core/hooks/momentum_hook.py``): ``m = base`` while
``t < warmup * T``, then ``m = end - (end - base) * (cos(pi * t / T) + 1) / 2``. The cosine uses
``t / T`` (not the progress since the warm-up), so there is no jump at ``warmup * T``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch
from torch import nn

# The reference's CIFAR schedule, 0.999 -> 0.999999, was set for its 400-epoch runs (200,000 steps): an
# averaging horizon 1 / (1 - m) of 0.5% of the run at the start and 5x the run at the end.
REFERENCE_STEPS = 200_000
REFERENCE_MOMENTUM = (0.999, 0.999999)


def scaled_momentum(total_steps: int | None, base: float | None = None, end: float | None = None,
                    ) -> tuple[float, float]:
    """EMA ``(base, end)`` momenta with the reference's horizons as fractions of a ``total_steps`` run.

    ``1 - m`` scales as ``1 / total_steps``: 200,000 steps give the reference's ``(0.999, 0.999999)``,
    2,000 steps ``(0.9, 0.9999)``, 660 steps ``(0.697, 0.9997)``. ``base`` is floored at 0.5 (an average
    over at least two steps). A momentum given explicitly is kept; without ``total_steps`` the
    reference's values are used.
    """
    if total_steps is None:
        scaled = REFERENCE_MOMENTUM
    else:
        ratio = REFERENCE_STEPS / total_steps
        scaled = (max(0.5, 1.0 - (1.0 - REFERENCE_MOMENTUM[0]) * ratio),
                  max(0.5, 1.0 - (1.0 - REFERENCE_MOMENTUM[1]) * ratio))
    return (scaled[0] if base is None else base, scaled[1] if end is None else end)


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
