"""String registry of mixers: ``register_mixer``, ``create_mixer(name, **kwargs)``, ``list_mixers()``.

Mirrors timm's ``create_model``: code and configs name a mixer by string and pass its options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._lam import refuse_alpha_with_lam
from .base import BaseMixer

_MIXERS: dict[str, Callable[..., BaseMixer]] = {}


def register_mixer(name: str) -> Callable:
    """Class/function decorator that registers a mixer factory under ``name``."""

    def wrap(factory: Callable[..., BaseMixer]) -> Callable[..., BaseMixer]:
        if name in _MIXERS:
            raise ValueError(f"a mixer named {name!r} is already registered")
        _MIXERS[name] = factory
        return factory

    return wrap


def create_mixer(name: str, **kwargs: Any) -> BaseMixer:
    """Build the mixer registered as ``name`` with its keyword options.

    >>> from automix import create_mixer
    >>> create_mixer("cutmix", alpha=0.2, num_classes=10).alpha
    0.2
    """
    if not isinstance(name, str) or name not in _MIXERS:
        raise ValueError(f"name must be one of {list_mixers()}, got {name!r}")
    refuse_alpha_with_lam(kwargs, f"mixer {name!r}")
    return _MIXERS[name](**kwargs)


def mixer_factory(name: str) -> Callable[..., BaseMixer]:
    """The class or function registered as ``name`` (its signature declares the mixer's options).

    Raises:
        ValueError: no mixer is called ``name``.
    """
    if not isinstance(name, str) or name not in _MIXERS:
        raise ValueError(f"name must be one of {list_mixers()}, got {name!r}")
    return _MIXERS[name]


def list_mixers() -> list[str]:
    """Names of every registered mixer, sorted."""
    return sorted(_MIXERS)
