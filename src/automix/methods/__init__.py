"""Training methods: anything that needs the model to mix (AutoMix, SAMix) and the generic wrapper
that turns any input-space mixer into a Method, so a trainer treats every method alike.

``create_method(name, model, num_classes=..., **options)`` builds one by name: ``"none"``
(vanilla), any registered mixer name (``"mixup"``, ``"cutmix"``, ...), ``"automix"`` or ``"samix"``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..mixers import create_mixer, list_mixers
from .automix import AutoMix, SAMix
from .base import Method, MixerMethod
from .mixblock import PixelMixBlock, mask_loss, rescale_lam

LEARNED = {"automix": AutoMix, "samix": SAMix}


def list_methods() -> list[str]:
    """Every name ``create_method`` accepts."""
    return ["none"] + sorted(LEARNED) + list_mixers()


def create_method(name: str, model: nn.Module, *, num_classes: int | None = None, total_steps: int | None = None,
                  seed: int | None = None, loss: str = "ce", **options: Any) -> Method:
    """Build the Method called ``name`` around ``model``; ``options`` go to the method or mixer.

    ``loss`` (``"ce"`` or ``"bce"``) means the same for every method, AutoMix and SAMix included; any
    other name raises ``ValueError``.
    """
    if name in ("none", "vanilla"):
        return MixerMethod(model, None, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed,
                           **options)
    if name in LEARNED:
        return LEARNED[name](model, num_classes=num_classes, total_steps=total_steps, seed=seed, loss=loss, **options)
    if name in list_mixers():
        mixer = create_mixer(name, num_classes=num_classes, **options)
        return MixerMethod(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)
    raise ValueError(f"name must be one of {list_methods()}, got {name!r}")


__all__ = ["AutoMix", "SAMix", "Method", "MixerMethod", "PixelMixBlock", "create_method", "list_methods",
           "mask_loss", "rescale_lam"]
