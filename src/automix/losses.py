"""Losses that match the mixers' targets.

* ``soft_target_cross_entropy``: cross-entropy against soft targets (what ``mixer(x, y).y`` holds).
* ``mixed_cross_entropy``: ``lam * CE(y) + (1 - lam) * CE(y[index])`` for users who interpolate the
  loss instead of the targets (same value as the soft-target form for hard labels).
* ``soft_target_bce``: BCE-with-logits against (mixed) multi-label targets.
* ``mixed_mse``: MSE against mixed regression targets of any trailing shape.
* ``interpolate_loss``: the same interpolation for any per-sample loss function.
* ``soft_targets`` and ``target_loss``: what every Method uses to honour its ``loss`` and
  ``label_smoothing`` options the same way (``TARGET_LOSSES`` lists the names).

All are computed in float32 whatever the logits' dtype (bf16/fp16 log-softmax loses mass), and
``reduction`` is ``"mean"``, ``"sum"`` or ``"none"`` (per sample).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_choice, check_range, check_tensor

_REDUCTIONS = ("mean", "sum", "none")
TARGET_LOSSES = ("ce", "bce")


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    check_choice("reduction", reduction, _REDUCTIONS)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def _check_pair(pred: Tensor, target: Tensor, what: str) -> None:
    check_tensor("logits", pred)
    check_tensor("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"target must have the shape of the {what} {tuple(pred.shape)}, got {tuple(target.shape)}")


def soft_target_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits`` [B, C] against soft targets [B, C] (rows summing to 1)."""
    _check_pair(logits, target, "logits")
    per_sample = -(target.float() * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)
    return _reduce(per_sample, reduction)


def mixed_cross_entropy(logits: Tensor, y: Tensor, index: Tensor, lam: Tensor | float,
                        label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """``lam * CE(logits, y) + (1 - lam) * CE(logits, y[index])`` per sample.

    Args:
        logits: [B, C] predictions on the mixed batch.
        y: [B] class indices of the unmixed batch.
        index: [B] partner indices from ``MixOutput.index``.
        lam: [B] (or scalar) weights from ``MixOutput.lam``.
        label_smoothing: passed to ``F.cross_entropy``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    check_tensor("logits", logits)
    check_tensor("y", y)
    check_tensor("index", index)
    if logits.ndim != 2 or y.shape != (logits.shape[0],) or index.shape != y.shape:
        raise ValueError(f"y and index must be [B] class/partner indices for logits [B, C]; got logits "
                         f"{tuple(logits.shape)}, y {tuple(y.shape)}, index {tuple(index.shape)}")
    if y.is_floating_point():
        raise TypeError(f"y must hold class indices (integer dtype), got {y.dtype}; use soft_target_cross_entropy")
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
    lam = torch.as_tensor(lam, dtype=torch.float32, device=logits.device)
    logits = logits.float()
    ce_a = F.cross_entropy(logits, y, reduction="none", label_smoothing=label_smoothing)
    ce_b = F.cross_entropy(logits, y[index], reduction="none", label_smoothing=label_smoothing)
    return _reduce(lam * ce_a + (1.0 - lam) * ce_b, reduction)


def interpolate_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], pred: Tensor, y: Tensor, index: Tensor,
                     lam: Tensor | float, reduction: str = "mean") -> Tensor:
    """Interpolate any per-sample loss: ``lam * loss(pred, y) + (1 - lam) * loss(pred, y[index])``.

    ``loss_fn`` must return one value per sample (e.g. ``partial(F.cross_entropy, reduction="none")``).
    """
    a, b = loss_fn(pred, y), loss_fn(pred, y[index])
    if a.ndim != 1 or a.shape[0] != pred.shape[0]:
        raise ValueError(f"loss_fn must return one value per sample [B], got shape {tuple(a.shape)}")
    lam = torch.as_tensor(lam, dtype=torch.float32, device=a.device)
    return _reduce(lam * a.float() + (1.0 - lam) * b.float(), reduction)


def soft_target_bce(logits: Tensor, target: Tensor, pos_weight: Tensor | None = None,
                    reduction: str = "mean") -> Tensor:
    """Binary cross-entropy with logits against (mixed) multi-label targets in [0, 1], mean over classes."""
    _check_pair(logits, target, "logits")
    per = F.binary_cross_entropy_with_logits(logits.float(), target.float(), pos_weight=pos_weight, reduction="none")
    return _reduce(per.flatten(1).mean(dim=1), reduction)


def mixed_mse(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error against mixed regression targets of any shape [B, ...]."""
    _check_pair(pred, target, "prediction")
    per = (pred.float() - target.float()).pow(2)
    return _reduce(per.flatten(1).mean(dim=1) if per.ndim > 1 else per, reduction)


def soft_targets(y: Tensor, num_classes: int | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Targets as float32 rows: class ids [B] -> (smoothed) one-hot [B, num_classes]; float [B, C] -> smoothed
    copy; float targets of other shapes -> float32 copy (smoothing needs class rows).

    Raises:
        ValueError: class ids without ``num_classes``, or ``label_smoothing > 0`` on targets that are not [B, C].
    """
    check_tensor("y", y)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_open=True)
    eps = label_smoothing
    if not y.is_floating_point():
        if num_classes is None:
            raise ValueError("num_classes is required when y holds class indices, got num_classes=None")
        target = torch.full((y.shape[0], num_classes), eps / num_classes, dtype=torch.float32, device=y.device)
        return target.scatter_(1, y.long().unsqueeze(1), 1.0 - eps + eps / num_classes)
    target = y.float()
    if eps > 0:
        if target.ndim != 2:
            raise ValueError(f"label_smoothing applies to class targets [B, C]; y has shape {tuple(y.shape)}")
        target = target * (1.0 - eps) + eps / target.shape[1]
    return target


def target_loss(loss: str, logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """The loss a Method's ``loss`` option names, against (mixed) float targets [B, C].

    ``"ce"``: ``soft_target_cross_entropy`` (rows summing to 1); ``"bce"``: ``soft_target_bce``
    (multi-label, each class its own yes/no).

    Raises:
        ValueError: ``loss`` not in ``TARGET_LOSSES``, or shapes that differ.
    """
    check_choice("loss", loss, TARGET_LOSSES)
    if loss == "bce":
        return soft_target_bce(logits, target, reduction=reduction)
    return soft_target_cross_entropy(logits, target, reduction)


class SoftTargetCrossEntropy(nn.Module):
    """Module form of ``soft_target_cross_entropy`` (drop-in for timm's class of that name)."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_target_cross_entropy(logits, target, self.reduction)


class SoftTargetBCE(nn.Module):
    """Module form of ``soft_target_bce`` for multi-label training."""

    def __init__(self, pos_weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_target_bce(logits, target, self.pos_weight, self.reduction)
