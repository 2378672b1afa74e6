"""TL-Align (Xiao et al., "Token-Label Alignment for Vision Transformers", ICCV 2023, arXiv:2210.06455): the label
of a CutMix image is traced through the transformer's attention, as its tokens are.

Images are mixed by a CutMix box on the token grid (``box_from_lam`` on the ``h x w`` patches, so whole tokens are
pasted; lam corrected to the box's token count). Each token starts with a label weight: ``own`` = its share of the
sample's own pixels (1 or 0 for whole tokens; any mask works, a token's own-pixel share is its weight), and the
class (and any distillation) token starts at the area lam. Every block mixes the tokens by its attention, so every
block mixes their labels alike, with the residual connection:

    ``w <- (A w + w) / 2``,  ``A`` the block's attention probabilities averaged over heads [N, N],

in forward order through all blocks (the authors' label embedding: ``(attn @ label_embed + label_embed) / 2`` in
each block, with the same head-averaged, detached attention). The label weight of the sample is the class token's
at the end: ``lam = w[0]``. Tracing one weight per token is the same as tracing the authors' label vectors: every
row of their label embedding is ``w * y + (1 - w) * y[index]`` (smoothed alike) and each step is linear with rows
of ``A`` summing to 1, so it stays of that form.

The attention of every block comes from the mixed batch's own forward pass (``reweights = "attention_maps"``:
``automix.context.capture_context`` asks every block for explicit attention), so TL-Align costs no extra pass.

Defaults: OpenMixup's CIFAR-100 DeiT-S config (``configs/classification/cifar100/mixups/vits/deit_small/
deit_s_tla_sz224_bs100_ep200.py`` of Westlake-AI/openmixup at commit 37e1372: alpha 1, ``patch_size=16``) and the
authors' ``main_tla.py`` (``--mixup 0 --cutmix 1.0``: token CutMix only). Reference code read: Euphoria16/TL-Align
``tla.py`` (``TL_AlignMix``, ``rand_token_bbox``, ``token_label``) and ``timm/models/vision_transformer.py``
(``Attention.forward``, ``Block.forward`` with ``label_embed``) at commit 4da0621, and OpenMixup's
``openmixup/models/augments/tla.py``. Differences: the box is timm's CutMix rule on the token grid (its high edge
``start + cut``, the authors' ``centre + cut // 2``); mode ``pair`` / ``elem`` draw a box per pair / sample (the
authors' batch only); the authors' optional mixup switch (off by default) is not offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .._checks import check_positive_int
from ._sampling import box_area, box_from_lam
from ._vit import check_attention, partner_share, patch_grid
from .base import BaseMixer, MixParams, Region


class TLA(BaseMixer):
    """Token-level CutMix whose label weight is traced through every attention block (see the module docstring).

    Through ``automix.create_method("tla", model)`` the attention maps come from the model's own forward pass on the
    mixed batch. Called directly, ``mixer.sample(x)`` draws and ``mixer.apply(x, params)`` mixes (with the area lam;
    a bare ``mixer(x, y)`` is a ``TypeError``: its targets need the attention) and ``mixer.reweight(params, maps)`` sets
    the traced lam from ``maps``, the attention probabilities of every block (a sequence of [B, heads, N, N],
    forward order); ``extra["lam_area"]`` keeps the area lam.

    Args:
        alpha: Beta(alpha, alpha) of the box's lam.
        patch_size: the ViT's patch side in pixels (the box follows patch borders); images must be multiples of it.
        **kwargs: see ``BaseMixer`` (lam, prob, mode, pairing, num_classes, label_smoothing, generator).

    Raises:
        ValueError: an image not a multiple of ``patch_size`` (naming ``x``); maps that are not attention
            probabilities for this batch (naming ``context``).

    Example (x: [B, C, H, W]; one hand-made block on a 2 x 2 grid of 16 px patches):
        >>> import torch
        >>> from automix.mixers.tla import TLA
        >>> mixer = TLA(patch_size=16, lam=0.75, num_classes=3)
        >>> x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
        >>> params = mixer.sample(x, torch.Generator().manual_seed(0))
        >>> mixed = mixer.apply(x, params)  # the model's pass on this batch gives the maps
        >>> params.lam.tolist()  # one of the four tokens pasted
        [0.75, 0.75]
        >>> attn = torch.zeros(2, 1, 5, 5)
        >>> attn[:, 0, :, 0] = 1.0  # every token looks only at the class token: labels stay as they start
        >>> mixer.reweight(params, [attn]).lam.tolist()
        [0.75, 0.75]
    """

    name = "tla"
    spatial_dims = (2,)
    reweights = "attention_maps"

    def __init__(self, alpha: float = 1.0, *, patch_size: int = 16, **kwargs: Any) -> None:
        super().__init__(alpha, **kwargs)
        self.patch_size = check_positive_int("patch_size", patch_size)

    def _repr_keys(self) -> tuple[str, ...]:
        return ("patch_size",)

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, **_: Any) -> Region:
        h, w = patch_grid(tuple(x.shape), self.patch_size)
        box = box_from_lam(lam, (h, w), gen)
        return Region(box=box.cpu() * self.patch_size, lam=1.0 - box_area(box) / float(h * w))

    def wants_reweight(self, params: MixParams) -> bool:
        """An unmixed batch has nothing to trace (its lam is 1 whatever the attention)."""
        return params.mixed

    def reweight(self, params: MixParams, context: Any) -> MixParams:
        """``params`` with lam traced through ``context``, the attention probabilities of every block of the
        mixed batch's pass in forward order (a sequence of float [B, heads, N, N] or [B, N, N]).

        Raises:
            ValueError: ``context`` is not such a non-empty sequence for this batch, or its tokens do not tile the
                image.
        """
        if not params.mixed:
            return params
        batch, size = params.index.shape[0], tuple(params.size)
        if isinstance(context, Tensor) or not isinstance(context, Sequence) or not context:
            raise ValueError(f"context must be a non-empty sequence of attention probabilities [B, heads, N, N], one "
                             f"per block, got {type(context).__name__}")
        maps = [check_attention(a, batch, size, name=f"context[{i}]") for i, a in enumerate(context)]
        _, prefix, h, w = maps[0]
        if any(m[0].shape[-1] != maps[0][0].shape[-1] for m in maps):
            raise ValueError(f"context must hold maps of one token count, got {[m[0].shape[-1] for m in maps]}")
        device = maps[0][0].device
        own = 1.0 - partner_share(params, size, (h, w), device).expand(batch, -1)
        area = params.lam.to(device, torch.float32)
        start = torch.cat([area.view(-1, 1).expand(batch, prefix), own], dim=1)  # [B, N]
        lam = trace_label_weights([m[0] for m in maps], start)[:, 0].clamp(0.0, 1.0)
        return MixParams(index=params.index, lam=lam.to(params.lam.device), mode=params.mode,
                         lam_partner=params.lam_partner, mixed=params.mixed, size=params.size, box=params.box,
                         mask=params.mask, extra={**params.extra, "lam_area": params.lam})


def trace_label_weights(maps: Sequence[Tensor], weights: Tensor) -> Tensor:
    """TL-Align's label propagation: ``w <- (A w + w) / 2`` through ``maps`` in order, ``A`` each map averaged over
    heads. ``maps``: attention probabilities [B, heads, N, N] or [B, N, N]; ``weights``: float [B, N], each token's
    weight of the sample's own label. Returns float32 [B, N], every token's weight after the last map."""
    w = weights.float()
    for attn in maps:
        a = attn.float()
        a = a.mean(1) if a.ndim == 4 else a
        w = 0.5 * (torch.bmm(a, w.unsqueeze(-1)).squeeze(-1) + w)
    return w
