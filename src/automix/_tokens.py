"""Where transformer tokens lie on an image: shared by the models (feature maps from tokens) and the mixers
(TransMix's attention over patches). Imports only the standard library."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Prefix tokens tried, in this order, when the model does not say how many it has: a class token (ViT, DeiT),
# none (tokens of a model without one), a class and a distillation token (distilled DeiT).
GUESSED_PREFIXES = (1, 0, 2)


def token_grid(num_tokens: int, size: tuple[int, int], num_prefix_tokens: int | Sequence[int] | None = None, *,
               name: str = "feature_layer") -> tuple[int, int, int]:
    """How ``num_tokens`` transformer tokens of an image of ``size`` (H, W) lie on the patch grid.

    Returns ``(prefix, h, w)``: the first ``prefix`` tokens are not patches (class / distillation tokens), the
    other ``h * w`` are the patches in row-major order, with ``H / h == W / w`` an integer patch side.

    Args:
        num_tokens: tokens per sample (``N`` of ``[B, N, C]``).
        size: the image's (H, W) in pixels.
        num_prefix_tokens: how many leading tokens are not patches (timm and automix's ViTs say it in
            ``model.num_prefix_tokens``; a layer before the prefix tokens join, such as ``patch_embed``, has
            none, so 0 is tried after it), or the counts to try in turn; ``None`` tries 1, 0 and 2.
        name: the user's argument that gave the tokens, for the error.

    Raises:
        ValueError: no such grid (the tokens do not tile the image with square patches): names ``name``,
            ``num_tokens`` and ``size``.

    >>> token_grid(65, (32, 32))  # a class token and 8 x 8 patches of 4 px
    (1, 8, 8)
    >>> token_grid(197, (224, 224), 1)
    (1, 14, 14)
    >>> token_grid(64, (32, 32), 1)  # patch_embed's output: no class token yet
    (0, 8, 8)
    """
    height, width = int(size[0]), int(size[1])
    if num_prefix_tokens is None:
        tries = GUESSED_PREFIXES
    elif isinstance(num_prefix_tokens, int):
        # The model's count holds for its blocks; a layer before the class token joins (timm's and automix's
        # patch_embed) has none, so a grid without prefix tokens is the layer's own.
        tries = (num_prefix_tokens, 0) if num_prefix_tokens else (0,)
    else:
        tries = tuple(num_prefix_tokens)
    for prefix in tries:
        patches = num_tokens - prefix
        if patches <= 0 or (height * width) % patches:
            continue
        side = math.isqrt(height * width // patches)
        if side * side * patches == height * width and height % side == 0 and width % side == 0:
            return prefix, height // side, width // side
    left = " or ".join(f"{num_tokens - p} after dropping {p} prefix token(s)" if p else f"{num_tokens} with none"
                       for p in tries)
    raise ValueError(f"{name} gives {num_tokens} tokens, which do not tile the {height}x{width} image with square "
                     f"patches ({left}; a [B, N, C] feature layer must hold class/distillation tokens and then "
                     f"the h x w patch tokens); pick a transformer block's output")
