"""Intermediate features from any backbone by module path, captured with a forward hook.

Learned mixing methods (AutoMix, SAMix, PuzzleMix, ...) need both the logits and a hidden
feature map (the Mix Block's input). :class:`FeatureTap` records the output of one named module
during the model's normal forward pass, so one pass gives both; no second pass, no change to the
model's code. Paths are ``nn.Module.get_submodule`` paths: ``"layer3"`` (these CIFAR networks,
torchvision and timm ResNets), ``"stages.2"`` (timm ConvNeXt), ``"blocks.5"`` (timm ViT/DeiT).

Example:
    >>> import torch
    >>> from automix.models import create_model
    >>> model = create_model("preact_resnet18", num_classes=10, width=16)
    >>> with FeatureTap(model, "layer3") as tap:
    ...     logits = model(torch.randn(2, 3, 32, 32))
    ...     feats = tap.pop()
    >>> tuple(logits.shape), tuple(feats.shape)
    ((2, 10), (2, 64, 8, 8))
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import Tensor, nn

from .._tokens import token_grid

__all__ = ["FeatureTap", "forward_replacing", "forward_with_features", "resolve_module", "token_grid",
           "tokens_to_map"]


def resolve_module(model: nn.Module, feature_layer: str, option: str = "feature_layer") -> nn.Module:
    """Return ``model.get_submodule(feature_layer)`` with a helpful error.

    ``option`` is the name of the user's argument that gave the path (``"layer"``, ``"head"``, ...): the
    errors name it.

    Raises:
        TypeError: ``feature_layer`` is not a string.
        ValueError: The path is empty or names no submodule; the message lists the modules that do exist
            where the path stops resolving (the model's top-level children, a numbered container such as a
            ViT's ``blocks`` as the range of its entries: ``blocks.0-blocks.1``; or the children of the deepest
            part of the path that exists: ``blocks has blocks.0-blocks.1``).
    """
    if not isinstance(feature_layer, str):
        raise TypeError(f"{option} must be a module path string such as 'layer3', got "
                        f"{feature_layer!r} ({type(feature_layer).__name__})")
    try:
        if not feature_layer:
            raise AttributeError
        return model.get_submodule(feature_layer)
    except AttributeError:
        parts = feature_layer.split(".")
        owner, prefix = model, ""
        for part in parts[:-1]:  # the deepest part of the path that exists
            child = getattr(owner, "_modules", {}).get(part)
            if child is None:
                break
            owner, prefix = child, f"{prefix}{part}."
        where = (f"{prefix[:-1]} has" if prefix else "top-level modules are:")
        raise ValueError(f"{option} {feature_layer!r} is not a submodule of {type(model).__name__}; {where} "
                         f"{_children(owner, prefix)}") from None


def _children(module: nn.Module, prefix: str) -> str:
    """The child paths of ``module`` for an error: numbered children (a ViT's ``blocks``) as one range
    (``blocks.0-blocks.11``), a numbered container among named ones with its range in brackets."""
    names = list(module._modules)
    if not names:
        return "(none)"
    if all(n.isdigit() for n in names):
        return f"{prefix}{names[0]}-{prefix}{names[-1]}" if len(names) > 1 else f"{prefix}{names[0]}"
    shown = []
    for name in names[:12]:
        child = module._modules[name]
        numbered = list(child._modules) if child is not None else []
        if len(numbered) > 1 and all(n.isdigit() for n in numbered):
            shown.append(f"{prefix}{name} ({prefix}{name}.{numbered[0]}-{prefix}{name}.{numbered[-1]})")
        else:
            shown.append(f"{prefix}{name}")
    return ", ".join(shown) + (", ..." if len(names) > 12 else "")


def _first_tensor(output: Any, feature_layer: str) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"feature_layer {feature_layer!r} returned {type(output).__name__}, "
                    "which holds no tensor to record")


class FeatureTap:
    """Record the output of ``model.<feature_layer>`` on every forward pass.

    The most recent output is kept (a later forward overwrites an earlier one) until
    :meth:`pop` returns and clears it, so stale features are never handed out twice. Use it as a
    context manager (the hook is removed on exit; features already stored can still be popped)
    or keep it for the whole run and call :meth:`remove` at the end.

    Outputs are stored as produced: the graph is kept (pass ``detach=True`` to drop it), a tuple
    or list output is reduced to its first tensor, and transformer token outputs stay
    ``[B, N, C]`` (reshaping tokens to a ``[B, C, H, W]`` grid is the caller's job).

    Copies: ``copy.deepcopy(model)`` copies the hook dictionary, but the hook function checks
    that the module it runs on is the tapped module itself, so a copied model (for example an EMA
    encoder) never writes into this tap; create a separate tap on the copy. For the same reason
    ``nn.DataParallel`` replicas are not recorded (use DistributedDataParallel). The hook holds
    only a weak reference to the tap: a tap that is dropped without :meth:`remove` leaves a
    no-op hook behind. Call :meth:`remove` before pickling a whole model with ``torch.save``.

    Args:
        model: The network; ``feature_layer`` is resolved relative to it.
        feature_layer: Module path, e.g. ``"layer3"``, ``"stages.2"``, ``"blocks.5"``.
        detach: Store ``output.detach()`` instead of the output.
    """

    def __init__(self, model: nn.Module, feature_layer: str, *, detach: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.feature_layer = feature_layer
        self.module = resolve_module(model, feature_layer)
        self.detach = bool(detach)
        self._features: Tensor | None = None
        tap_ref = weakref.ref(self)

        # A plain closure (not a bound method): deepcopy treats functions as atomic, so the copy
        # of a model shares this function and the identity check below filters the copy out.
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            tap = tap_ref()
            if tap is not None and module is tap.module:
                tap._record(output)

        self._handle: Any = self.module.register_forward_hook(hook)

    def _record(self, output: Any) -> None:
        feats = _first_tensor(output, self.feature_layer)
        self._features = feats.detach() if self.detach else feats

    @property
    def active(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    @property
    def features(self) -> Tensor:
        """The stored features, without clearing them (see :meth:`pop`)."""
        if self._features is None:
            raise RuntimeError(self._empty_message())
        return self._features

    def pop(self) -> Tensor:
        """Return the stored features and clear them.

        Raises:
            RuntimeError: No forward pass reached the module since the last ``pop``/``clear``.
        """
        feats = self.features
        self._features = None
        return feats

    def clear(self) -> None:
        """Drop any stored features (and the graph they hold)."""
        self._features = None

    def remove(self) -> None:
        """Unregister the hook. Safe to call more than once."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _empty_message(self) -> str:
        state = "" if self.active else " (the tap has been removed)"
        return (f"no features stored for feature_layer {self.feature_layer!r}{state}: run a forward "
                "pass of the tapped model (not a copy of it) before pop(); each pop() clears them")

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (f"FeatureTap(feature_layer={self.feature_layer!r}, active={self.active}, "
                f"stored={self._features is not None})")


def forward_with_features(model: nn.Module, x: Tensor, tap: FeatureTap) -> tuple[Tensor, Tensor]:
    """One forward pass returning ``(model(x), features at tap.feature_layer)``.

    Any features left in ``tap`` from an earlier pass are discarded first, so the returned
    features always belong to this ``x``.

    Raises:
        RuntimeError: The pass did not reach the tapped module (e.g. the tap belongs to another
            model or has been removed).
    """
    tap.clear()
    logits = model(x)
    return logits, tap.pop()


def eager_call(model: nn.Module, x: Any) -> Any:
    """``model(x)``, run eagerly when ``model.compile()`` compiled it in place.

    Why: a compiled network replays the graph it traced, and a hook registered after that trace (the
    one-shot hooks of ``forward_replacing``) is neither guarded on nor called: ManifoldMix and AlignMix failed
    with "module 'layer2' did not run" under ``automix train --compile``. Their mixing passes run eagerly
    (no speed-up from compiling on those passes, the same values); every other pass of the network stays
    compiled.
    """
    if getattr(model, "_compiled_call_impl", None) is not None:
        return model._call_impl(x)
    return model(x)


def forward_replacing(model: nn.Module, layer: str, x: Any, replace: Any, *, option: str = "layer") -> Any:
    """``model(x)`` with the first output of module ``layer`` replaced by ``replace(output)``.

    One-shot: a module called twice in one pass is replaced once (the hook is removed after the call, also on
    error). Used by the methods that mix hidden tensors (ManifoldMix, AlignMix). A network compiled in place
    (``model.compile()``) runs this pass eagerly (``eager_call``).

    Raises:
        ValueError: ``layer`` is not a module of ``model`` or did not run in its forward pass (``option``
            names the user's argument in the message).
    """
    done: list[bool] = []

    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if done:
            return None
        out = replace(output)
        done.append(True)
        return out

    handle = resolve_module(model, layer, option).register_forward_hook(hook)
    try:
        logits = eager_call(model, x)
    finally:
        handle.remove()
    if not done:
        raise ValueError(f"{option}: module {layer!r} did not run in the model's forward pass")
    return logits


def tokens_to_map(tokens: Tensor, size: tuple[int, int], num_prefix_tokens: int | None = None, *,
                  name: str = "feature_layer") -> Tensor:
    """Transformer tokens ``[B, N, C]`` as a feature map ``[B, C, h, w]`` on their patch grid, prefix tokens
    (the class token) dropped (``token_grid``); a ``[B, C, h, w]`` map is returned as it is.

    Raises:
        ValueError: ``tokens`` is neither 3-D nor 4-D, or its tokens do not tile an image of ``size``
            (``token_grid``; the message names ``name``).

    >>> import torch
    >>> tokens_to_map(torch.randn(2, 65, 192), (32, 32)).shape
    torch.Size([2, 192, 8, 8])
    """
    if tokens.ndim == 4:
        return tokens
    if tokens.ndim != 3:
        raise ValueError(f"{name} gives shape {tuple(tokens.shape)}; a feature layer must give a map [B, C, h, w] "
                         f"or tokens [B, N, C]")
    prefix, h, w = token_grid(tokens.shape[1], size, num_prefix_tokens, name=name)
    return tokens[:, prefix:].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)
