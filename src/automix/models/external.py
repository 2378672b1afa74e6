"""Build timm and torchvision models through ``create_model("timm:<name>")`` and
``create_model("torchvision:<name>")``.

Neither library is a dependency: each is imported only when a prefixed name is asked for, and a
missing one raises an ``ImportError`` saying what to install. Models are always built without
pretrained weights unless the caller passes ``pretrained=`` (timm) or ``weights=`` (torchvision)
explicitly; this machine and many training nodes have no network.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from torch import nn

__all__ = ["create_external_model"]


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{package} models need the '{package}' package, which is not installed; "
                          f"run `pip install {package}`") from err


def create_external_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build ``"timm:<arch>"`` or ``"torchvision:<arch>"`` with ``num_classes`` outputs.

    Args:
        name: Prefixed architecture name, e.g. ``"timm:resnet18"``, ``"torchvision:resnet50"``.
        num_classes: Number of logits (already validated by ``create_model``).
        **kwargs: Forwarded to ``timm.create_model`` / ``torchvision.models.get_model``.

    Raises:
        ValueError: Unknown prefix or an empty architecture name.
        ImportError: The library is not installed.
    """
    prefix, _, arch = name.partition(":")
    if not arch:
        raise ValueError(f"name {name!r} has an empty architecture after the '{prefix}:' prefix")
    if prefix == "timm":
        timm = _import("timm", "timm")
        kwargs = {"pretrained": False, **kwargs}
        return timm.create_model(arch, num_classes=num_classes, **kwargs)
    if prefix == "torchvision":
        models = _import("torchvision.models", "torchvision")
        get_model = getattr(models, "get_model", None)
        if get_model is None:
            raise ImportError("torchvision:<name> needs torchvision >= 0.14 (torchvision.models.get_model); "
                              "run `pip install -U torchvision`")
        kwargs = {"weights": None, **kwargs}
        return get_model(arch, num_classes=num_classes, **kwargs)
    raise ValueError(f"name {name!r} has an unknown prefix {prefix!r}; use 'timm:' or 'torchvision:'")
