"""String registry of backbones: ``create_model("preact_resnet18", num_classes=100)``.

Each registered factory also declares its default AutoMix feature layer, the module whose output
feeds the Mix Block (stage 3 of the CIFAR ResNets, stage 2 of WRN: ``out_indices`` and ``mask_layer`` in the
AutoMix configs under ``configs/classification/cifar100/automix/basic/`` of ``Westlake-AI/openmixup`` at commit
``37e1372``). Names with a ``timm:`` or ``torchvision:`` prefix are forwarded to those libraries, imported only
when used.
"""

from __future__ import annotations

import fnmatch
import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

__all__ = ["check_positive_int", "create_model", "default_feature_layer", "list_models", "model_options",
           "register_model"]

F = TypeVar("F", bound=Callable[..., nn.Module])

# Prefixes reserved for external libraries; registered names may therefore not contain ":".
EXTERNAL_PREFIXES = ("timm:", "torchvision:")


@dataclass(frozen=True)
class _Entry:
    fn: Callable[..., nn.Module]
    feature_layer: str


_REGISTRY: dict[str, _Entry] = {}


def check_input_channels(x: Any, in_chans: int, model: str) -> None:
    """Refuse a batch whose channels are not the ``in_chans`` the model was built for, before its first convolution
    would (torch's error names the weight's size, not the option). A shape comparison only: no host sync.

    Raises:
        ValueError: ``x`` is not [B, C, H, W] with ``C == in_chans`` (naming ``x``, its channels and ``in_chans``).
    """
    if getattr(x, "ndim", None) != 4 or x.shape[1] != in_chans:
        got = f"{x.shape[1]} channel(s), shape {tuple(x.shape)}" if getattr(x, "ndim", 0) == 4 else \
            f"shape {tuple(getattr(x, 'shape', ()))}"
        raise ValueError(f"x must be [B, {in_chans}, H, W] for {model} (built with in_chans={in_chans}), got {got}; "
                         f"convert the images (e.g. grey to RGB: x.expand(-1, 3, -1, -1)) or build the model with "
                         f"in_chans={x.shape[1] if getattr(x, 'ndim', 0) == 4 else 'C'}")


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is a positive integer, else raise.

    Args:
        name: Argument name used in the error message.
        value: The value to check. ``bool`` is rejected even though it is an ``int``.

    Raises:
        TypeError: ``value`` is not an integer (e.g. ``2.5`` or ``"10"``).
        ValueError: ``value`` is an integer ``<= 0``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def register_model(name: str, *, feature_layer: str) -> Callable[[F], F]:
    """Decorator registering a model factory under ``name``.

    The factory must accept ``num_classes`` as a keyword and return an ``nn.Module``.

    Args:
        name: Registry key, e.g. ``"preact_resnet18"``. Must not contain ``":"``.
        feature_layer: Module path whose output feeds the AutoMix Mix Block, e.g. ``"layer3"``.

    Example:
        >>> @register_model("tiny_net_doc", feature_layer="body")
        ... def tiny_net_doc(num_classes: int = 10) -> nn.Module:
        ...     return nn.Sequential()
        >>> "tiny_net_doc" in list_models()
        True
        >>> _ = _REGISTRY.pop("tiny_net_doc")
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name must be a non-empty string without ':', got {name!r}")
    if not isinstance(feature_layer, str) or not feature_layer:
        raise ValueError(f"feature_layer must be a non-empty module path, got {feature_layer!r}")

    def decorator(fn: F) -> F:
        old = _REGISTRY.get(name)
        # Re-registering the same function (a module reload, doctest) replaces the entry.
        if old is not None and _qualname(old.fn) != _qualname(fn):
            raise ValueError(f"name {name!r} is already registered to {_qualname(old.fn)}")
        _REGISTRY[name] = _Entry(fn=fn, feature_layer=feature_layer)
        return fn

    return decorator


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell-style ``pattern``.

    External ``timm:`` / ``torchvision:`` names are not listed; any name those libraries accept
    works with :func:`create_model`.
    """
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]


