"""Build timm and torchvision models through ``create_model("timm:<name>")`` and
``create_model("torchvision:<name>")``.

Neither library is a dependency: each is imported only when a prefixed name is asked for, and a
missing one raises an ``ImportError`` saying what to install. Models are always built without
pretrained weights unless the caller passes ``pretrained=`` (timm) or ``weights=`` (torchvision)
explicitly; this machine and many training nodes have no network. ``pretrained_state_dict`` returns a
library's published weights for a name (from its cache, else downloaded), for loading into a model built
with another class count.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from torch import nn

__all__ = ["create_external_model", "pretrained_state_dict"]


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


def pretrained_state_dict(name: str) -> dict[str, Any]:
    """The published weights of ``"timm:<arch>"`` or ``"torchvision:<arch>"`` as a state dict (CPU tensors).

    timm's default pretrained tag (``timm.create_model(arch, pretrained=True)``, with its own head) or
    torchvision's ``DEFAULT`` weights (``get_model_weights(arch).DEFAULT``). Each library looks in its
    local cache first (timm: the Hugging Face cache, ``HF_HOME``; torchvision: ``torch.hub.get_dir()``)
    and downloads only when the file is not there.

    Raises:
        ValueError: a name without one of the two prefixes, or an empty architecture.
        ImportError: the library is not installed.
        FileNotFoundError: the library has no weights for ``arch``, or has none cached and cannot download
            them (no network); the message gives the library's reason and where the cache lives.
    """
    prefix, _, arch = name.partition(":")
    if prefix not in ("timm", "torchvision"):
        raise ValueError(f"name {name!r} has no published weights: only 'timm:<name>' and 'torchvision:<name>' "
                         "models do")
    if not arch:
        raise ValueError(f"name {name!r} has an empty architecture after the '{prefix}:' prefix")
    if prefix == "timm":
        timm = _import("timm", "timm")
        where = "the Hugging Face cache (HF_HOME, default ~/.cache/huggingface)"
        try:
            return timm.create_model(arch, pretrained=True).state_dict()
        except Exception as err:  # offline hub errors, unknown names, no pretrained tag: all end here
            raise FileNotFoundError(_unavailable(name, where, err)) from err
    models = _import("torchvision.models", "torchvision")
    import torch

    where = f"the torch hub cache ({torch.hub.get_dir()}/checkpoints)"
    try:
        weights = models.get_model_weights(arch).DEFAULT
        return weights.get_state_dict(progress=False)
    except Exception as err:
        raise FileNotFoundError(_unavailable(name, where, err)) from err


def _unavailable(name: str, where: str, err: Exception) -> str:
    reason = " ".join(str(err).split())[:300] or type(err).__name__
    return (f"no pretrained weights for {name!r} here: not in {where} and not downloadable ({type(err).__name__}: "
            f"{reason}); fetch them once where there is a network, or start from a local file")
