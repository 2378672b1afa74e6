"""Context: what a model-aware mixer needs from the model, as small functions of ``(model, x, y)``.

The mixers stay pure tensor functions *given* a context (``BaseMixer.needs`` names the one a mixer reads,
``BaseMixer.context_options()`` gives its keyword arguments); how to get it from a model lives here, so one
generic method (``MixerMethod``) serves every model-aware mixer. Each function works with any backbone:
layers are module paths resolved with forward hooks (``automix.models.FeatureTap``).

* ``input_saliency``: |d loss / d x| per pixel (PuzzleMix arXiv:2009.06962, GuidedMixup arXiv:2306.16612);
* ``class_activation_map``: CAM of the label class at a layer (SnapMix arXiv:2012.04846);
* ``features``: the output of a layer (AttentiveMix arXiv:2003.13048, AlignMix arXiv:2103.15375,
  ManifoldMix arXiv:1806.05236);
* ``attention``: the attention probabilities of a transformer block (TransMix arXiv:2111.09833), from the
  clean batch's pass or, with ``capture_context``, from the mixed batch's own forward pass; only the chosen
  block computes them (``automix.models.AttentionTap``), the rest of the model keeps its fused kernel.
* ``attention_maps``: the attention probabilities of every block, in forward order (TL-Align
  arXiv:2210.06455 traces labels through all of them), from the clean batch or the mixed batch's own pass.

``register_context(name)`` adds one; ``get_context(name)`` returns it. A context function runs the model on
the clean batch: ``input_saliency`` and ``class_activation_map`` in eval mode (BN statistics untouched, as the
papers and OpenMixup's SnapMix features), the others in the model's mode (in train mode they update BN
statistics as a forward pass does); none of them leaves gradients on the model's parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import AttentionTap, FeatureTap, every_attention
from .models.features import resolve_module

_CONTEXTS: dict[str, Callable[..., Any]] = {}


def register_context(name: str) -> Callable:
    """Decorator registering ``fn(model, x, y, **options) -> Tensor`` as context ``name``.

    Raises:
        ValueError: ``name`` is taken.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _CONTEXTS:
            raise ValueError(f"a context named {name!r} is already registered")
        _CONTEXTS[name] = fn
        return fn

    return wrap


def get_context(name: str) -> Callable[..., Any]:
    """The context function registered as ``name``.

    Raises:
        ValueError: no context is called ``name``.
    """
    if not isinstance(name, str) or name not in _CONTEXTS:
        raise ValueError(f"context must be one of {sorted(_CONTEXTS)}, got {name!r}")
    return _CONTEXTS[name]


def list_contexts() -> list[str]:
    """Names of every registered context, sorted."""
    return sorted(_CONTEXTS)


@register_context("saliency")
def input_saliency(model: nn.Module, x: Tensor, y: Tensor, *, reduce: str = "abs_max", eval_mode: bool = True
                   ) -> Tensor:
    """Input-gradient saliency: float32 [B, H, W] (``"abs_max"``: max over channels of |d CE / d x|; ``"l2"``:
    its L2 norm over channels), the map PuzzleMix (arXiv:2009.06962) and GuidedMixup derive their masks from.

    Args:
        model: a classifier giving logits [B, K].
        x: float batch [B, C, H, W].
        y: class ids [B] or float targets [B, K] (soft-target CE).
        reduce: how the channels' gradients become one map.
        eval_mode: run the pass in eval mode (as the reference, ``Westlake-AI/openmixup``
            ``openmixup/models/classifiers/mixup_classification.py`` ``_features`` at ``0cf6794``): BN uses and
            keeps its running statistics, dropout is off; every module's mode is restored afterwards.

    Raises:
        ValueError: ``reduce`` is not ``"abs_max"`` or ``"l2"``.

    The gradient is taken with respect to the input only (``torch.autograd.grad``): parameters get no
    ``.grad``. It runs even under ``torch.no_grad()``.
    """
    if reduce not in ("abs_max", "l2"):
        raise ValueError(f"reduce must be 'abs_max' or 'l2', got {reduce!r}")
    modes = [(m, m.training) for m in model.modules()] if eval_mode else []
    if eval_mode:
        model.eval()
    try:
        with torch.enable_grad():
            inp = x.detach().requires_grad_(True)
            logits = model(inp)
            if not isinstance(logits, Tensor):
                raise TypeError(f"logits must be a torch.Tensor [B, K] (the model's output), got "
                                f"{type(logits).__name__}; wrap a model that returns a tuple")
            logits = logits.float()
            loss = F.cross_entropy(logits, y) if not y.is_floating_point() else \
                -(y * logits.log_softmax(1)).sum(1).mean()
            (grad,) = torch.autograd.grad(loss, inp)
    finally:
        for module, training in modes:
            module.training = training
    grad = grad.float()
    return grad.abs().amax(1) if reduce == "abs_max" else grad.pow(2).sum(1).sqrt()


