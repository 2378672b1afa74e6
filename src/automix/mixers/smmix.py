"""SMMix's max-min attention region mixing (Chen et al., "SMMix: Self-Motivated Image Mixing for Vision
Transformers", ICCV 2023, arXiv:2212.12977): the partner's most attended square of tokens is pasted over the
image's least attended one.

With ``a`` each patch token's attention score (from the model under training, on the clean batch), ``s`` a square
side drawn uniformly from the integers in ``[int(side * min_side_ratio), int(side * max_side_ratio)]`` of the
token grid's side (3 to 10 on 14 x 14, 2 to 6 on 8 x 8), sample ``i`` keeps everything but its ``s x s`` square of
least total ``a``, where the ``s x s`` square of most total ``a`` of its partner is pasted (the two squares may lie
in different places: the partner's patches are moved, whole). The label weight is the area:
``lam = 1 - s^2 / (h * w)``. The method (``automix.methods.smmix``) adds the paper's fine-grained token labels and
feature-consistency loss.

Attention scores (``score``): ``"patches"`` (default, the authors' code: the attention each patch token receives
from the patch tokens in the last block, averaged over heads and queries) or ``"cls"`` (OpenMixup's port: the class
token's attention over the patches, averaged over heads).

Reference code read: ChenMnZ/SMMix ``smmix.py`` (``SMMix.smmix``, ``index_translate``) and ``deit.py``
(``VisionTransformer.forward``) at commit 353a944; OpenMixup ``openmixup/models/augments/smmix.py``
(Westlake-AI/openmixup at commit 37e1372, ``side=14, min_side_ratio=0.25, max_side_ratio=0.75``). Differences:
the partner comes from the mixer's ``pairing`` (``"flip"`` is the references' ``x.flip(0)``); squares are found
with a summed-area table (the same sums as the references' ``unfold``, ties to the first position in row-major
order as theirs); the grid is the image's patch grid (any side), not a fixed ``side=14``; ``mode="elem"`` draws a
side per sample (the references draw one per batch, ``mode="batch"``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_positive_int, check_range
from ._sampling import rand_int
from ._vit import check_attention, patch_grid
from .base import BaseMixer, MixParams, Region, blend, mix_seg

SCORES = ("patches", "cls")


class SMMix(BaseMixer):
    """Paste the partner's most attended token square over the sample's least attended one.

    A model-aware mixer (``needs = "attention"``): ``sample`` / ``mixer(x, y, context=attn)`` need the model's
    attention probabilities on the clean batch, ``attn`` float [B, heads, N, N] (class token first, then the
    ``h * w`` patches; ``automix.context.attention``). Draws are ``MixParams`` with ``mask`` the pasted pixels
    (bool [B, 1, H, W]) and ``extra["shift"]`` (long [B, 2], pixels): where, relative to the pasted square, the
    partner's square lies. Mixup draws (``MixParams`` without ``shift``) are blended as mixup, so the method's
    Mixup / SMMix switch replays through this mixer's ``apply``.

    Args:
        patch_size: the ViT's patch side in pixels; images must be multiples of it.
        min_side_ratio, max_side_ratio: the square's side range as fractions of the token grid's side (the smaller
            of h and w), truncated to integers as the references (at least 1 token).
        score: ``"patches"`` (the authors') or ``"cls"`` (OpenMixup's): which attention rates a token.
        prob, mode (``"batch"``: one side for the batch; ``"elem"``: one per sample), pairing, num_classes,
            label_smoothing, generator: see ``BaseMixer``.

    Raises:
        ValueError: a ratio outside (0, 1] or min above max, an unknown ``score``, ``mode="pair"`` (each sample
            pastes its own square), an image not a multiple of ``patch_size`` (naming ``x``), or a ``context`` that
            is not attention probabilities for this batch and grid (naming ``context``).

    Example (x: [B, C, H, W]; a hand-made attention map for a 4 x 4 grid of 8 px patches):
        >>> import torch
        >>> from automix.mixers.smmix import SMMix
        >>> mixer = SMMix(patch_size=8, min_side_ratio=0.5, max_side_ratio=0.5, score="cls", num_classes=3)
        >>> x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
        >>> attn = torch.full((2, 1, 17, 17), 1 / 17)
        >>> attn[:, 0, 0, 1:] = torch.arange(16.0).flip(0) / 136  # the class token looks most at the top left
        >>> out = mixer(x, y, torch.Generator().manual_seed(0), context=attn)
        >>> out.lam.tolist()  # a 2 x 2 square of the 16 tokens
        [0.75, 0.75]
        >>> out.params.mask[0, 0, ::8, ::8].int().tolist()  # pasted over the least attended square
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
        >>> out.params.extra["shift"][0].tolist()  # from the partner's most attended one, 16 px up and left
        [-16, -16]
    """

    name = "smmix"
    spatial_dims = (2,)
    needs = "attention"

    def __init__(self, *, patch_size: int = 16, min_side_ratio: float = 0.25, max_side_ratio: float = 0.75,
                 score: str = "patches", **kwargs: Any) -> None:
        if "alpha" in kwargs or "lam" in kwargs:
            raise TypeError("smmix draws the square's side from min_side_ratio / max_side_ratio, not lam from "
                            "alpha or lam")
        super().__init__(1.0, **kwargs)
        check_choice("mode", self.mode, ("batch", "elem"))
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.min_side_ratio = check_range("min_side_ratio", min_side_ratio, 0.0, 1.0, low_open=True)
        self.max_side_ratio = check_range("max_side_ratio", max_side_ratio, 0.0, 1.0, low_open=True)
        if self.min_side_ratio > self.max_side_ratio:
            raise ValueError(f"min_side_ratio must be <= max_side_ratio, got min_side_ratio={min_side_ratio!r} and "
                             f"max_side_ratio={max_side_ratio!r}")
        self.score = check_choice("score", score, SCORES)

    def _repr_keys(self) -> tuple[str, ...]:
        return ("patch_size", "min_side_ratio", "max_side_ratio", "score")

    def check_input(self, x: Any) -> None:
        """``x`` a float batch [B, C, H, W] whose sides are multiples of ``patch_size`` (naming ``x``)."""
        super().check_input(x)
        patch_grid(tuple(x.shape), self.patch_size)

    def side_range(self, grid: tuple[int, int]) -> tuple[int, int]:
        """The smallest and largest square side, in tokens, on a token grid ``grid`` (h, w)."""
        side = min(grid)
        low = min(max(int(side * self.min_side_ratio), 1), side)
        return low, min(max(int(side * self.max_side_ratio), low), side)

    def scores(self, context: Any, batch: int, size: tuple[int, int]) -> Tensor:
        """Each patch token's attention score, float32 [B, h, w], from attention probabilities ``context``.

        Raises:
            ValueError: ``context`` is not attention probabilities for this batch, or its grid is not this
                mixer's patch grid of ``size`` (naming ``context``).
        """
        grid = patch_grid(size, self.patch_size)
        probs, prefix, h, w = check_attention(context, batch, size)
        if (h, w) != grid:
            raise ValueError(f"context has a {h}x{w} token grid, but patch_size={self.patch_size} cuts the "
                             f"{size[0]}x{size[1]} images into {grid[0]}x{grid[1]}")
        if self.score == "patches":
            rated = probs[:, :, prefix:, prefix:].mean(dim=(1, 2))
        else:
            rated = probs[:, :, 0, prefix:].mean(1)
        return rated.reshape(batch, h, w)

    def _draw_lam(self, n: int, gen: torch.Generator) -> Tensor:
        # The square's side sets lam (drawn in _sample); no Beta draw.
        return torch.zeros(n, device=gen.device)

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, context: Any = None
                ) -> Region:
        batch, size = x.shape[0], (int(x.shape[-2]), int(x.shape[-1]))
        score = self.scores(context, batch, size)
        h, w = score.shape[1:]
        low, high = self.side_range((h, w))
        side = low + rand_int(torch.full((lam.numel(),), high - low + 1, device=gen.device), gen)  # [n]
        side = side.to(score.device).expand(batch)
        top, left = best_squares(score, side, largest=False)
        from_top, from_left = best_squares(score[index.to(score.device)], side, largest=True)
        rows = torch.arange(h, device=score.device).view(1, h, 1)
        cols = torch.arange(w, device=score.device).view(1, 1, w)
        s = side.view(-1, 1, 1)
        tokens = ((rows >= top.view(-1, 1, 1)) & (rows < top.view(-1, 1, 1) + s)
                  & (cols >= left.view(-1, 1, 1)) & (cols < left.view(-1, 1, 1) + s))
        p = self.patch_size
        mask = tokens.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1)
        shift = torch.stack([from_top - top, from_left - left], dim=1) * p
        return Region(mask=mask, lam=1.0 - side.float() ** 2 / float(h * w), extra={"shift": shift})

    def preview_parts(self, x: Tensor, params: MixParams) -> dict[str, Any]:
        """The partner's most-attended square (``partner_region``, outlined in pictures), which the mix moves
        onto the sample's least-attended one (the mask); a mixup draw of the switch is a plain blend."""
        shift = params.extra.get("shift")
        if shift is None:
            return {}
        mask = params.mask.to(x.device).expand(x.shape[0], -1, -1, -1)
        # Both squares lie inside the image, so rolling the mask by the shift lands exactly on the source square.
        region = torch.stack([m.roll((int(dy), int(dx)), dims=(-2, -1)) for m, (dy, dx) in zip(mask, shift.tolist())])
        return {"partner_region": region,
                "legend": ("original: label weight lam (the area it keeps)",
                           "partner: label weight 1 - lam",
                           "mask: where the partner's square goes (white),",
                           "  the original's least-attended square",
                           "mixed: the partner's red (most-attended) square",
                           "  moved onto the mask | right: lam | mask mean")}

    def _apply(self, t: Tensor, params: MixParams) -> Tensor:
        shift = params.extra.get("shift")
        if shift is None:  # a mixup draw of the method's switch
            return blend(t, params)
        return paste_moved(t, params.index.to(t.device), params.mask.to(t.device), shift.to(t.device))

    def apply_seg(self, seg: Tensor, params: MixParams, x: Tensor) -> Tensor:
        hard = params.extra.get("shift") is not None or not params.mixed
        return mix_seg(seg, params, x, self.apply, hard=hard, who=self.name)


