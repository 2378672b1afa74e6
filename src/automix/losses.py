"""Losses that match the mixers' targets.

* ``soft_target_cross_entropy``: cross-entropy against soft targets (what ``mixer(x, y).y`` holds).
* ``mixed_cross_entropy``: ``lam * CE(y) + (1 - lam) * CE(y[index])`` for users who interpolate the
  loss instead of the targets (same value as the soft-target form for hard labels).
* ``soft_target_bce``: BCE-with-logits against (mixed) multi-label targets.
* ``mixed_mse``: MSE against mixed regression targets of any trailing shape.
* ``interpolate_loss``: the same interpolation for any per-sample loss function.
* ``decoupled_cross_entropy``: DecoupleMix (arXiv:2203.10761): soft-target CE plus ``eta`` times a
  "decoupled" term per mixed class, a softmax over that class and the classes not in the mix only.
* ``soft_targets`` and ``target_loss``: what every Method uses to honour its ``loss`` and
  ``label_smoothing`` options the same way (``TARGET_LOSSES`` lists the names; ``TargetLoss`` carries a
  loss's own options, e.g. DecoupleMix's ``eta``).

All are computed in float32 whatever the logits' dtype (bf16/fp16 log-softmax loses mass), and
``reduction`` is ``"mean"``, ``"sum"`` or ``"none"`` (per sample).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_choice, check_range, check_tensor

_REDUCTIONS = ("mean", "sum", "none")
TARGET_LOSSES = ("ce", "bce", "decouplemix")
DECOUPLE_MODES = ("both", "less", "more")


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


def decoupled_cross_entropy(logits: Tensor, target: Tensor, eta: float = 0.1, mode: str = "both", thr: float = 0.5,
                            reduction: str = "mean") -> Tensor:
    """DecoupleMix loss (Liu et al., "Harnessing Hard Mixed Samples with Decoupled Regularizer", arXiv:2203.10761).

    Soft-target cross-entropy plus, for each class ``j`` that a sample's target mixes, ``eta`` times the
    cross-entropy of ``j`` under a softmax over ``j`` and the classes *not* in the mix only:
    ``softplus(logsumexp(z[rest]) - z[j])``. The mixed classes do not compete with each other in that term,
    so a hard mixed sample still pushes every class of the mix up against the rest (the "decoupled"
    regulariser). ``mode`` picks the mixed classes that get the term: ``"both"`` all of them, ``"less"``
    those whose share ``target[j] < thr`` (the minor class), ``"more"`` those with ``target[j] >= thr``.

    The mixed classes are those above the row's minimum (the label-smoothing floor) by more than 1e-3; a row
    with fewer than two (an unmixed sample, or two samples of one class) gets plain cross-entropy.
    Reference: ``soft_mix_cross_entropy`` and ``ClsMixupHead`` (``eta_weight=dict(eta, mode, thr)``) in
    Westlake-AI/openmixup ``openmixup/models/losses/cross_entropy_loss.py`` and
    ``openmixup/models/heads/cls_mixup_head.py`` at commit 37e1372. Differences, deliberate: per sample and
    vectorised (the reference takes the mixed classes and shares of the batch's first row, so it needs one
    batch lambda, and it skips the term when the two shares are equal); ``less`` / ``more`` compare each
    class's own share with ``thr`` (the reference's rule for two classes at ``thr=0.5``).

    Args:
        logits: [B, C] predictions.
        target: [B, C] soft targets (rows summing to 1), e.g. ``mixer(x, y).y``.
        eta: weight of the decoupled terms (>= 0; 0 gives plain soft-target CE). The reference's CIFAR-100
            configs use 0.1 (``both`` / ``less``) or 0.01.
        mode: ``"both"``, ``"less"`` or ``"more"``.
        thr: the share that ``less`` / ``more`` compare with, in [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Raises:
        ValueError: a bad ``eta``, ``mode``, ``thr`` or ``reduction`` (named), or shapes that differ.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
        >>> target = torch.tensor([[0.7, 0.3, 0.0, 0.0]])
        >>> ce = soft_target_cross_entropy(logits, target)
        >>> extra = decoupled_cross_entropy(logits, target, eta=1.0) - ce   # one term per mixed class
        >>> rest = torch.logsumexp(logits[0, 2:], 0)                        # the classes not in the mix
        >>> expected = sum(torch.nn.functional.softplus(rest - logits[0, j]) for j in (0, 1))
        >>> bool(torch.isclose(extra, expected))
        True
    """
    _check_pair(logits, target, "logits")
    eta = check_range("eta", eta, 0.0, float("inf"))
    check_choice("mode", mode, DECOUPLE_MODES)
    thr = check_range("thr", thr, 0.0, 1.0)
    z, t = logits.float(), target.float()
    per_sample = -(t * F.log_softmax(z, dim=-1)).sum(dim=-1)
    if eta == 0 or t.ndim != 2:
        return _reduce(per_sample, reduction)
    mixed = t > t.amin(dim=1, keepdim=True) + 1e-3  # [B, C] classes of the mix
    pick = mixed if mode == "both" else mixed & (t < thr if mode == "less" else t >= thr)
    pick = pick & (mixed.sum(dim=1, keepdim=True) >= 2)
    rest = torch.logsumexp(z.masked_fill(mixed, float("-inf")), dim=1, keepdim=True)  # -inf: nothing left
    decoupled = F.softplus(rest - z)  # -log softmax over {j} + rest, at j
    per_sample = per_sample + eta * torch.where(pick, decoupled, torch.zeros_like(decoupled)).sum(dim=1)
    return _reduce(per_sample, reduction)


@dataclass(frozen=True)
class TargetLoss:
    """A Method's loss against (mixed) float targets: its name and the options of that loss.

    Attributes:
        name: ``"ce"`` (soft-target cross-entropy), ``"bce"`` (multi-label) or ``"decouplemix"``
            (``decoupled_cross_entropy``).
        options: the loss's own keyword arguments (DecoupleMix: ``eta``, ``mode``, ``thr``).
    """

    name: str = "ce"
    options: tuple[tuple[str, Any], ...] = ()

    def __call__(self, logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
        if self.name == "bce":
            return soft_target_bce(logits, target, reduction=reduction)
        if self.name == "decouplemix":
            return decoupled_cross_entropy(logits, target, reduction=reduction, **dict(self.options))
        return soft_target_cross_entropy(logits, target, reduction)


# Each loss's own options, as create_method takes them (every method declares them beside ``loss``).
LOSS_OPTIONS = {"decouplemix": {"decouple_eta": ("eta", 0.1), "decouple_mode": ("mode", "both"),
                                "decouple_thr": ("thr", 0.5)}}


def resolve_loss(loss: str | TargetLoss, **options: Any) -> TargetLoss:
    """``loss`` as a ``TargetLoss``: a name of ``TARGET_LOSSES`` with the loss options of ``LOSS_OPTIONS``
    (``decouple_eta=0.1`` ...), or a ``TargetLoss`` as is. The options are checked here, by the loss itself.

    Raises:
        ValueError: an unknown name, or an option given for a loss that does not take it (both named).
    """
    if isinstance(loss, TargetLoss):
        if options:
            raise ValueError(f"loss options {sorted(options)} apply to a loss name, not to loss={loss!r}")
        return loss
    check_choice("loss", loss, TARGET_LOSSES)
    own = LOSS_OPTIONS.get(loss, {})
    stray = sorted(set(options) - set(own))
    if stray:
        takers = {k: name for name, opts in LOSS_OPTIONS.items() for k in opts}
        raise ValueError(f"option(s) {stray} belong to loss={takers.get(stray[0])!r} "
                         f"({', '.join(sorted(takers))}), got loss={loss!r}")
    values = {arg: options.get(key, default) for key, (arg, default) in own.items()}
    if loss == "decouplemix":  # checked once here, by the names the user gave
        values = {"eta": check_range("decouple_eta", values["eta"], 0.0, float("inf"), high_open=True),
                  "mode": check_choice("decouple_mode", values["mode"], DECOUPLE_MODES),
                  "thr": check_range("decouple_thr", values["thr"], 0.0, 1.0)}
    return TargetLoss(loss, tuple(values.items()))


def target_loss(loss: str | TargetLoss, logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """The loss a Method's ``loss`` option names, against (mixed) float targets [B, C].

    ``"ce"``: ``soft_target_cross_entropy`` (rows summing to 1); ``"bce"``: ``soft_target_bce``
    (multi-label, each class its own yes/no); ``"decouplemix"``: ``decoupled_cross_entropy`` with its
    defaults; a ``TargetLoss`` (``resolve_loss``) carries a loss's own options.

    Raises:
        ValueError: ``loss`` not in ``TARGET_LOSSES``, or shapes that differ.
    """
    if not isinstance(loss, TargetLoss):
        loss = TargetLoss(check_choice("loss", loss, TARGET_LOSSES))
    return loss(logits, target, reduction)


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
