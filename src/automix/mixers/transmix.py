"""TransMix (Chen et al., "TransMix: Attend to Mix for Vision Transformers", CVPR 2022, arXiv:2111.09833): the
images are mixed as timm's Mixup / CutMix switch mixes them; on CutMix draws the label weight is then set from
where the vision transformer's class token looked in the mixed image.

With ``a`` the class token's attention over the patch tokens in the model's last block (the class token's row of
the attention probabilities, patch columns, averaged over heads) and ``m`` each patch token's share of partner
pixels (the pasted box, averaged over the token's patch), the partner's attention share is
``sum(a * m) / sum(a)``, and

    ``lam = ratio * lam_area + (1 - ratio) * (1 - sum(a * m) / sum(a))``

with ``lam_area`` CutMix's own (1 - the box's area share). ``ratio=0.5`` as the authors' code and the OpenMixup
port; ``ratio=0`` uses attention alone. Mixup draws keep their lam. The attention is read during the mixed
batch's own forward pass (``reweights = "attention"``: ``automix.context.capture_context``, which asks that one
block for explicit attention), so TransMix costs no extra pass, and on Mixup draws that block stays on the fused
kernel too (``wants_reweight``); the targets are built after the pass (``BaseMixer.reweight``).

Defaults as the TransMix DeiT-S config (``configs/deit_s_transmix.yaml`` of Beckschen/TransMix at commit
7e313ca: mixup 0.8, cutmix 1.0, switch prob 0.8, one draw per batch) and OpenMixup's CIFAR-100 DeiT config
(``configs/classification/cifar100/mixups/vits/deit_small/deit_s_transmix_p0_8_sz224_bs100_ep200.py`` of
Westlake-AI/openmixup at commit 37e1372: mixup 0.2 / TransMix 0.8, alphas 0.8 / 1.0). Reference code: the same
repository's ``transmix.py`` (``Mixup_transmix.transmix_label``) and OpenMixup's ``openmixup/models/augments/
transmix.py``. One deliberate difference: a token's pasted share is the mean of the box mask over its patch,
where the reference samples the mask at one pixel per patch (nearest-neighbour down-sampling); the two agree
when the box follows patch borders, and the mean does not count a token as pasted because one corner is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_range
from .._tokens import token_grid
from ._vit import AttentionRelabel
from .base import MixParams, partner_weight
from .choice import MixChoice, mixup_cutmix
from .cutmix import CutMix
from .registry import register_mixer


@register_mixer("transmix")
class TransMix(AttentionRelabel):
    """Mixup / CutMix switch with attention-weighted labels on CutMix draws (the ``"attention"`` context).

    In the trainer it takes timm's flags, as the authors' training script: ``--method transmix --mixup 0.8 --cutmix 1.0
    --mixup-switch-prob 0.8`` (given none, these defaults stand); ``ratio`` and ``layer`` are ``--method-opt``s.

    Through ``automix.create_method("transmix", model)`` the attention comes from the training model's own forward
    pass on the mixed batch, so the model must have attention modules that give their maps (automix's
    ``vit_tiny`` / ``vit_small``, timm's ViT / DeiT); another model, or a ``layer`` without attention, is refused
    when the method is built, with ``layer`` named. Called directly, ``mixer.sample(x)`` draws and
    ``mixer.apply(x, params)`` mixes (with the area lam), ``mixer.reweight(params, attn)`` sets the attention lam
    from probabilities ``attn`` [B, heads, N, N] of the mixed batch, and ``mixer.mix_targets(y, params)`` gives the
    targets; a bare ``mixer(x, y)`` is a ``TypeError`` (its targets would be plain CutMix labels).

    Args:
        mixup_alpha: Beta(alpha, alpha) of mixup draws (0: CutMix only).
        cutmix_alpha: Beta(alpha, alpha) of CutMix draws (> 0).
        switch_prob: chance of CutMix when both are on (per batch, pair or sample as ``mode``), as timm's.
        ratio: weight in [0, 1] of CutMix's area lam in the label weight; the rest is the attention lam.
        layer: the attention module (or a block holding one) whose class-token attention is read; ``None``: the
            model's last (TransMix's).
        cutmix_minmax, correct_lam: as ``cutmix``.
        **kwargs: see ``BaseMixer`` (lam, prob, mode, pairing, num_classes, label_smoothing, generator).

    Raises:
        ValueError: a value out of range; ``reweight`` given an attention map that is not [B, heads, N, N] for this
            batch, or whose tokens do not tile the image (naming ``context``).

    Example (x: [B, C, H, W]; here a hand-made attention map for 2 x 2 patches of 8 px):
        >>> import torch
        >>> from automix import create_mixer
        >>> mixer = create_mixer("transmix", mixup_alpha=0.0, ratio=0.0, num_classes=3)
        >>> x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
        >>> params = mixer.sample(x, torch.Generator().manual_seed(0))
        >>> mixed = mixer.apply(x, params)  # the model's pass on this batch gives the attention
        >>> attn = torch.zeros(4, 1, 5, 5)
        >>> attn[:, :, 0, 1:] = 0.25  # the class token looks at each patch alike
        >>> lam = mixer.reweight(params, attn).lam  # uniform attention: the box's share of the patches
        >>> bool(torch.allclose(lam, params.lam)), lam.shape
        (True, torch.Size([4]))
        >>> attn[:, :, 0, 1:] = torch.tensor([0.7, 0.1, 0.1, 0.1])  # all eyes on the top-left patch
        >>> y1, y2, x1, x2 = params.box[0].tolist()
        >>> top_left = max(0, min(y2, 8) - y1) * max(0, min(x2, 8) - x1) / 64  # its share of partner pixels
        >>> float(mixer.reweight(params, attn).lam[0]) <= 1 - 0.7 * top_left + 1e-6
        True
        >>> targets = mixer.mix_targets(y, mixer.reweight(params, attn))  # [4, 3], the attention's label weights
    """

    name = "transmix"

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, *, switch_prob: float = 0.8,
                 ratio: float = 0.5, layer: str | None = None, cutmix_minmax: tuple[float, float] | None = None,
                 correct_lam: bool = True, prob: float = 1.0, **kwargs: Any) -> None:
        if "alpha" in kwargs:
            raise TypeError("transmix takes mixup_alpha and cutmix_alpha, not alpha (got alpha=...)")
        super().__init__(1.0, prob=prob, **kwargs)
        self.cutmix_alpha = check_range("cutmix_alpha", cutmix_alpha, 0.0, float("inf"), low_open=True)
        self.mixup_alpha = check_range("mixup_alpha", mixup_alpha, 0.0, float("inf"))
        self.switch_prob = check_range("switch_prob", switch_prob, 0.0, 1.0)
        self.ratio = check_range("ratio", ratio, 0.0, 1.0)
        self._set_layer(layer)
        shared = self._shared_options()
        self.inner = mixup_cutmix(mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha,
                                  cutmix_minmax=cutmix_minmax, prob=prob, switch_prob=self.switch_prob,
                                  correct_lam=correct_lam, **shared)
        self.cutmix_minmax, self.correct_lam = cutmix_minmax, correct_lam
        self.hard = self.inner.hard

    def _repr_keys(self) -> tuple[str, ...]:
        return ("mixup_alpha", "cutmix_alpha", "switch_prob", "ratio", "layer")

    def _cut(self, params: MixParams) -> tuple[MixParams, Tensor] | None:
        """The CutMix part of a draw and which samples it mixed (bool [B]), or None when it mixed none."""
        inner = self.inner
        if not params.mixed:
            return None
        if isinstance(inner, CutMix):
            return params, torch.ones(params.index.shape[0], dtype=torch.bool, device=params.lam.device)
        if not isinstance(inner, MixChoice):  # mixup only
            return None
        k = next(i for i, m in enumerate(inner.mixers) if isinstance(m, CutMix))
        choice = params.extra["choice"]
        if isinstance(choice, int):
            return (params, torch.ones_like(params.lam, dtype=torch.bool)) if choice == k else None
        return params.extra["parts"][k], choice.to(params.lam.device) == k

    def preview_parts(self, x: Tensor, params: MixParams) -> dict[str, Any]:
        """On a CutMix draw the label weight is not the area: say how it is made (``reweight``)."""
        if self._cut(params) is None:
            return {}
        return {"legend": ("original: label weight lam; CutMix draws:",
                           "  ratio * (1 - mask mean) + (1 - ratio) * the",
                           "  class token's attention share on the original",
                           "partner: 1 - lam; mask: its share (white)",
                           "mixed = (1-mask)*original + mask*partner",
                           "right: lam | mean of the mask")}

    def wants_reweight(self, params: MixParams) -> bool:
        """Only CutMix draws are re-weighted: a Mixup draw (or an unmixed batch) needs no attention map."""
        return self._cut(params) is not None

    def reweight(self, params: MixParams, context: Any) -> MixParams:
        """``params`` with lam set from the attention probabilities ``context`` of the mixed batch (see the module
        docstring): float [B, heads, N, N] or [B, N, N], class token first, the patch tokens last.

        Raises:
            ValueError: ``context`` is not such a tensor for this batch, or its tokens do not tile the image.
        """
        cut = self._cut(params)
        if cut is None:
            return params
        part, chosen = cut
        batch = params.index.shape[0]
        if not isinstance(context, Tensor) or context.ndim not in (3, 4) or context.shape[0] != batch \
                or context.shape[-1] != context.shape[-2]:
            raise ValueError(f"context must be attention probabilities [B, heads, N, N] with B={batch}, got "
                             f"{type(context).__name__} {tuple(getattr(context, 'shape', ()))}")
        size = tuple(params.size)
        _, h, w = token_grid(context.shape[-1], size, (1, 2), name="context")
        probs = context.float()
        row = probs[:, :, 0, -h * w:].mean(1) if probs.ndim == 4 else probs[:, 0, -h * w:]  # [B, hw]
        share = F.adaptive_avg_pool2d(partner_weight(part, size, row.device).float(), (h, w)).flatten(1)  # [n, hw]
        pasted, total = (row * share).sum(1), row.sum(1)
        lam = params.lam.to(row.device)
        attn_lam = torch.where(total > 0, 1.0 - pasted / total.clamp_min(1e-12), lam).clamp(0.0, 1.0)
        mixed = self.ratio * lam + (1.0 - self.ratio) * attn_lam
        lam = torch.where(chosen.to(row.device), mixed, lam).to(device=params.lam.device, dtype=torch.float32)
        out = MixParams(index=params.index, lam=lam, mode=params.mode, lam_partner=params.lam_partner,
                        mixed=params.mixed, size=params.size, box=params.box, mask=params.mask,
                        extra={**params.extra, "lam_area": params.lam})
        return out