@register_context("features")
@torch.no_grad()
def features(model: nn.Module, x: Tensor, y: Tensor | None = None, *, layer: str | None) -> Tensor:
    """The output of ``model.<layer>`` on ``x`` (detached; [B, C, h, w] for a CNN stage, [B, N, C] for tokens);
    ``layer=None``: the feature map the model global-average-pools (the input of its last
    ``nn.AdaptiveAvgPool2d``).

    Raises:
        ValueError: ``layer`` is not a module path of ``model`` (``automix.models.FeatureTap``), or is None and
            the model has no ``nn.AdaptiveAvgPool2d``.
    """
    if layer is not None:
        with FeatureTap(model, layer, detach=True) as tap:
            model(x)
            return tap.pop()
    seen: dict[str, Tensor] = {}
    handle, _ = _grab(model, None, seen)
    try:
        model(x)
    finally:
        handle.remove()
    return seen["f"].detach()


def _grab(model: nn.Module, layer: str | None, seen: dict[str, Tensor], option: str = "layer") -> tuple[Any, str]:
    """Hook recording into ``seen["f"]`` the first output of ``layer``, or with ``layer=None`` the first input of
    the model's last ``nn.AdaptiveAvgPool2d``; returns the handle and a description of the place (``option``: the
    user's name for ``layer``, in errors)."""
    if layer is None:
        pool = _last(model, nn.AdaptiveAvgPool2d)
        if pool is None:
            raise ValueError(f"{option}: {type(model).__name__} has no nn.AdaptiveAvgPool2d to find the pooled "
                             f"feature map; give {option}= (the module whose output is pooled)")
        # Hooks that return None: a returned value would replace the module's input or output.
        handle = resolve_module(model, pool, option).register_forward_pre_hook(
            lambda m, args: None if "f" in seen else seen.update(f=args[0]))
        return handle, f"the input of {pool!r}"
    handle = resolve_module(model, layer, option).register_forward_hook(
        lambda m, args, out: None if "f" in seen else seen.update(f=out))
    return handle, repr(layer)


def cam_head(model: nn.Module, layer: str | None = None, head: str | None = None, *,
             options: tuple[str, str] = ("layer", "head")) -> tuple[str, nn.Linear]:
    """What ``class_activation_map`` would read of ``model``, found without a forward pass (so a method can refuse
    a model when it is built): the path and module of the linear classifier, after checking that ``layer`` (or,
    when None, an ``nn.AdaptiveAvgPool2d`` to find it) exists.

    Args:
        model, layer, head: as ``class_activation_map``.
        options: the user's names for ``layer`` and ``head``, for the errors (``("teacher_layer",
            "teacher_head")`` for TokenMix's teacher).

    Raises:
        ValueError: ``layer`` or ``head`` names no module of ``model``, or is None and nothing can be inferred.
        TypeError: ``head`` is not an ``nn.Linear``.
    """
    layer_option, head_option = options
    head = head if head is not None else _last(model, nn.Linear)
    if head is None:
        raise ValueError(f"{head_option}: {type(model).__name__} has no nn.Linear classifier; a CAM needs one")
    linear = resolve_module(model, head, head_option)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{head_option} must name an nn.Linear of the model, got {type(linear).__name__} at "
                        f"{head!r}")
    _grab(model, layer, {}, layer_option)[0].remove()
    return head, linear


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block (BN uses and keeps its running statistics), then give every
    module back the mode it had."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _last(model: nn.Module, kind: type) -> str | None:
    names = [n for n, m in model.named_modules() if isinstance(m, kind)]
    return names[-1] if names else None