def _unknown_name(name: str) -> ValueError:
    return ValueError(f"name {name!r} is not a registered model; available: {', '.join(list_models())} "
                      f"(or use a 'timm:<name>' / 'torchvision:<name>' prefix)")


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a model by name.

    Args:
        name: A registered name (see :func:`list_models`), ``"timm:<name>"`` or
            ``"torchvision:<name>"``.
        num_classes: Number of output logits, a positive int.
        **kwargs: Forwarded to the factory, e.g. ``width=16`` for the CIFAR ResNets or
            ``widen=2`` for WRN.

    Returns:
        The model, freshly initialised (external models are built with no pretrained weights).

    Raises:
        ValueError: Unknown ``name`` or non-positive ``num_classes``.
        TypeError: Non-integer ``num_classes`` or a keyword the factory does not accept.
        ImportError: A prefixed name whose library is not installed.

    Example:
        >>> import torch
        >>> model = create_model("preact_resnet18", num_classes=10, width=8)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r} ({type(name).__name__})")
    num_classes = check_positive_int("num_classes", num_classes)
    if name.startswith(EXTERNAL_PREFIXES):
        from automix.models.external import create_external_model

        return create_external_model(name, num_classes, **kwargs)
    entry = _REGISTRY.get(name)
    if entry is None:
        raise _unknown_name(name)
    params = inspect.signature(entry.fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        accepted = [k for k in params if k != "num_classes"]
        for key in kwargs:
            if key not in params or key == "num_classes":
                raise TypeError(f"create_model({name!r}) got an unexpected keyword argument {key!r}; "
                                f"accepted: {', '.join(accepted) or '(none)'}")
    return entry.fn(num_classes=num_classes, **kwargs)


def model_options(name: str) -> list[str]:
    """The keyword options of registered model ``name`` (its factory's parameters but ``num_classes``).

    Raises:
        ValueError: ``name`` is not registered.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise _unknown_name(name)
    return [k for k in inspect.signature(entry.fn).parameters if k != "num_classes"]


def _guess_from_feature_info(info: Any) -> str | None:
    """Pick the Mix Block layer from a timm ``feature_info`` (list of dicts or FeatureInfo)."""
    if hasattr(info, "get_dicts"):
        info = info.get_dicts()
    try:
        entries = [(d["module"], d["reduction"]) for d in info]
    except (TypeError, KeyError):
        return None
    if len(entries) < 2:
        return None
    reductions = [r for _, r in entries]
    if len(set(reductions)) > 1:
        # CNN: the last stage before the final down-sampling, i.e. the second-to-last stage
        # (layer3 of a ResNet, stride 16).
        return [m for m, r in entries if r < reductions[-1]][-1]
    # Isotropic model (ViT / DeiT): every block has the same stride. The reference feeds
    # block 6 of 12 (DeiT-S, out_indices=(5, 11)), i.e. the middle block.
    return entries[len(entries) // 2 - 1][0]


def default_feature_layer(name_or_model: str | nn.Module) -> str:
    """The module path whose output feeds the AutoMix Mix Block.

    Args:
        name_or_model: A registered name, a ``"torchvision:resnet*"`` name, or a model instance.
            A name gives the default of the model built with its default options (``"vit_tiny"``:
            ``"blocks.5"``, the middle of its 12 blocks); a model built with other options (``depth=N``) has its
            own, so pass the instance where there is one. For an instance the ``default_feature_layer``
            attribute is read (automix's ViTs: the middle block of their depth, ``blocks.{depth // 2 - 1}``);
            failing that, a timm ``feature_info`` picks the second-to-last stage (the middle block for ViTs)
            and a torchvision-style ResNet (children ``layer3``, ``layer4``, ``fc``) gives ``"layer3"``.

    Raises:
        ValueError: No default is known; pass ``feature_layer=`` explicitly instead.

    Example:
        >>> default_feature_layer("preact_resnet18"), default_feature_layer("wrn28_8")
        ('layer3', 'layer2')
    """
    if isinstance(name_or_model, str):
        name = name_or_model
        if name.startswith("torchvision:"):
            arch = name.split(":", 1)[1]
            if arch.startswith(("resnet", "resnext", "wide_resnet")):
                return "layer3"
        elif name in _REGISTRY:
            return _REGISTRY[name].feature_layer
        elif not name.startswith("timm:"):
            raise _unknown_name(name)
        raise ValueError(f"no default feature layer known for name {name!r}; build the model and pass the "
                         "instance to default_feature_layer(), or pass feature_layer= explicitly")
    if not isinstance(name_or_model, nn.Module):
        raise TypeError(f"name_or_model must be a str or nn.Module, got {type(name_or_model).__name__}")
    model = name_or_model
    layer = getattr(model, "default_feature_layer", None)
    if isinstance(layer, str):
        return layer
    info = getattr(model, "feature_info", None)
    if info is not None:
        guess = _guess_from_feature_info(info)
        if guess is not None:
            return guess
    children = dict(model.named_children())
    if {"layer3", "layer4", "fc"} <= children.keys():
        return "layer3"
    raise ValueError(f"no default feature layer known for model {type(model).__name__}; pass feature_layer= "
                     f"explicitly (top-level modules: {', '.join(list(children)[:10])})")
