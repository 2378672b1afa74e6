"""MixPro as a Method (arXiv:2304.12043): MaskMix on the model's patch grid, labels from the mixed batch's attention
blended in by the model's own progress (``automix.mixers.mixpro``).

One forward pass of the mixed batch gives the logits and the last block's attention (``MixerMethod``'s
``reweights`` path: only that block leaves the fused kernel, and only on MaskMix draws); ``reweight`` then sets the
attention lam and blends it with the area lam by the progress factor, the cosine similarity of that pass's
prediction and the area-mixed targets, before the targets are built. The method only adds what the mixer cannot
know: the model's patch size, and the prediction for the progress factor.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .._checks import check_type
from ..losses import TargetLoss
from ..mixers.base import MixParams
from ..mixers.mixpro import MixPro
from ..models.attention import find_attention
from .base import MixerMethod
from .registry import register_method
from .tokenmix import token_patch_size


@register_method("mixpro", kind="model-aware")
class MixProMethod(MixerMethod):
    """MixPro (arXiv:2304.12043): MaskMix with progressive attention labels, switched with mixup per batch.

    Args:
        model: the ViT being trained (its patch size sets the cells' alignment; its attention at ``layer`` and its
            prediction set the labels).
        alpha: Beta(alpha, alpha) of MaskMix's lam (1.0).
        patch_size: the token side in pixels; None: the model's. Given, it must be the model's (the reference's
            ``model_patch_size``; coarser cells are ``mask_patch_size``'s; ``token_patch_size``).
        mask_patch_size: mask cell side in pixels, a multiple of ``patch_size`` (64 at 224 / 16 in the reference);
            None: 4 / 14 of the patch grid's side in whole patches (64 px at 224 / 16, 8 px at 32 / 4).
        switch_prob: chance of MaskMix (else mixup) per batch (0.8, OpenMixup's DeiT config).
        mixup_alpha: Beta(alpha, alpha) of the mixup draws (1.0); 0: MaskMix only.
        layer: the attention module (or a block holding one) whose class-token attention is read; None: the last.
        prob, mode, pairing, num_classes, label_smoothing: as ``BaseMixer``.
        loss, total_steps, seed: as ``MixerMethod``.

    Raises:
        ValueError: a model without attention (naming ``model``, or ``layer`` when given) or without a patch size
            (naming ``model``); a ``patch_size`` that is not the model's (naming both); a bad option (named, e.g.
            ``mask_patch_size`` not a multiple of the patch size).

    Example (x: [B, C, H, W], y: [B] class ids):
        >>> import torch, automix
        >>> vit = automix.create_model("vit_tiny", num_classes=4, depth=2)
        >>> method = automix.create_method("mixpro", vit, num_classes=4, switch_prob=1.0, seed=0)
        >>> loss, logs = method.training_step(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
        >>> params = method.last_params["mix"]
        >>> sorted(k for k in params.extra if k.startswith(("lam_", "progress")))
        ['lam_area', 'lam_attn', 'progress']
    """

    def __init__(self, model: nn.Module, *, alpha: float = 1.0, patch_size: int | None = None,
                 mask_patch_size: int | None = None, switch_prob: float = 0.8, mixup_alpha: float = 1.0,
                 layer: str | None = None, prob: float = 1.0, mode: str = "batch", pairing: str = "perm",
                 num_classes: int | None = None, label_smoothing: float = 0.0, loss: str | TargetLoss = "ce",
                 total_steps: int | None = None, seed: int | None = None) -> None:
        check_type("model", model, nn.Module, "an nn.Module")
        if layer is not None:
            check_type("layer", layer, str, "a module path string or None")
        find_attention(model, layer, option="layer")  # a model without attention is refused here, not at a step
        patch_size = token_patch_size(model, patch_size, "mixpro",
                                      hint=", and mask_patch_size= for coarser mask cells (a multiple of it)")
        mixer = MixPro(alpha, patch_size=patch_size, mask_patch_size=mask_patch_size, switch_prob=switch_prob,
                       mixup_alpha=mixup_alpha, layer=layer, prob=prob, mode=mode, pairing=pairing,
                       num_classes=num_classes, label_smoothing=label_smoothing)
        super().__init__(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)

    def reweight(self, params: MixParams, context: Any, *, logits: Tensor, y: Tensor) -> MixParams:
        """The attention lam (``MixPro.reweight``), blended with the area lam by the progress factor of this pass's
        prediction (``MixPro.progress``)."""
        return self.mixer.progress(self.mixer.reweight(params, context), logits, y)