@register_context("cam")
@torch.no_grad()
def class_activation_map(model: nn.Module, x: Tensor, y: Tensor, *, layer: str | None = None,
                         head: str | None = None, options: tuple[str, str] = ("layer", "head")) -> Tensor:
    """Class activation maps of the label class: float32 [B, h, w], ``sum_c W[y, c] * F[:, c]`` over the
    feature map ``F`` that the model global-average-pools into its linear classifier ``W`` [K, C] (SnapMix,
    arXiv:2012.04846). Float targets [B, K] use their arg-max class.

    Args:
        model: a classifier ending in global average pooling and an ``nn.Linear`` (any module names).
        x: float batch [B, C, H, W]; y: class ids [B] or float targets [B, K].
        layer: module path whose output is ``F`` [B, C, h, w]; None: the input of the model's last
            ``nn.AdaptiveAvgPool2d``.
        head: module path of the linear classifier; None: the model's last ``nn.Linear``.
        options: the user's names for ``layer`` and ``head`` in the errors (a teacher's: ``("teacher_layer",
            "teacher_head")``).

    The pass runs in eval mode under ``no_grad`` (``eval_mode``): it moves no BN statistics and leaves no
    gradients; each module's mode is restored. It checks that ``head``'s input is the global average of
    ``F`` and its output the model's logits, so a head of another shape (attention pooling, an MLP) is refused
    instead of giving wrong maps.

    Raises:
        ValueError: ``layer`` or ``head`` is not a module path of ``model``, or None and nothing to infer.
        TypeError: ``head`` is not an ``nn.Linear``, ``F`` is not [B, C, h, w] with C its in_features, or
            ``head``'s input is not the global average of ``F`` or its output not the logits (named).
    """
    layer_option, head_option = options
    head, linear = cam_head(model, layer, head, options=options)
    seen: dict[str, Tensor] = {}
    grab, where = _grab(model, layer, seen, layer_option)

    def head_hook(module: nn.Module, args: Any, out: Any) -> None:
        seen.setdefault("v", args[0])
        seen.setdefault("z", out)

    grab_head = linear.register_forward_hook(head_hook)
    try:
        with eval_mode(model):
            logits = model(x)
    finally:
        grab.remove()
        grab_head.remove()
    feats, pooled = seen.get("f"), seen.get("v")
    if not isinstance(feats, Tensor) or feats.ndim != 4 or feats.shape[1] != linear.in_features:
        raise TypeError(f"{layer_option} {where} gives shape {tuple(getattr(feats, 'shape', ()))}; "
                        f"a CAM for {head_option} {head!r} needs [B, {linear.in_features}, h, w]")
    # The pooled input is compared at the precision the model ran in (bf16 rounds to about 4e-3).
    tol = max(1e-3, 4 * torch.finfo(feats.dtype).eps) if feats.is_floating_point() else 1e-3
    feats = feats.float()
    if pooled is None or pooled.shape != (feats.shape[0], feats.shape[1]) or not torch.allclose(
            pooled.float(), feats.mean((2, 3)), rtol=tol, atol=tol * 0.1):
        raise TypeError(f"{head_option} {head!r} is not a linear layer applied to the global average pool of "
                        f"{where}: a CAM needs logits = Linear(mean over h, w of the feature map); give "
                        f"{layer_option}= and {head_option}= of such a pair")
    if seen.get("z") is not logits:
        raise TypeError(f"{head_option} {head!r} does not give the model's logits (its output is not what the "
                        f"model returns); a CAM needs the last linear layer as {head_option}=")
    cls = y.argmax(1) if y.is_floating_point() else y.long()
    weight = linear.weight.float()[cls]  # [B, C]
    return torch.einsum("bc,bchw->bhw", weight, feats)