def best_squares(score: Tensor, side: Tensor, *, largest: bool) -> tuple[Tensor, Tensor]:
    """Top-left corner (row, column), long [B] each, of the ``side[i] x side[i]`` square of least (or, ``largest``,
    most) total ``score[i]`` [h, w] among the squares inside the grid; ties go to the first in row-major order.

    The sums come from a summed-area table in float64, so a square's total is exact to float32 rounding whatever
    its side, for every sample's own side in one pass."""
    batch, h, w = score.shape
    table = F.pad(score.double().cumsum(1).cumsum(2), (1, 0, 1, 0))  # [B, h + 1, w + 1]
    rows = torch.arange(h, device=score.device)
    cols = torch.arange(w, device=score.device)
    down = (rows.view(1, h) + side.view(-1, 1)).clamp(max=h)  # [B, h]
    right = (cols.view(1, w) + side.view(-1, 1)).clamp(max=w)  # [B, w]
    b = torch.arange(batch, device=score.device).view(-1, 1, 1)
    r0, c0 = rows.view(1, h, 1), cols.view(1, 1, w)
    r1, c1 = down.view(batch, h, 1), right.view(batch, 1, w)
    total = table[b, r1, c1] - table[b, r0, c1] - table[b, r1, c0] + table[b, r0, c0]  # [B, h, w]
    inside = (r0 + side.view(-1, 1, 1) <= h) & (c0 + side.view(-1, 1, 1) <= w)
    total = total.masked_fill(~inside, float("-inf") if largest else float("inf")).flatten(1)
    pos = total.argmax(1) if largest else total.argmin(1)
    return pos // w, pos % w


def paste_moved(t: Tensor, index: Tensor, mask: Tensor, shift: Tensor) -> Tensor:
    """``t`` [B, ..., H, W] where ``mask`` [B, 1, H, W] is True replaced by its partner ``t[index]`` moved by
    ``shift`` [B, 2] pixels (pixel (r, c) takes the partner's (r + shift[0], c + shift[1])). Gradients reach
    both; any dtype (integer segmentation maps too)."""
    partner = t[index]
    shape = t.shape
    height, width = shape[-2], shape[-1]
    flat = partner.reshape(shape[0], -1, height, width)
    rows = (torch.arange(height, device=t.device).view(1, -1) + shift[:, :1]).clamp(0, height - 1)  # [B, H]
    cols = (torch.arange(width, device=t.device).view(1, -1) + shift[:, 1:]).clamp(0, width - 1)  # [B, W]
    moved = flat.gather(2, rows.view(shape[0], 1, height, 1).expand(-1, flat.shape[1], -1, width))
    moved = moved.gather(3, cols.view(shape[0], 1, 1, width).expand(-1, flat.shape[1], height, -1))
    keep = mask.reshape(shape[0], 1, height, width)
    return torch.where(keep, moved, t.reshape(flat.shape)).reshape(shape)
