"""Argument checks shared by every layer: each raises ValueError/TypeError naming the argument.

User input is never checked with ``assert`` (asserts vanish under ``python -O`` and say nothing
useful); these helpers keep the messages uniform: ``<name> must be ..., got <value>``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def check_type(name: str, value: Any, types: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def check_number(name: str, value: Any) -> float:
    """A real number (not bool); NaN is rejected here too."""
    check_type(name, value, (int, float), "a number")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN, got {value!r}")
    return float(value)


def check_positive(name: str, value: Any) -> float:
    v = check_number(name, value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> float:
    v = check_number(name, value)
    ok_low = v > low if low_open else v >= low
    ok_high = v < high if high_open else v <= high
    if not (ok_low and ok_high):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lb}{low}, {high}{hb}, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    check_type(name, value, int, "a positive int")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_pair(name: str, value: Any, low: float, high: float) -> tuple[float, float]:
    """A (min, max) pair of numbers inside [low, high] with min <= max."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a (min, max) pair, got {value!r}")
    a = check_range(f"{name}[0]", value[0], low, high)
    b = check_range(f"{name}[1]", value[1], low, high)
    if a > b:
        raise ValueError(f"{name} must have min <= max, got {value!r}")
    return a, b


def check_tensor(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_generator(name: str, value: Any) -> torch.Generator | None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(value).__name__}")
    return value


# Input batches. Mixers and every Method's training_step call these two, so the same bad batch gets the
# same message whichever method it reaches (a uint8 batch used to fail deep inside a convolution).
SPATIAL_SHAPES = {1: "[B, C, T]", 2: "[B, C, H, W]", 3: "[B, C, D, H, W]"}


def check_batch(name: str, x: Any, who: str, spatial_dims: Sequence[int] | None = None) -> torch.Tensor:
    """An input batch: a floating-point tensor ``[B, ...]`` with ``B >= 1`` and at least 2 dims.

    Args:
        name: the argument's name in messages (``"x"``).
        x: the batch.
        who: the mixer or method it is for, named in messages.
        spatial_dims: when given, ``x`` must be ``[B, C, *spatial]`` with ``len(spatial)`` in it
            (1: ``[B, C, T]``, 2: ``[B, C, H, W]``, 3: ``[B, C, D, H, W]``).

    Raises:
        TypeError: ``x`` is not a tensor, or not floating point (uint8 images, integer ids).
        ValueError: ``x`` has too few dims, an empty batch or a shape outside ``spatial_dims``.
    """
    check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor for {who} (convert uint8 images first, e.g. "
                        f"x.float() / 255), got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must be a batch [B, ...] with B >= 1 and at least 2 dims for {who}, "
                         f"got shape {tuple(x.shape)}")
    if spatial_dims is not None and x.ndim - 2 not in spatial_dims:
        shapes = " or ".join(SPATIAL_SHAPES[d] for d in sorted(spatial_dims))
        raise ValueError(f"{name} must be a {shapes} batch for {who}, got shape {tuple(x.shape)}")
    return x


def check_targets(name: str, y: Any, batch: int, num_classes: int | None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Targets for a batch of ``batch``: class ids ``[B]`` (ints in ``[0, num_classes)``) or float ``[B, ...]``.

    Raises:
        TypeError: ``y`` is not a tensor, or is bool / complex.
        ValueError: wrong batch size, class ids that are not ``[B]`` or out of range, ``num_classes``
            missing for class ids, or ``label_smoothing`` with float targets that are not ``[B, C]``.
    """
    check_tensor(name, y)
    if y.ndim == 0 or y.shape[0] != batch:
        raise ValueError(f"{name} must have the batch size of x ({batch}) in dim 0, got shape {tuple(y.shape)}")
    if y.dtype == torch.bool or y.is_complex():
        raise TypeError(f"{name} must be class indices (integer) or float targets, got dtype {y.dtype}")
    if y.is_floating_point():
        if label_smoothing > 0 and y.ndim != 2:
            raise ValueError(f"label_smoothing applies to class targets [B, C]; {name} has shape {tuple(y.shape)}")
        return y
    if y.ndim != 1:
        raise ValueError(f"{name} as class indices must have shape [B], got {tuple(y.shape)}")
    if num_classes is None:
        raise ValueError(f"num_classes is required when {name} holds class indices (pass num_classes=...), "
                         f"got num_classes=None")
    # Only on the CPU: reading the range of a device tensor would stall the step.
    if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{name} holds class ids outside [0, num_classes={num_classes}): "
                         f"min {int(y.min())}, max {int(y.max())}")
    return y
