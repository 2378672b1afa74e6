"""Pieces shared by the vision-transformer mixers (SMMix, MixPro, TL-Align): the patch grid of an image, the checks
of an attention map handed in as context, and each token's share of partner pixels. Imports only torch."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._tokens import token_grid
from .base import MixParams, partner_weight


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
