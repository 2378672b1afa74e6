"""AttentiveMix+ (after Walawalkar et al., "Attentive CutMix", ICASSP 2020, arXiv:2003.13048): paste the partner's
most activated grid cells, as ranked by a feature extractor.

Given feature maps ``F`` [B, C, h, w] of the batch (the ``"features"`` context), each cell of the h x w grid scores
``mean_c F[:, c]``; sample ``i`` receives the ``k`` top-scoring cells of its partner ``index[i]`` at the same
places (the partner weight is 1 on those cells, upsampled nearest to the image). ``top_k=None`` is the "+" variant
of the reference: ``k = round((1 - lam) * h * w)`` from lam ~ Beta(alpha, alpha), clipped to [1, h * w - 1] for a
mixed sample; a fixed ``top_k`` is the paper's. lam is the share of the image the sample keeps (the realised
mask, ``lam_from_mask``). Every sample gets its own mask (its partner's top cells), in batch mode too, where
lam and so k are shared.

Reference: ``attentivemix`` in ``openmixup/models/augments/attentivemix.py`` and ``_features`` in
``openmixup/models/classifiers/mixup_classification.py`` of Westlake-AI/openmixup at commit 37e1372 (the
extractor is a pre-trained ResNet on the image resized to 224, so a 7 x 7 grid; the configs use
``top_k=None``, alpha 2). There the sample keeps its *own* top-k cells and gets the partner everywhere else;
here, as in the paper, the partner's top cells are pasted in (the same mix seen from the partner's side).
The extractor is the method's business (``automix.methods.attentivemix``): no pre-trained weights can be
downloaded here, so by default it is an EMA copy of the model being trained.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_positive_int, check_type
from .base import BaseMixer, Region, lam_from_mask


def top_cells_mask(scores: Tensor, k: Tensor) -> Tensor:
    """Boolean [B, h, w]: True on the ``k[b]`` highest cells of ``scores[b]`` [B, h, w] (ties by position)."""
    flat = scores.flatten(1)
    order = flat.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return (rank < k.to(rank.device).view(-1, 1)).view_as(scores)


class AttentiveMix(BaseMixer):
    """Grid-cell mixer that pastes the partner's top-k cells by feature activation.

    Args:
        alpha: Beta(alpha, alpha) of lam, which sets k when ``top_k`` is None.
        top_k: cells pasted per mixed sample (the paper's fixed k), or None (AttentiveMix+: k from lam).
        layer: the extractor's module whose output is the grid ``F`` [B, C, h, w]; None: the feature map the
            extractor global-average-pools (the input of its last ``nn.AdaptiveAvgPool2d``).
        **kwargs: see ``BaseMixer`` (prob, mode, pairing, num_classes, label_smoothing, generator).

    Raises:
        ValueError: ``top_k`` is not a positive int (named); at draw time, a ``top_k`` beyond the grid's cells.
        TypeError: ``layer`` is not a string or None.

    Example (x: [B, C, H, W]; the feature context [B, C', h, w], here made by hand):
        >>> import torch
        >>> mixer = AttentiveMix(top_k=2, num_classes=3, mode="elem")
        >>> feats = torch.zeros(4, 8, 4, 4); feats[:, :, 0, :2] = 1.0   # every map's top cells: row 0, cols 0-1
        >>> out = mixer(torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0),
        ...             context=feats)
        >>> out.params.mask.shape, out.params.mask[0, 0, :4, :8].all().item(), out.lam.tolist()
        (torch.Size([4, 1, 16, 16]), True, [0.875, 0.875, 0.875, 0.875])
    """

    name = "attentivemix"
    spatial_dims = (2,)
    needs = "features"

    def __init__(self, alpha: float = 2.0, *, top_k: int | None = None, layer: str | None = None, **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)
        if self.top_k is not None and self.lam is not None:
            raise ValueError(f"top_k={top_k!r} fixes the pasted cells, but lam={self.lam!r} is given; give one")
        if layer is not None:
            check_type("layer", layer, str, "a module path string or None")
        self.layer = layer

    def _repr_keys(self) -> tuple[str, ...]:
        return ("top_k", "layer")

    def context_options(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def check_features(self, context: Any, batch: int) -> None:
        """The context must be feature maps [B, C, h, w] of ``batch`` samples (the output of ``layer``) with at
        least ``top_k`` cells; ``ValueError`` naming ``layer`` or ``top_k`` and the value, else."""
        if not isinstance(context, Tensor) or context.ndim != 4 or context.shape[0] != batch:
            raise ValueError(f"layer={self.layer!r} must give feature maps [B, C, h, w] with B={batch} (a CNN "
                             f"stage; None: the map the extractor global-average-pools), got "
                             f"{type(context).__name__} {tuple(getattr(context, 'shape', ()))}")
        cells = context.shape[2] * context.shape[3]
        if self.top_k is not None and self.top_k > cells:
            raise ValueError(f"top_k={self.top_k} exceeds the {cells} cells of the feature grid "
                             f"{tuple(context.shape[2:])} of layer={self.layer!r}")

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, context: Any = None
                ) -> Region:
        self.check_features(context, x.shape[0])
        cells = context.shape[2] * context.shape[3]
        # One mask per sample in every mode (batch mode shares lam, hence k): each partner's own top cells.
        lam = lam.to(context.device).expand(x.shape[0])
        if self.top_k is None:
            k = ((1.0 - lam) * cells).round().long().clamp(1, max(cells - 1, 1))
        else:
            k = torch.full_like(lam, self.top_k, dtype=torch.long)
        k = torch.where(lam < 1, k, torch.zeros_like(k))  # an unmixed sample gets nothing pasted
        scores = context.float().mean(1)[index.to(context.device)]  # [B, h, w]: the partner's grid
        grid = top_cells_mask(scores, k).unsqueeze(1).float()
        mask = F.interpolate(grid, size=tuple(x.shape[-2:]), mode="nearest") > 0.5
        return Region(mask=mask, lam=lam_from_mask(mask))
