"""SmoothMix (Lee et al., CVPR-W 2020): a soft Gaussian blob of the partner, no hard edges.

The partner weight is ``exp(-d^2 / (2 sigma^2))`` around a centre drawn uniformly over the image,
with ``sigma`` uniform in ``sigma_range`` times the image height (the reference uses [0.25, 0.5]).
As in the reference, the mixing ratio is set by the mask itself: lam is the realised mean of the
sample's own weight, and ``alpha`` is accepted for a uniform interface but not used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_pair
from .base import BaseMixer, Region, lam_from_mask
from .registry import register_mixer


@register_mixer("smoothmix")
class SmoothMix(BaseMixer):
    """Gaussian soft-mask mixer.

    Args:
        alpha: accepted and checked, unused (the ratio comes from the mask, as in the reference).
        lam: refused (``ValueError``): no lambda is drawn, the blob sets it.
        sigma_range: (lo, hi) of sigma as a fraction of the image height.
        **kwargs: see ``BaseMixer``.
    """

    name = "smoothmix"
    hard = False

    def __init__(self, alpha: float = 1.0, *, sigma_range: tuple[float, float] = (0.25, 0.5), **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        if self.lam is not None:
            raise ValueError(f"lam={self.lam!r} does not apply to smoothmix: its ratio is the realised share of the "
                             "Gaussian blob (sigma_range), no lambda is drawn")
        self.sigma_range = check_pair("sigma_range", sigma_range, 1e-3, 100.0)

    def _repr_keys(self) -> tuple[str, ...]:
        return ("sigma_range",)

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, **_) -> Region:
        height, width = x.shape[-2:]
        n, dev = lam.numel(), gen.device
        cy = torch.rand(n, generator=gen, device=dev) * height
        cx = torch.rand(n, generator=gen, device=dev) * width
        lo, hi = self.sigma_range
        sigma = (lo + (hi - lo) * torch.rand(n, generator=gen, device=dev)) * height
        dy = (torch.arange(height, device=dev)[None, :] + 0.5 - cy[:, None]) ** 2
        dx = (torch.arange(width, device=dev)[None, :] + 0.5 - cx[:, None]) ** 2
        dist = dy[:, :, None] + dx[:, None, :]
        mask = torch.exp(-dist / (2 * sigma[:, None, None] ** 2)).unsqueeze(1)
        return Region(mask=mask, lam=lam_from_mask(mask))
