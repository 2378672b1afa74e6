"""TokenMix as a Method: the ``TokenMix`` mixer on the model's own token grid, with an optional teacher.

Without a teacher (the default) TokenMix is an input mixer whose labels are the token shares; the method only
reads the model's patch size (``patch_size``: automix's ViTs, and timm's ``patch_embed.patch_size``). With a
``teacher`` (any trained classifier that global-average-pools a feature map into a linear head, e.g. a CNN trained
before, loaded by the user: automix fetches no weights), the labels follow the teacher's class activation maps of
the clean batch (``automix.context.class_activation_map``, eval mode, no gradients), as the paper's content-based
targets. The teacher is never trained here and is not in ``param_groups()``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from .._checks import check_type
from ..context import class_activation_map
from ..losses import TargetLoss
from ..mixers.tokenmix import TokenMix
from .base import MixerMethod
from .registry import register_method


def model_patch_size(model: nn.Module) -> int | None:
    """The patch side of a ViT (``model.patch_size``, or timm's ``model.patch_embed.patch_size``), else None."""
    for owner in (model, getattr(model, "patch_embed", None)):
        size = getattr(owner, "patch_size", None)
        size = size[0] if isinstance(size, (tuple, list)) and size else size
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return None


@register_method("tokenmix", kind="model-aware")
class TokenMixMethod(MixerMethod):
    """TokenMix (arXiv:2207.08409): the partner pasted on separate blocks of whole tokens.

    Args:
        model: the classifier being trained (a ViT: its patch size sets the token grid).
        alpha: Beta(alpha, alpha) of lam (1.0).
        patch_size: token side in pixels; None: the model's (``ValueError`` naming ``patch_size`` for a model
            that has none, e.g. a CNN: give it).
        mask_type: ``"block"`` (the reference's) or ``"random"``.
        min_tokens: tokens always pasted beyond ``(1 - lam) * N`` (None: 14 / 196 of the grid, the reference's 14).
        teacher: a trained classifier whose class activation maps set the labels (None: token shares).
        teacher_layer, teacher_head: the teacher's feature map and linear head for the maps (None: found, as
            ``class_activation_map``).
        prob, mode, pairing, num_classes, label_smoothing: as ``BaseMixer`` (with a teacher, mode ``batch`` or
            ``elem``).
        loss, total_steps, seed: as ``MixerMethod``.

    Example (x: [B, C, H, W], y: [B] class ids):
        >>> import torch, automix
        >>> vit = automix.create_model("vit_tiny", num_classes=4, depth=1)
        >>> method = automix.create_method("tokenmix", vit, num_classes=4, mode="elem", seed=0)
        >>> loss, logs = method.training_step(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1]))
        >>> method.mixer.patch_size, tuple(method.last_params["mix"].mask.shape)
        (4, (6, 1, 32, 32))
    """

    def __init__(self, model: nn.Module, *, alpha: float = 1.0, patch_size: int | None = None,
                 mask_type: str = "block", min_tokens: int | None = None, teacher: nn.Module | None = None,
                 teacher_layer: str | None = None, teacher_head: str | None = None, prob: float = 1.0,
                 mode: str = "batch", pairing: str = "perm", num_classes: int | None = None,
                 label_smoothing: float = 0.0, loss: str | TargetLoss = "ce", total_steps: int | None = None,
                 seed: int | None = None) -> None:
        if patch_size is None:
            patch_size = model_patch_size(model)
            if patch_size is None:
                raise ValueError(f"patch_size: {type(model).__name__} has no patch size (not a ViT); give "
                                 f"patch_size= (the token side in pixels)")
        mixer = TokenMix(alpha, patch_size=patch_size, mask_type=mask_type, min_tokens=min_tokens, prob=prob,
                         mode=mode, pairing=pairing, num_classes=num_classes, label_smoothing=label_smoothing)
        if teacher is not None:
            check_type("teacher", teacher, nn.Module, "an nn.Module or None")
            if mode == "pair":
                raise ValueError("mode 'pair' does not apply to tokenmix with a teacher: each sample's label weights "
                                 "come from its own map, so the two samples of a pair cannot share one draw; use "
                                 "mode 'batch' or 'elem'")
            teacher.requires_grad_(False)
        super().__init__(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)
        self.teacher = teacher
        self.teacher_layer, self.teacher_head = teacher_layer, teacher_head

    def context(self, x: Tensor, y: Tensor) -> Any:
        """The teacher's class activation maps of the clean batch, or None without a teacher."""
        if self.teacher is None:
            return None
        return class_activation_map(self.teacher, x, y, layer=self.teacher_layer, head=self.teacher_head)