@register_context("attention")
@torch.no_grad()
def attention(model: nn.Module, x: Tensor, y: Tensor | None = None, *, layer: str | None = None) -> Tensor:
    """The attention probabilities of one attention module on ``x``: float32 ``[B, heads, N, N]`` (rows sum to 1;
    for automix's ViTs ``N = 1 + h * w``, the class token first), before attention dropout, detached.

    ``layer`` is the attention module or a block holding one (``"blocks.11"``), ``None`` the model's last one
    (``automix.models.attention.find_attention``). Only that module leaves the fused kernel, for this pass only
    (``automix.models.AttentionTap``). The pass runs in the model's mode.

    Raises:
        ValueError: the model has no attention module that can give its map at ``layer`` (a CNN, say); the
            message names ``layer`` and the model.
    """
    with AttentionTap(model, layer) as tap:
        model(x)
        return tap.pop().float()


@register_context("attention_maps")
@torch.no_grad()
def attention_maps(model: nn.Module, x: Tensor, y: Tensor | None = None) -> list[Tensor]:
    """The attention probabilities of every attention module of ``model`` on ``x``, in forward order: a list of
    float32 ``[B, heads, N, N]`` (rows sum to 1, before attention dropout, detached), one per block.

    Every block leaves the fused kernel for this pass (``AttentionTap`` on each). The pass runs in the model's mode.

    Raises:
        ValueError: the model has no attention module that can give its map (``every_attention``: names
            ``model``).
    """
    taps = [AttentionTap(model, name) for name in every_attention(model)]
    try:
        model(x)
        return [tap.pop().float() for tap in taps]
    finally:
        for tap in taps:
            tap.remove()


class Seen:
    """What ``capture_context`` read during a forward pass: ``value`` (None until the pass ran)."""

    value: Tensor | None = None


@contextmanager
def capture_context(name: str, model: nn.Module, **options: Any) -> Iterator[Seen]:
    """Read context ``name`` during the forward passes run inside the block, e.g. the mixed batch's own forward
    pass, so no second pass is needed: ``"features"`` (the output at ``options["layer"]``), ``"attention"``
    (the probabilities of the attention module at ``options.get("layer")``, the last one when None, computed
    explicitly for this block only: ``automix.models.AttentionTap``) or ``"attention_maps"`` (the list of every
    attention module's probabilities, in forward order; every block computes them explicitly).

    Raises:
        ValueError: the context cannot be read from a forward pass (only layer outputs and attention can), no
            ``layer`` for ``"features"``, no attention module at ``layer`` for ``"attention"``, or none at all
            for ``"attention_maps"`` (naming ``model``).
    """
    readable = ("features", "attention", "attention_maps")
    if name not in readable or (name == "features" and "layer" not in options) or (
            name == "attention_maps" and options):
        raise ValueError(f"capture_context reads a layer's output ('features' with layer=...), an attention map "
                         f"('attention') or every block's ('attention_maps', no options), got {name!r} with options "
                         f"{sorted(options)}")
    seen = Seen()
    if name == "attention_maps":
        taps = [AttentionTap(model, layer) for layer in every_attention(model)]
    elif name == "attention":
        taps = [AttentionTap(model, options.get("layer"))]
    else:
        taps = [FeatureTap(model, options["layer"], detach=True)]
    try:
        yield seen
        values = [tap.pop() for tap in taps]
        seen.value = values if name == "attention_maps" else values[0]
    finally:
        for tap in taps:
            tap.remove()


__all__ = ["attention", "attention_maps", "cam_head", "capture_context", "class_activation_map", "eval_mode",
           "features", "get_context", "input_saliency", "list_contexts", "register_context"]
