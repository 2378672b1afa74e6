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

from .._checks import check_positive_int, check_type
from ..context import cam_head, class_activation_map
from ..losses import TargetLoss
from ..mixers.tokenmix import TokenMix
from .base import MixerMethod
from .heads import find_classifier
from .registry import register_method


def model_patch_size(model: nn.Module) -> int | None:
    """The patch side of a ViT (``model.patch_size``, or timm's ``model.patch_embed.patch_size``), else None."""
    for owner in (model, getattr(model, "patch_embed", None)):
        size = getattr(owner, "patch_size", None)
        size = size[0] if isinstance(size, (tuple, list)) and size else size
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return None


def token_patch_size(model: nn.Module, patch_size: int | None, method: str, *, hint: str = "") -> int:
    """The token side a ViT method mixes on: the model's patch size (``model_patch_size``), checked against a given
    ``patch_size``.

    Every ViT method's reference (TokenMix, MixPro, SMMix, TL-Align) mixes on the model's own token grid
    (``patch_size=16`` / ``model_patch_size=16`` for a patch-16 DeiT), so a given ``patch_size`` must be the model's:
    a smaller one cuts the model's tokens in parts, a larger one draws on a grid the model does not have (SMMix
    reads the attention's grid, TL-Align traces whole tokens). A model without a patch size (a CNN) takes any
    ``patch_size``, as the token side of its grid.

    Raises:
        ValueError: ``patch_size`` not a positive int, or one that differs from the model's (naming both and
            ``method``; ``hint`` is added, e.g. MixPro's ``mask_patch_size`` for coarser cells); no ``patch_size``
            and a model without one (naming ``model`` and ``patch_size``).
    """
    own = model_patch_size(model)
    if patch_size is not None:
        patch_size = check_positive_int("patch_size", patch_size)
    if patch_size is None:
        if own is None:
            raise ValueError(f"model: {type(model).__name__} has no patch size (not a ViT), and {method} mixes whole "
                             f"tokens of the model's patch grid; use a ViT (automix's vit_tiny / vit_small, timm's "
                             f"ViT / DeiT) or give patch_size= (the token side in pixels)")
        return own
    if own is not None and patch_size != own:
        raise ValueError(f"patch_size={patch_size!r} differs from the model's patch size {own} "
                         f"({type(model).__name__}): {method} mixes whole tokens of the model's own {own}-px grid; "
                         f"leave patch_size unset (the model's){hint}")
    return patch_size


def model_classes(model: nn.Module) -> int | None:
    """The logits of ``model``'s classifier (``find_classifier``: a linear layer's ``out_features``, a 1x1
    convolution's ``out_channels``), or None when it has none that says."""
    try:
        head = model.get_submodule(find_classifier(model))
    except ValueError:
        return None
    return getattr(head, "out_features", getattr(head, "out_channels", None))


@register_method("tokenmix", kind="model-aware")
class TokenMixMethod(MixerMethod):
    """TokenMix (arXiv:2207.08409): the partner pasted on separate blocks of whole tokens.

    Args:
        model: the classifier being trained (a ViT: its patch size sets the token grid).
        alpha: Beta(alpha, alpha) of lam (1.0).
        patch_size: token side in pixels; None: the model's. Given, it must be the model's (the reference mixes
            the model's own tokens); a model without one (a CNN) needs it (``token_patch_size``).
        mask_type: ``"block"`` (the reference's) or ``"random"``.
        min_tokens: tokens always pasted beyond ``(1 - lam) * N`` (None: 14 / 196 of the grid, the reference's 14).
        teacher: a trained classifier whose class activation maps set the labels (None: token shares).
        teacher_layer, teacher_head: the teacher's feature map and linear head for the maps (None: found, as
            ``class_activation_map``); only with a ``teacher``.
        prob, mode, pairing, num_classes, label_smoothing: as ``BaseMixer`` (with a teacher, mode ``batch`` or
            ``elem``).
        loss, total_steps, seed: as ``MixerMethod``.

    Raises:
        ValueError: no ``patch_size`` for a model without one (naming ``model``), or one that differs from the
            model's (naming ``patch_size``); ``teacher_layer`` / ``teacher_head`` without a ``teacher``, or naming no
            module of it, or a teacher with no pooled map / linear head to find (naming the option); a teacher whose
            classes are not the student's (``num_classes``, else the model's classifier; naming ``teacher``);
            mode ``pair`` with a teacher; a bad option (named).
        TypeError: ``teacher_head`` is not an ``nn.Linear``; a ``teacher`` that is not an ``nn.Module``.

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
        check_type("model", model, nn.Module, "an nn.Module")
        patch_size = token_patch_size(model, patch_size, "tokenmix")
        mixer = TokenMix(alpha, patch_size=patch_size, mask_type=mask_type, min_tokens=min_tokens, prob=prob,
                         mode=mode, pairing=pairing, num_classes=num_classes, label_smoothing=label_smoothing)
        if teacher is None:
            given = [k for k, v in (("teacher_layer", teacher_layer), ("teacher_head", teacher_head)) if v is not None]
            if given:  # without a teacher they would be ignored: say so rather than train on token shares silently
                raise ValueError(f"{' and '.join(given)} given without a teacher: they name the teacher's feature map "
                                 f"and linear head; give teacher= (a trained classifier) too, or drop them")
        else:
            check_type("teacher", teacher, nn.Module, "an nn.Module or None")
            if mode == "pair":
                raise ValueError("mode 'pair' does not apply to tokenmix with a teacher: each sample's label weights "
                                 "come from its own map, so the two samples of a pair cannot share one draw; use "
                                 "mode 'batch' or 'elem'")
            _, head = cam_head(teacher, teacher_layer, teacher_head, options=("teacher_layer", "teacher_head"))
            student = num_classes if num_classes is not None else model_classes(model)
            if student is not None and head.out_features != student:
                which = "num_classes" if num_classes is not None else "the model's classifier"
                raise ValueError(f"teacher: {type(teacher).__name__} gives {head.out_features} classes, but the "
                                 f"student has {student} ({which}); the teacher's maps are read for the label "
                                 f"classes, so it must be trained on the same {student} classes")
            teacher.requires_grad_(False)
        super().__init__(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)
        self.teacher = teacher
        self.teacher_layer, self.teacher_head = teacher_layer, teacher_head

    def context(self, x: Tensor, y: Tensor) -> Any:
        """The teacher's class activation maps of the clean batch, or None without a teacher."""
        if self.teacher is None:
            return None
        return class_activation_map(self.teacher, x, y, layer=self.teacher_layer, head=self.teacher_head,
                                    options=("teacher_layer", "teacher_head"))
