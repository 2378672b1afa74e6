"""MixPro (Zhao et al., "MixPro: Data Augmentation with MaskMix and Progressive Attention Labeling for Vision
Transformer", ICLR 2023, arXiv:2304.12043): MaskMix images, labels from attention blended in progressively.

**MaskMix**: the image is cut into square mask cells of ``mask_patch_size`` pixels (a whole number of the ViT's
patches, so every token is all one image or all the other); with ``lam ~ Beta(alpha, alpha)``,
``ceil(lam * cells)`` random cells keep the sample and the rest show the partner (cells past the image border are
cropped, as the reference's). ``lam_area`` is the share of the sample's own pixels.

**Progressive attention labelling (PAL)**: after the forward pass of the mixed batch, with ``a`` the class token's
attention over the patch tokens in the last block (averaged over heads) and ``own`` each token's share of the
sample's own pixels,

    ``lam_attn = sum(a * own) / sum(a)``,  ``lam = s * lam_attn + (1 - s) * lam_area``,

where the progress factor ``s`` is the cosine similarity between the model's prediction on the mixed image
(softmax of its logits, no gradient) and the area-mixed targets: early in training the prediction is far from the
targets and the area counts; as the model learns, the attention counts more. The method (``automix.methods.
mixpro``) wires both passes: ``reweight`` sets ``lam_attn``, ``progress`` blends it with ``lam_area``.

As OpenMixup's DeiT configs, MixPro is switched with plain mixup per batch (``switch_prob``: chance of MixPro,
``mixup_alpha``: mixup's Beta; mixup draws keep their lam and read no attention).

Defaults: OpenMixup's CIFAR-100 DeiT-S config (``configs/classification/cifar100/mixups/vits/deit_small/
deit_s_mixpro_sz224_bs100_ep200.py`` of Westlake-AI/openmixup at commit 37e1372: ``mask_patch_size=64,
model_patch_size=16``, MixPro 0.8 / mixup 0.2, alphas 1). Reference code read: fistyee/MixPro ``main.py``
(``train_one_epoch``: PAL) and ``utils.py`` (``MaskMix``) at commit 53a229e, and OpenMixup's ``openmixup/models/
augments/mixpro.py`` with ``MixUpClassification.forward_vit_based_mix``. Differences: ``lam_area`` is the realised
pixel share (the references count cells, which differs only when cells are cropped at the border); the progress
factor carries no gradient (as OpenMixup's; the authors' ``main.py`` keeps the graph in one branch); the default
cell is the reference's 4 / 14 of the grid side rounded to whole patches (64 px at 224 / 16, 8 px at 32 / 4), where
a fixed 64 px would leave a 32 px image one cell.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_positive_int, check_range
from ._vit import AttentionRelabel, check_attention, partner_share, patch_grid
from .base import BaseMixer, MixParams, Region, lam_from_mask
from .choice import MixChoice
from .mixup import Mixup
from .tokenmix import random_masks


class MaskMix(BaseMixer):
    """MixPro's image mixing: random square cells of ``mask_patch_size`` pixels show the partner (see the module
    docstring). Batch mode draws one lam for the batch and a mask per sample, as the reference.

    Args:
        alpha: Beta(alpha, alpha) of lam, the share of cells the sample keeps (rounded up to whole cells).
        patch_size: the ViT's patch side; images must be multiples of it, cells too.
        mask_patch_size: cell side in pixels, a multiple of ``patch_size`` and at most the image side; None: 4 / 14
            of the patch grid's side, rounded to whole patches (64 px at 224 / 16, 8 px at 32 / 4).
        **kwargs: see ``BaseMixer``.

    Raises:
        ValueError: ``mask_patch_size`` not a multiple of ``patch_size`` (at construction) or larger than the image,
            or an image not a multiple of ``patch_size`` (naming ``x``).
    """

    name = "maskmix"
    spatial_dims = (2,)

    def __init__(self, alpha: float = 1.0, *, patch_size: int = 16, mask_patch_size: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(alpha, **kwargs)
        self.patch_size = check_positive_int("patch_size", patch_size)
        if mask_patch_size is not None:
            check_positive_int("mask_patch_size", mask_patch_size)
            if mask_patch_size % self.patch_size:
                raise ValueError(f"mask_patch_size must be a multiple of patch_size={self.patch_size} (a mask cell "
                                 f"covers whole patches), got {mask_patch_size}")
        self.mask_patch_size = mask_patch_size

    def _repr_keys(self) -> tuple[str, ...]:
        return ("patch_size", "mask_patch_size")

    def cell(self, size: tuple[int, ...]) -> int:
        """The mask cell side in pixels for images of ``size`` (..., H, W).

        Raises:
            ValueError: the image is not a multiple of ``patch_size`` (naming ``x``), or ``mask_patch_size`` is
                larger than its smaller side.
        """
        h, w = patch_grid(size, self.patch_size)
        if self.mask_patch_size is None:
            return self.patch_size * max(1, round(min(h, w) * 4 / 14))
        if self.mask_patch_size > min(size[-2], size[-1]):
            raise ValueError(f"mask_patch_size must be at most the image side, got mask_patch_size="
                             f"{self.mask_patch_size} for {int(size[-2])}x{int(size[-1])} images")
        return self.mask_patch_size

    def check_image_size(self, size: tuple[int, int]) -> None:
        """``cell``'s checks for images of ``size`` (H, W), naming ``patch_size`` or ``mask_patch_size``."""
        h, w = int(size[-2]), int(size[-1])
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size} does not tile {h}x{w} images: their height and width "
                             f"must be multiples of it")
        self.cell((h, w))

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, context: Any = None
                ) -> Region:
        height, width = int(x.shape[-2]), int(x.shape[-1])
        m = self.cell((height, width))
        ch, cw = math.ceil(height / m), math.ceil(width / m)
        cells = ch * cw
        keep = torch.ceil(lam.float() * cells).long().clamp(0, cells).expand(x.shape[0])  # own cells, per sample
        partner = random_masks(cells - keep, ch, cw, gen)  # bool [B, ch, cw]
        mask = partner.repeat_interleave(m, 1).repeat_interleave(m, 2)[:, :height, :width].unsqueeze(1)
        return Region(mask=mask, lam=lam_from_mask(mask))


