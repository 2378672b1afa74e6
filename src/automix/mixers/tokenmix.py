"""TokenMix (Liu et al., "TokenMix: Rethinking Image Mixing for Data Augmentation in Vision Transformers", ECCV
2022, arXiv:2207.08409): the partner is pasted on a set of whole tokens (patches), drawn as several separate
blocks on the token grid, instead of one CutMix box.

The mask: ``count = min(floor((1 - lam) * N) + min_tokens, N)`` of the ``N = h * w`` tokens (``min_tokens`` 14 of
196 in the reference, so a mix always pastes something), laid out as

* ``"block"``: BEiT-style block masking: random rectangles on the grid (area uniform in [1, what is left], aspect
  ratio log-uniform in [0.3, 1 / 0.3], strictly inside the grid) added while each adds new tokens without
  overshooting ``count``; drawn for every sample at once, a fixed number of rounds, and any shortfall topped up
  with random tokens, so every mask has exactly ``count`` tokens;
* ``"random"``: ``count`` tokens anywhere.

Labels: without a teacher (the default), each sample keeps ``lam = 1 - count / N``, the share of its own tokens.
With a teacher's class activation maps (the ``context``, [B, h', w'], e.g. ``automix.context.class_activation_map``
of a trained CNN on the clean batch), the labels follow the content, as the paper's teacher variant: each map is
resized to the token grid, shifted to a minimum of 0 and normalised to sum 1 (``snapmix.normalised_cam``), and
``lam`` = the sample's own activation on the tokens it keeps, ``lam_partner`` = the partner's activation on the
tokens pasted (two label weights, ``MixParams.lam_partner``).

Reference code: Sense-X/TokenMix ``tokenmix.py`` (``generate_mask``, ``generate_mask_random``; commit 1c42c30) and
OpenMixup's ``openmixup/models/augments/tokenmix.py`` (Westlake-AI/openmixup at commit 37e1372, ``mask_type='block',
minimum_tokens=14``). Differences: lam is drawn from Beta(alpha, alpha) as OpenMixup (the authors' code pastes a
constant 0.5 share plus the minimum); the authors' teacher labels are precomputed ReLabel token maps, here any
teacher's class activation maps; the grid is any ``H / patch_size x W / patch_size``, not only 14 x 14, with
``min_tokens`` scaled to it by default (14 / 196 of the tokens, rounded).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._checks import check_choice, check_positive_int, check_type
from .base import BaseMixer, MixParams, Region
from .snapmix import normalised_cam

MASK_TYPES = ("block", "random")
BLOCK_ROUNDS = 64  # rectangle rounds before the top-up (about 10 are needed on average at 14 x 14)


class TokenMix(BaseMixer):
    """Paste the partner on whole tokens: block or random token masks at ``patch_size`` granularity.

    Args:
        alpha: Beta(alpha, alpha) of lam, the share of own tokens before ``min_tokens`` are added.
        patch_size: token side in pixels (the ViT's patch size); the image's sides must be multiples of it.
        mask_type: ``"block"`` (rectangles, the reference's default) or ``"random"``.
        min_tokens: tokens always pasted on top of ``(1 - lam) * N``; None: 14 / 196 of the grid, rounded (14 at
            224 / 16, 5 at 32 / 4).
        **kwargs: see ``BaseMixer`` (lam, prob, mode, pairing, num_classes, label_smoothing, generator).

    Raises:
        ValueError: a bad option; an image whose sides are not multiples of ``patch_size`` (naming ``x``), or whose
            token grid has no more tokens than ``min_tokens`` (naming ``min_tokens``); a teacher map (``context``)
            that is not [B, h, w]; ``mode="pair"`` with a teacher map (each sample's weights come from its own map).

    Example (x: [B, C, H, W]):
        >>> import torch
        >>> from automix.mixers.tokenmix import TokenMix
        >>> mixer = TokenMix(patch_size=4, num_classes=3, mode="elem")
        >>> out = mixer(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0))
        >>> tokens = out.params.mask[:, 0, ::4, ::4]  # one value per 4 x 4 token
        >>> bool(torch.equal(out.params.mask, tokens.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None]))
        True
        >>> bool(torch.allclose(out.lam, 1 - tokens.float().mean((1, 2))))  # lam: the share of own tokens
        True
    """

    name = "tokenmix"
    spatial_dims = (2,)

    def __init__(self, alpha: float = 1.0, *, patch_size: int = 16, mask_type: str = "block",
                 min_tokens: int | None = None, **kwargs: Any) -> None:
        super().__init__(alpha, **kwargs)
        self.patch_size = check_positive_int("patch_size", patch_size)
        self.mask_type = check_choice("mask_type", mask_type, MASK_TYPES)
        if min_tokens is not None:
            check_type("min_tokens", min_tokens, int, "an int >= 0 or None")
            if min_tokens < 0:
                raise ValueError(f"min_tokens must be an int >= 0 or None, got {min_tokens!r}")
        self.min_tokens = min_tokens

    def _repr_keys(self) -> tuple[str, ...]:
        return ("patch_size", "mask_type", "min_tokens")

    def grid(self, size: tuple[int, ...]) -> tuple[int, int]:
        """The token grid (h, w) of an image of ``size`` (H, W). Raises ``ValueError`` naming ``x``."""
        p = self.patch_size
        if size[-2] % p or size[-1] % p:
            raise ValueError(f"x must have height and width multiples of patch_size={p}, got {tuple(size)}")
        return size[-2] // p, size[-1] // p

    def check_image_size(self, size: tuple[int, int]) -> None:
        """Images of ``size`` (H, W) must tile into tokens of ``patch_size`` (``ValueError`` naming ``patch_size``)
        and hold more tokens than ``min_tokens`` (else every sample would be its partner alone)."""
        h, w = int(size[-2]), int(size[-1])
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size} does not tile {h}x{w} images: their height and width "
                             f"must be multiples of it")
        self._check_min_tokens((h // self.patch_size) * (w // self.patch_size), (h, w))

    def _check_min_tokens(self, total: int, size: tuple[int, int]) -> None:
        if self.min_tokens is not None and self.min_tokens >= total:
            raise ValueError(f"min_tokens={self.min_tokens} must be below the {total} tokens of the token grid of "
                             f"{size[0]}x{size[1]} images (patch_size={self.patch_size}): with that many every sample "
                             f"would be its partner alone")

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, context: Any = None
                ) -> Region:
        h, w = self.grid(tuple(x.shape[-2:]))
        total = h * w
        self._check_min_tokens(total, (int(x.shape[-2]), int(x.shape[-1])))
        extra = round(14 * total / 196) if self.min_tokens is None else self.min_tokens
        count = ((1.0 - lam.float()) * total).floor().long().add(extra).clamp(max=total)  # [n]
        draw = block_masks if self.mask_type == "block" else random_masks
        tokens = draw(count, h, w, gen)  # bool [n, h, w] on gen.device
        mask = tokens.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2).unsqueeze(1)
        if context is None:
            return Region(mask=mask, lam=1.0 - count.float() / total)
        if self.mode == "pair":
            raise ValueError("mode 'pair' does not apply to tokenmix with a teacher's maps: each sample's label "
                             "weights come from its own map, so the two samples of a pair cannot share one draw; use "
                             "mode 'batch' or 'elem'")
        if not isinstance(context, Tensor) or context.ndim != 3 or context.shape[0] != x.shape[0]:
            raise ValueError(f"context must be a teacher's class activation maps [B, h, w] with B={x.shape[0]}, got "
                             f"{type(context).__name__} {tuple(getattr(context, 'shape', ()))}")
        cam = normalised_cam(context, (h, w))  # [B, h, w], each summing to 1
        pasted = tokens.to(cam.device).float()  # [n, h, w]
        own = (cam * (1.0 - pasted)).flatten(1).sum(1)
        partner = (cam[index.to(cam.device)] * pasted).flatten(1).sum(1)
        return Region(mask=mask, lam=own.clamp(0.0, 1.0), lam_partner=partner.clamp(0.0, 1.0))


    def preview_parts(self, x: Tensor, params: MixParams) -> dict[str, Any]:
        """With a teacher's maps, two label weights from them (without, lam is the share of own tokens)."""
        if params.lam_partner is None:
            return {}
        return {"legend": ("original: label weight lam = the share of",
                           "  the teacher's CAM on the tokens it keeps;",
                           "  partner: lam_b = its share on the tokens",
                           "  pasted (lam + lam_b need not be 1)",
                           "mask: tokens pasted; mixed = (1-mask)*x + mask*partner",
                           "right: lam / lam_b | mean of the mask")}


def random_masks(count: Tensor, h: int, w: int, gen: torch.Generator) -> Tensor:
    """Bool [n, h, w] masks with ``count[i]`` tokens each, anywhere (uniform without replacement)."""
    n = count.shape[0]
    scores = torch.rand(n, h * w, generator=gen, device=gen.device)
    ranks = scores.argsort(1).argsort(1)
    return (ranks < count.to(gen.device).view(-1, 1)).view(n, h, w)


def block_masks(count: Tensor, h: int, w: int, gen: torch.Generator) -> Tensor:
    """Bool [n, h, w] masks of ``count[i]`` tokens each made of random rectangles (BEiT's block masking,
    arXiv:2106.08254, vectorised over the masks): every round each unfinished mask draws a rectangle of area
    uniform in [1, tokens still to add] and aspect ratio log-uniform in [0.3, 1 / 0.3], strictly inside the grid,
    and takes it when it adds new tokens without overshooting; after ``BLOCK_ROUNDS`` rounds any shortfall is
    topped up with random tokens."""
    dev = gen.device
    n = count.shape[0]
    count = count.to(dev)
    mask = torch.zeros(n, h, w, dtype=torch.bool, device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    log_aspect = math.log(0.3)
    for _ in range(BLOCK_ROUNDS):
        left = count - mask.flatten(1).sum(1)
        if not bool((left > 0).any()):
            break
        u = torch.rand(n, 4, generator=gen, device=dev)
        area = 1.0 + u[:, 0] * (left.float() - 1.0).clamp_min(0.0)
        aspect = torch.exp(log_aspect + u[:, 1] * (-2.0 * log_aspect))
        rh = torch.sqrt(area * aspect).round().long()
        rw = torch.sqrt(area / aspect).round().long()
        fits = (rh >= 1) & (rw >= 1) & (rh < h) & (rw < w)
        top = (u[:, 2] * (h - rh + 1).clamp_min(1)).long()
        start = (u[:, 3] * (w - rw + 1).clamp_min(1)).long()
        rect = ((rows >= top.view(-1, 1, 1)) & (rows < (top + rh).view(-1, 1, 1))
                & (cols >= start.view(-1, 1, 1)) & (cols < (start + rw).view(-1, 1, 1)))
        new = rect & ~mask
        added = new.flatten(1).sum(1)
        take = fits & (added > 0) & (added <= left)
        mask |= new & take.view(-1, 1, 1)
    left = (count - mask.flatten(1).sum(1)).clamp_min(0)
    if bool((left > 0).any()):  # top up: the free tokens with the smallest random scores
        scores = torch.rand(n, h * w, generator=gen, device=dev).masked_fill(mask.flatten(1), 2.0)
        ranks = scores.argsort(1).argsort(1)
        mask |= (ranks < left.view(-1, 1)).view(n, h, w)
    return mask
