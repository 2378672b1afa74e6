"""GridMix (Baek et al., Pattern Recognition 2021): a grid of holes from the partner inside a crop.

A crop region of area ``cut_area_ratio`` of the image and aspect ``cut_aspect_ratio`` is placed
uniformly inside the image and divided into ``n_holes`` patches across; each patch shows the
partner in a hole whose sides are ``sqrt(1 - lam)`` of the patch's (at least 1 pixel, at most the
patch side minus 1). lam is always the realised share of the sample's own pixels.
Per-batch draws in batch mode, per-sample draws otherwise, all as tensor ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_pair, check_type
from ._sampling import rand_int
from .base import BaseMixer, Region, lam_from_mask
from .registry import register_mixer


def _as_pair(name: str, value, low: float, high: float) -> tuple[float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    return check_pair(name, value, low, high)


@register_mixer("gridmix")
class GridMix(BaseMixer):
    """Grid-of-holes mixer (OpenMixup's defaults).

    Args:
        alpha: Beta concentration of lam (sets the hole size within each patch).
        n_holes: (lo, hi) integer range of patches across the crop (default (2, 6)).
        hole_aspect_ratio: (lo, hi) or value, patch height / width (default 1).
        cut_area_ratio: (lo, hi) or value, crop area / image area (default (0.5, 1)).
        cut_aspect_ratio: (lo, hi) or value, crop height / width (default (0.5, 2)).
        **kwargs: see ``BaseMixer``.
    """

    name = "gridmix"

    def __init__(self, alpha: float = 1.0, *, n_holes: int | tuple[int, int] = (2, 6),
                 hole_aspect_ratio: float | tuple[float, float] = 1.0,
                 cut_area_ratio: float | tuple[float, float] = (0.5, 1.0),
                 cut_aspect_ratio: float | tuple[float, float] = (0.5, 2.0), **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        holes = (n_holes, n_holes) if isinstance(n_holes, int) else n_holes
        check_type("n_holes", holes, (tuple, list), "an int or (lo, hi) pair of ints")
        if len(holes) != 2 or not all(isinstance(h, int) and not isinstance(h, bool) for h in holes):
            raise TypeError(f"n_holes must be an int or a (lo, hi) pair of ints, got {n_holes!r}")
        self.n_holes = _as_pair("n_holes", holes, 1, 10_000)
        self.hole_aspect_ratio = _as_pair("hole_aspect_ratio", hole_aspect_ratio, 1e-3, 1e3)
        self.cut_area_ratio = _as_pair("cut_area_ratio", cut_area_ratio, 1e-6, 1.0)
        self.cut_aspect_ratio = _as_pair("cut_aspect_ratio", cut_aspect_ratio, 1e-3, 1e3)

    def _repr_keys(self) -> tuple[str, ...]:
        return ("n_holes", "hole_aspect_ratio", "cut_area_ratio", "cut_aspect_ratio")

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, **_) -> Region:
        height, width = x.shape[-2:]
        n, dev = lam.numel(), gen.device

        def uniform(bounds: tuple[float, float]) -> Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=gen, device=dev)

        holes = int(self.n_holes[0]) + rand_int(torch.full((n,), int(self.n_holes[1] - self.n_holes[0] + 1)), gen)
        area, aspect = uniform(self.cut_area_ratio), uniform(self.cut_aspect_ratio)
        # Crop of the drawn area and aspect (height / width), kept inside the image.
        cut_w = (area * height * width / aspect).sqrt().floor().clamp(1, width)
        cut_h = (cut_w * aspect).floor().clamp(1, height)
        y0 = rand_int(height - cut_h + 1, gen)
        x0 = rand_int(width - cut_w + 1, gen)
        # Patches across the crop, then a hole of side sqrt(1 - lam) of the patch in each.
        patch_w = (cut_w / holes.clamp_max(cut_w)).ceil().clamp_min(2)
        patch_h = (patch_w * uniform(self.hole_aspect_ratio)).floor().clamp_min(2)
        ratio = (1.0 - lam.to(dev)).clamp(0, 1).sqrt()
        hole_w = torch.minimum((patch_w * ratio).floor().clamp_min(1), patch_w - 1)
        hole_h = torch.minimum((patch_h * ratio).floor().clamp_min(1), patch_h - 1)
        rows = torch.arange(height, device=dev)[None, :] - y0[:, None]
        cols = torch.arange(width, device=dev)[None, :] - x0[:, None]
        in_rows = (rows >= 0) & (rows < cut_h[:, None]) & (rows % patch_h[:, None] < hole_h[:, None])
        in_cols = (cols >= 0) & (cols < cut_w[:, None]) & (cols % patch_w[:, None] < hole_w[:, None])
        mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return Region(mask=mask, lam=lam_from_mask(mask))