class MixPro(AttentionRelabel):
    """MaskMix with progressive attention labels, switched with mixup per batch (see the module docstring).

    Through ``automix.create_method("mixpro", model)`` the attention and the prediction come from the model's own
    forward pass on the mixed batch. Called directly, ``mixer.sample(x)`` draws and ``mixer.apply(x, params)``
    mixes (with the area lam; a bare ``mixer(x, y)`` is a ``TypeError``: its targets need the attention),
    ``mixer.reweight(params, attn)`` sets the attention lam from probabilities ``attn`` [B, heads, N, N] of the
    mixed batch (``extra["lam_area"]``, ``extra["lam_attn"]``) and ``mixer.progress(params, logits, y)`` blends the
    two by the progress factor (``extra["progress"]``).

    Args:
        alpha: Beta(alpha, alpha) of MaskMix's lam.
        patch_size, mask_patch_size: see ``MaskMix``.
        switch_prob: chance of MaskMix (else mixup) per batch, or per sample / pair in those modes.
        mixup_alpha: Beta(alpha, alpha) of the mixup draws; 0: MaskMix only.
        layer: the attention module (or a block holding one) whose class-token attention is read; None: the last.
        **kwargs: see ``BaseMixer`` (prob, mode, pairing, num_classes, label_smoothing, generator).

    Raises:
        ValueError: a bad option (named); a ``context`` that is not attention probabilities for this batch (naming
            ``context``); logits that do not match the targets (naming ``logits``).

    Example (x: [B, C, H, W]; a hand-made attention map for a 2 x 2 grid of 16 px patches):
        >>> import torch
        >>> from automix.mixers.mixpro import MixPro
        >>> mixer = MixPro(patch_size=16, mask_patch_size=16, switch_prob=1.0, lam=0.5, num_classes=3)
        >>> x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
        >>> params = mixer.sample(x, torch.Generator().manual_seed(0))
        >>> mixed = mixer.apply(x, params)  # the model's pass on this batch gives the attention
        >>> params.lam.tolist()  # two of the four cells keep the sample
        [0.5, 0.5]
        >>> attn = torch.zeros(2, 1, 5, 5)
        >>> attn[:, 0, 0, 1:] = 0.25  # the class token looks at each patch alike: the attention lam is the area
        >>> params = mixer.reweight(params, attn)
        >>> params.extra["lam_attn"].tolist()
        [0.5, 0.5]
        >>> mixer.progress(params, torch.zeros(2, 3), y).lam.tolist()
        [0.5, 0.5]
    """

    name = "mixpro"

    def __init__(self, alpha: float = 1.0, *, patch_size: int = 16, mask_patch_size: int | None = None,
                 switch_prob: float = 0.8, mixup_alpha: float = 1.0, layer: str | None = None, prob: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(alpha, prob=prob, **kwargs)
        self.switch_prob = check_range("switch_prob", switch_prob, 0.0, 1.0)
        self.mixup_alpha = check_range("mixup_alpha", mixup_alpha, 0.0, float("inf"))
        self._set_layer(layer)
        shared = self._shared_options()
        # A given lam replaces the alphas of both parts (passing one beside it is refused).
        alpha_of = (lambda a: {}) if self.lam is not None else (lambda a: {"alpha": a})
        self.maskmix = MaskMix(**alpha_of(self.alpha), patch_size=patch_size, mask_patch_size=mask_patch_size,
                               **shared)
        self.patch_size, self.mask_patch_size = self.maskmix.patch_size, mask_patch_size
        if self.mixup_alpha > 0 and self.switch_prob < 1:
            mixup = Mixup(**alpha_of(self.mixup_alpha), **shared)
            self.inner: BaseMixer = MixChoice([mixup, self.maskmix], probs=[1 - self.switch_prob, self.switch_prob],
                                              prob=prob, **shared)
        else:
            self.maskmix.prob = self.prob
            self.inner = self.maskmix
        self.hard = self.inner.hard

    def _repr_keys(self) -> tuple[str, ...]:
        return ("patch_size", "mask_patch_size", "switch_prob", "mixup_alpha", "layer")

    def _maskmix(self, params: MixParams) -> tuple[MixParams, Tensor] | None:
        """The MaskMix part of a draw and which samples it mixed (bool [B]), or None when it mixed none."""
        if not params.mixed:
            return None
        if self.inner is self.maskmix:
            return params, torch.ones(params.index.shape[0], dtype=torch.bool, device=params.lam.device)
        choice = params.extra["choice"]
        if isinstance(choice, int):
            return (params, torch.ones_like(params.lam, dtype=torch.bool)) if choice == 1 else None
        return params.extra["parts"][1], choice.to(params.lam.device) == 1

    def wants_reweight(self, params: MixParams) -> bool:
        """Only MaskMix draws read attention: a mixup draw (or an unmixed batch) runs on the fused kernel."""
        return self._maskmix(params) is not None

    def reweight(self, params: MixParams, context: Any) -> MixParams:
        """``params`` with lam set to the attention lam of its MaskMix samples (the others keep theirs), from the
        attention probabilities ``context`` [B, heads, N, N] (or [B, N, N]) of the mixed batch; ``extra`` gains
        ``lam_area`` and ``lam_attn`` (float32 [B]).

        Raises:
            ValueError: ``context`` is not such a tensor for this batch, or its tokens do not tile the image.
        """
        part = self._maskmix(params)
        if part is None:
            return params
        masked, chosen = part
        batch, size = params.index.shape[0], tuple(params.size)
        probs, prefix, h, w = check_attention(context, batch, size)
        row = probs[:, :, 0, prefix:].mean(1)  # [B, h * w]: the class token's attention over the patches
        own = 1.0 - partner_share(masked, size, (h, w), row.device)
        kept, total = (row * own).sum(1), row.sum(1)
        area = params.lam.to(row.device)
        lam_attn = torch.where(total > 0, kept / total.clamp_min(1e-12), area).clamp(0.0, 1.0)
        lam_attn = torch.where(chosen.to(row.device), lam_attn, area).to(params.lam.device, torch.float32)
        return MixParams(index=params.index, lam=lam_attn, mode=params.mode, lam_partner=params.lam_partner,
                         mixed=params.mixed, size=params.size, box=params.box, mask=params.mask,
                         extra={**params.extra, "lam_area": params.lam, "lam_attn": lam_attn})

    def progress(self, params: MixParams, logits: Tensor, y: Tensor) -> MixParams:
        """``params`` (from ``reweight``) with ``lam = s * lam_attn + (1 - s) * lam_area``, ``s`` [B] the cosine
        similarity of ``softmax(logits)`` (the mixed batch's, no gradient) and the area-mixed targets of ``y``;
        ``extra["progress"]`` holds ``s``. A draw ``reweight`` left alone is returned as is.

        Raises:
            ValueError: ``logits`` is not [B, K] with K the targets' classes.
        """
        if "lam_attn" not in params.extra:
            return params
        area = params.extra["lam_area"]
        targets = self.mix_targets(y, MixParams(**{**params.__dict__, "lam": area})).flatten(1)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or tuple(logits.shape) != tuple(targets.shape):
            raise ValueError(f"logits must be [B, K] matching the targets {tuple(targets.shape)}, got "
                             f"{tuple(getattr(logits, 'shape', ()))}")
        pred = logits.detach().float().softmax(1)
        sim = F.cosine_similarity(pred, targets.to(pred), dim=1).clamp(0.0, 1.0)
        lam_attn = params.extra["lam_attn"].to(sim.device)
        lam = (sim * lam_attn + (1.0 - sim) * area.to(sim.device)).to(params.lam.device, torch.float32)
        return MixParams(index=params.index, lam=lam, mode=params.mode, lam_partner=params.lam_partner,
                         mixed=params.mixed, size=params.size, box=params.box, mask=params.mask,
                         extra={**params.extra, "progress": sim.to(params.lam.device)})
