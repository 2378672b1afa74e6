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
