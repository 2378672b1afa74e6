"""CutMix (Yun et al., ICCV 2019): paste a box of the partner image whose area is about ``1 - lam``.

Two ways to size the box, as timm offers: from lam ~ Beta(alpha, alpha) with the box centre uniform
over the image and the box clipped at the border (the paper's sampling), or from
``cutmix_minmax=(lo, hi)``, where each side is a uniform fraction of the image side and the box is
placed fully inside the image with every valid origin equally likely. With ``correct_lam=True``
(default, and forced with ``cutmix_minmax``) lam is recomputed from the realised box area, so the
targets match the pixels; switch it off to keep the sampled lam (timm#8 found that better on CUB).

A box is defined in any number of dims, so signals ``[B, C, T]`` get an interval and volumes
``[B, C, D, H, W]`` a cuboid, each side ``(1 - lam) ** (1 / d)`` of the input's (the square root for
images), with lam corrected from the realised length or volume the same way.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_pair, check_type
from ._sampling import box_area, box_from_lam, box_inside, rand_int
from .base import BaseMixer, Region
from .registry import register_mixer


@register_mixer("cutmix")
class CutMix(BaseMixer):
    """Box-pasting mixer.

    Takes ``x`` as signals ``[B, C, T]``, images ``[B, C, H, W]`` or volumes ``[B, C, D, H, W]``; other
    shapes raise ``ValueError`` naming ``x`` and its shape.

    Args:
        alpha: Beta concentration of lam (ignored when ``cutmix_minmax`` is given).
        cutmix_minmax: optional (lo, hi) fractions of the input's side for every box side (not with ``lam``:
            both would size the box).
        correct_lam: recompute lam from the clipped box area (always on with ``cutmix_minmax``).
        **kwargs: see ``BaseMixer`` (prob, mode, pairing, num_classes, label_smoothing, generator).

    Example:
        >>> import torch
        >>> from automix import create_mixer
        >>> mixer = create_mixer("cutmix", alpha=1.0, mode="elem")
        >>> out = mixer(torch.rand(4, 3, 16, 16), torch.rand(4, 5), torch.Generator().manual_seed(0))
        >>> out.lam.shape  # one box, and one lam, per sample in elem mode
        torch.Size([4])
        >>> y1, y2, x1, x2 = out.params.box[0].tolist()
        >>> abs(float(out.lam[0]) - (1 - (y2 - y1) * (x2 - x1) / 256)) < 1e-6  # lam from the realised box
        True
        >>> out = mixer(torch.rand(4, 2, 100), torch.rand(4, 5), torch.Generator().manual_seed(1))  # a signal
        >>> t1, t2 = out.params.box[0].tolist()  # the box is an interval
        >>> abs(float(out.lam[0]) - (1 - (t2 - t1) / 100)) < 1e-6
        True
    """

    name = "cutmix"
    spatial_dims = (1, 2, 3)

    def __init__(self, alpha: float = 1.0, *, cutmix_minmax: tuple[float, float] | None = None,
                 correct_lam: bool = True, **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        check_type("correct_lam", correct_lam, bool, "a bool")
        self.cutmix_minmax = None if cutmix_minmax is None else check_pair("cutmix_minmax", cutmix_minmax, 0.0, 1.0)
        if self.cutmix_minmax is not None and self.lam is not None:
            raise ValueError(f"cutmix_minmax={cutmix_minmax!r} sizes the box, but lam={self.lam!r} is given; give one")
        self.correct_lam = correct_lam or cutmix_minmax is not None

    def _repr_keys(self) -> tuple[str, ...]:
        return ("cutmix_minmax", "correct_lam")

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, **_) -> Region:
        size = tuple(x.shape[2:])
        n = lam.numel()
        if self.cutmix_minmax is None and n == 1:
            box = _one_box(float(lam[0]), size, gen)  # plain floats: a few us, not ~20 tensor ops
        elif self.cutmix_minmax is None:
            box = box_from_lam(lam, size, gen)
        else:
            lo, hi = self.cutmix_minmax
            cut = torch.stack([_uniform_side(n, side, lo, hi, gen) for side in size], dim=1)
            # An inactive sample (lam == 1, elem/pair modes) gets an empty box.
            cut[:, 0] = torch.where(lam.to(cut.device) < 1, cut[:, 0], 0)
            box = box_inside(cut, size, gen)
        return Region(box=box, lam=1.0 - box_area(box) / float(math.prod(size)) if self.correct_lam else None)


def _one_box(lam: float, size: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """The batch-mode box: same draws and rule as ``box_from_lam`` for one lam, in Python floats."""
    share = max(0.0, min(1.0, 1.0 - lam))
    cut = share ** 0.5 if len(size) == 2 else share ** (1.0 / len(size))
    u = torch.rand(len(size), generator=gen, device=gen.device).tolist()
    bounds = []
    for side, ui in zip(size, u):
        length = int(side * cut)
        start = min(int(ui * side), side - 1) - length // 2
        bounds += [min(max(start, 0), side), min(max(start + length, 0), side)]
    return torch.tensor([bounds])


def _uniform_side(n: int, side: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    """Box side lengths uniform over the integers in [side * lo, side * hi] (both ends included)."""
    low, high = int(side * lo), int(side * hi)
    return low + rand_int(torch.full((n,), high - low + 1), gen)
