"""TL-Align as a Method (arXiv:2210.06455): token-level CutMix whose label is traced through every attention block
of the model (``automix.mixers.tla``).

One forward pass of the mixed batch gives the logits and the attention of every block (``MixerMethod``'s
``reweights`` path with the ``"attention_maps"`` context: every block computes its attention explicitly on mixed
steps); the traced class-token weight becomes the label weight before the targets are built. The method only adds
the model's patch size and the check that the model has attention to trace through.
"""

from __future__ import annotations

from torch import nn

from .._checks import check_type
from ..losses import TargetLoss
from ..mixers.tla import TLA
from ..models.attention import every_attention
from .base import MixerMethod
from .registry import register_method
from .tokenmix import token_patch_size


@register_method("tla", kind="model-aware")
class TLAMethod(MixerMethod):
    """TL-Align (arXiv:2210.06455): CutMix on whole tokens, the label weight traced through the attention.

    Args:
        model: the ViT being trained (its patch size sets the token grid; every attention module is read).
        alpha: Beta(alpha, alpha) of the box's lam (1.0).
        patch_size: the token side in pixels; None: the model's. Given, it must be the model's (the boxes are of
            whole tokens of the model's grid; ``token_patch_size``).
        prob, mode, pairing, num_classes, label_smoothing: as ``BaseMixer``.
        loss, total_steps, seed: as ``MixerMethod``.

    Raises:
        ValueError: a model with no attention module that gives its map or without a patch size (naming
            ``model``); a ``patch_size`` that is not the model's (naming both); a bad option (named).

    Example (x: [B, C, H, W], y: [B] class ids):
        >>> import torch, automix
        >>> vit = automix.create_model("vit_tiny", num_classes=4, depth=2)
        >>> method = automix.create_method("tla", vit, num_classes=4, seed=0)
        >>> loss, logs = method.training_step(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
        >>> params = method.last_params["mix"]
        >>> tuple(params.lam.shape), tuple(params.extra["lam_area"].shape)  # traced lam beside the area's
        ((4,), (4,))
    """

    def __init__(self, model: nn.Module, *, alpha: float = 1.0, patch_size: int | None = None, prob: float = 1.0,
                 mode: str = "batch", pairing: str = "perm", num_classes: int | None = None,
                 label_smoothing: float = 0.0, loss: str | TargetLoss = "ce", total_steps: int | None = None,
                 seed: int | None = None) -> None:
        check_type("model", model, nn.Module, "an nn.Module")
        every_attention(model, option="model")  # a CNN is refused here, not at the first step
        patch_size = token_patch_size(model, patch_size, "tla")
        mixer = TLA(alpha, patch_size=patch_size, prob=prob, mode=mode, pairing=pairing, num_classes=num_classes,
                    label_smoothing=label_smoothing)
        super().__init__(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)
