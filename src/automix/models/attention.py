"""Attention maps of a transformer's blocks, read from the forward pass that runs anyway.

A vision transformer computes its attention with a fused kernel (``F.scaled_dot_product_attention``) that
never materialises the probabilities. Methods that re-weight labels by attention (TransMix, arXiv:2111.09833)
need them for one block, and only on the steps that use them. :class:`AttentionTap` asks the chosen attention
module, for as long as the tap is open, to compute its probabilities explicitly and records them with a forward
hook: the same pass gives logits and attention, no second pass, and a model with no tap open runs the fused
kernel at no extra cost.

Two kinds of attention module can give their maps:

* automix's own (``automix.models.vit.Attention``): ``keep_attention`` switches the explicit path on, and its
  ``probe`` submodule (an identity) sees the probabilities ``[B, heads, N, N]``;
* timm-style modules (timm's ``Attention`` in ``timm/models/vision_transformer.py``): a ``fused_attn`` flag and
  an ``attn_drop`` submodule that receives the probabilities on the explicit path (the tap reads its input,
  before dropout).

Example:
    >>> import torch
    >>> from automix.models import create_model
    >>> model = create_model("vit_tiny", num_classes=10, depth=2)
    >>> with AttentionTap(model) as tap:  # the last block's attention
    ...     logits = model(torch.randn(2, 3, 32, 32))
    ...     attn = tap.pop()
    >>> tuple(attn.shape)  # [B, heads, 1 + 8 * 8 tokens, 1 + 8 * 8 tokens]
    (2, 3, 65, 65)
    >>> bool(torch.allclose(attn.sum(-1), torch.ones(2, 3, 65)))
    True
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import Tensor, nn

from .features import resolve_module

__all__ = ["AttentionTap", "attention_layers", "every_attention", "find_attention", "gives_attention"]


def gives_attention(module: nn.Module) -> bool:
    """Whether ``module`` is an attention module whose probabilities ``AttentionTap`` can record."""
    if hasattr(module, "keep_attention") and isinstance(getattr(module, "probe", None), nn.Module):
        return True
    return hasattr(module, "fused_attn") and isinstance(getattr(module, "attn_drop", None), nn.Module)


def attention_layers(model: nn.Module) -> list[str]:
    """Module paths of every attention module of ``model`` that can give its map, in forward order."""
    return [name for name, m in model.named_modules() if name and gives_attention(m)]


def every_attention(model: nn.Module, *, option: str = "model") -> list[str]:
    """Module paths of every attention module of ``model`` that can give its map, in registration order (the
    forward order of a ViT's ``blocks``): what a method tracing labels through all blocks (TL-Align) reads.

    Raises:
        ValueError: the model has none (a CNN); the message names ``option`` and the model.
    """
    names = attention_layers(model)
    if not names:
        raise ValueError(_no_attention(model, option))
    return names


def _no_attention(model: nn.Module, option: str = "model") -> str:
    return (f"{option}: {type(model).__name__} has no attention module that can give its attention map (a ViT "
            f"block's attention: automix's vit_tiny / vit_small, or timm's VisionTransformer); attention needs a "
            f"vision transformer")


def find_attention(model: nn.Module, layer: str | None = None, *, option: str = "layer") -> tuple[str, nn.Module]:
    """The attention module at ``layer`` (its path and the module).

    Args:
        model: the network.
        layer: module path of an attention module, or of a block holding exactly one (``"blocks.11"`` means
            ``"blocks.11.attn"``); ``None``: the model's last attention module (the last block's, TransMix's).
        option: the user's name for ``layer`` in error messages.

    Raises:
        ValueError: ``layer`` names no module, or neither it nor its children give attention maps (a CNN, or
            a transformer whose attention modules are of another kind), or it holds several; the message names
            ``option``, the value and the model. With ``layer=None``, a model without attention modules (naming
            ``model``: no layer was given).
    """
    if layer is None:
        names = attention_layers(model)
        if not names:  # no layer was given: the model is what lacks attention, so the error names it
            raise ValueError(_no_attention(model))
        return names[-1], model.get_submodule(names[-1])
    module = resolve_module(model, layer, option)
    if gives_attention(module):
        return layer, module
    inner = [name for name, m in module.named_modules() if name and gives_attention(m)]
    if len(inner) == 1:
        return f"{layer}.{inner[0]}", module.get_submodule(inner[0])
    if not inner:
        raise ValueError(f"{option} {layer!r} of {type(model).__name__} ({type(module).__name__}) holds no attention "
                         f"module that can give its attention map; attention layers of this model: "
                         f"{attention_layers(model)[:4] or 'none (not a transformer)'}")
    raise ValueError(f"{option} {layer!r} holds {len(inner)} attention modules ({inner[:3]}); name one of them")


class AttentionTap:
    """Record the attention probabilities of one attention module on every forward pass while open.

    Opening the tap switches that module to explicit attention (automix's ``keep_attention``, timm's
    ``fused_attn = False``); closing it (``remove``, or leaving the ``with`` block) restores the flag, so the
    model is back on the fused kernel. Only this module changes path: the others keep the fused kernel.

    The most recent probabilities are kept until :meth:`pop`: float ``[B, heads, N, N]`` (float32 for automix's
    ViTs, whose explicit softmax runs in float32; the module's dtype for timm's), rows summing to 1, before
    attention dropout, detached. As ``FeatureTap``, the hook checks the module's identity, so a deep copy of
    the model (an EMA encoder) is not recorded.

    Args:
        model: the network.
        layer: see :func:`find_attention` (``None``: the last attention module).
        option: the user's name for ``layer`` in error messages.

    Raises:
        ValueError: no attention module can be found at ``layer`` (:func:`find_attention`).
    """

    def __init__(self, model: nn.Module, layer: str | None = None, *, option: str = "layer") -> None:
        self.layer, self.module = find_attention(model, layer, option=option)
        self._probs: Tensor | None = None
        tap_ref = weakref.ref(self)

        def record(module: nn.Module, probs: Any) -> None:
            tap = tap_ref()
            if tap is not None and module is tap._hooked:
                tap._probs = probs.detach()

        if hasattr(self.module, "keep_attention"):
            self._flag, self._on = "keep_attention", True
            self._hooked = self.module.probe
            self._handle = self._hooked.register_forward_hook(lambda m, args, out: record(m, out))
        else:  # timm: the probabilities are the input of attn_drop on the explicit path
            self._flag, self._on = "fused_attn", False
            self._hooked = self.module.attn_drop
            self._handle = self._hooked.register_forward_pre_hook(lambda m, args: record(m, args[0]))
        self._before = getattr(self.module, self._flag)
        setattr(self.module, self._flag, self._on)

    def pop(self) -> Tensor:
        """The recorded probabilities, cleared.

        Raises:
            RuntimeError: no forward pass reached the module since the last ``pop``.
        """
        if self._probs is None:
            raise RuntimeError(f"no attention recorded at {self.layer!r}: run a forward pass of the tapped model "
                               f"(not a copy of it) inside the tap before pop()")
        probs, self._probs = self._probs, None
        return probs

    def remove(self) -> None:
        """Unhook and give the module its fused path back. Safe to call more than once."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            setattr(self.module, self._flag, self._before)

    def __enter__(self) -> AttentionTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
