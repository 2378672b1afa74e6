"""Mixup (Zhang et al., ICLR 2018): ``x = lam * x + (1 - lam) * x[index]``, lam ~ Beta(alpha, alpha).

Works on any batch ``[B, ...]`` (images, feature vectors, regression inputs), not only images.
"""

from __future__ import annotations

from .base import BaseMixer
from .registry import register_mixer


@register_mixer("mixup")
class Mixup(BaseMixer):
    """Linear interpolation of samples and targets.

    Args: see ``BaseMixer`` (alpha, prob, mode, pairing, num_classes, label_smoothing, generator).

    Example:
        >>> import torch
        >>> from automix import create_mixer
        >>> mixer = create_mixer("mixup", alpha=1.0, num_classes=3)
        >>> out = mixer(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0))
        >>> out.x.shape, out.y.shape, out.lam.dtype
        (torch.Size([4, 3, 8, 8]), torch.Size([4, 3]), torch.float32)
        >>> bool(torch.allclose(out.y.sum(1), torch.ones(4)))
        True
    """

    name = "mixup"
    spatial = False
    hard = False
