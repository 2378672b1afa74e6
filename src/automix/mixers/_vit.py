"""Pieces shared by the vision-transformer mixers (TransMix, SMMix, MixPro, TL-Align): the patch grid of an image, the
checks of an attention map handed in as context, each token's share of partner pixels, and the base of the mixers
that draw with an inner mixer and re-weight the labels from attention. Imports only torch."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_type
from .._tokens import token_grid
from .base import BaseMixer, MixParams, partner_weight


def patch_grid(size: tuple[int, ...], patch_size: int) -> tuple[int, int]:
    """The token grid (h, w) of an image of ``size`` (..., H, W) cut into ``patch_size`` patches.

    Raises:
        ValueError: H or W is not a multiple of ``patch_size`` (naming ``x``, the batch, and its size).
    """
    height, width = int(size[-2]), int(size[-1])
    if height % patch_size or width % patch_size:
        raise ValueError(f"x must have height and width multiples of patch_size={patch_size}, got "
                         f"{(height, width)}")
    return height // patch_size, width // patch_size


def check_attention(context: Any, batch: int, size: tuple[int, ...], *, name: str = "context"
                    ) -> tuple[Tensor, int, int, int]:
    """``context`` as float32 attention probabilities ``[B, heads, N, N]`` (a ``[B, N, N]`` map gets one head)
    for a batch of ``batch`` images of ``size`` (H, W), with how its tokens lie: ``(probs, prefix, h, w)``, the
    first ``prefix`` tokens being class / distillation tokens and the last ``h * w`` the patches.

    Raises:
        ValueError: not such a tensor for this batch, or tokens that do not tile the image (naming ``name``).
    """
    if not isinstance(context, Tensor) or context.ndim not in (3, 4) or context.shape[0] != batch \
            or context.shape[-1] != context.shape[-2]:
        raise ValueError(f"{name} must be attention probabilities [B, heads, N, N] with B={batch}, got "
                         f"{type(context).__name__} {tuple(getattr(context, 'shape', ()))}")
    prefix, h, w = token_grid(context.shape[-1], tuple(size[-2:]), (1, 2), name=name)
    probs = context.float()
    return (probs if probs.ndim == 4 else probs.unsqueeze(1)), prefix, h, w


def partner_share(params: MixParams, size: tuple[int, int], grid: tuple[int, int], device: torch.device) -> Tensor:
    """Each token's share of partner pixels in a draw: float32 ``[n, h * w]`` (the draw's partner weight averaged
    over the token's patch; ``n`` = 1 for a batch-mode box, else B; a mixup draw gives ``1 - lam`` everywhere)."""
    weight = partner_weight(params, tuple(size), device).float()
    if weight.shape[-2:] != tuple(size):  # a mixup draw: [B, 1, 1, 1]
        weight = weight.expand(-1, 1, *size)
    return F.adaptive_avg_pool2d(weight, grid).flatten(1)


class AttentionRelabel(BaseMixer):
    """Base of the mixers whose draw is an inner mixer's (``self.inner``, set by the subclass) and whose own work is
    the label weight, set after the forward pass from the attention map of ``layer`` (TransMix, MixPro).

    ``sample``, ``_apply`` and ``apply_seg`` are the inner mixer's; ``check_input`` runs both mixers' checks;
    ``context_options`` asks for ``layer``'s attention (None: the model's last block). Subclasses call
    ``_set_layer`` and build the inner mixer with ``_shared_options()``, the options both mixers must agree on.
    """

    spatial_dims = (2,)
    reweights = "attention"
    inner: BaseMixer

    def _set_layer(self, layer: str | None) -> None:
        if layer is not None:
            check_type("layer", layer, str, "a module path string or None")
        self.layer = layer

    def _shared_options(self) -> dict[str, Any]:
        """The pairing, label and lam options of this mixer, for its inner mixer."""
        return {"mode": self.mode, "pairing": self.pairing, "num_classes": self.num_classes,
                "label_smoothing": self.label_smoothing, **({"lam": self.lam} if self.lam is not None else {})}

    def context_options(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def check_input(self, x: Any) -> None:
        super().check_input(x)
        self.inner.check_input(x)

    def check_image_size(self, size: tuple[int, int]) -> None:
        self.inner.check_image_size(size)

    def sample(self, x: Tensor, generator: torch.Generator | None = None, *, context: Any = None) -> MixParams:
        """The inner mixer's draw, with its area lam; ``context`` is not read (the subclass's ``reweight`` reads the
        attention of the mixed batch after the forward pass)."""
        self.check_input(x)
        return self.inner.sample(x, self._generator(generator))

    def _apply(self, t: Tensor, params: MixParams) -> Tensor:
        return self.inner._apply(t, params)

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        return self.inner.apply_seg(seg, params, x)
