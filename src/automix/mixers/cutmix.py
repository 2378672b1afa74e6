"""CutMix (Yun et al., ICCV 2019): paste a box of the partner image whose area is about ``1 - lam``.

Two ways to size the box, as timm offers: from lam ~ Beta(alpha, alpha) with the box centre uniform
over the image and the box clipped at the border (the paper's sampling), or from
``cutmix_minmax=(lo, hi)``, where each side is a uniform fraction of the image side and the box is
placed fully inside the image with every valid origin equally likely. With ``correct_lam=True``
(default, and forced with ``cutmix_minmax``) lam is recomputed from the realised box area, so the
targets match the pixels; switch it off to keep the sampled lam (timm#8 found that better on CUB).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_pair, check_type
from ._sampling import box_area, box_from_lam, box_inside, rand_int
from .base import BaseMixer, MixParams
from .registry import register_mixer


@register_mixer("cutmix")
class CutMix(BaseMixer):
    """Box-pasting mixer.

    Args:
        alpha: Beta concentration of lam (ignored when ``cutmix_minmax`` is given).
        cutmix_minmax: optional (lo, hi) fractions of the image side for the box sides.
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
        >>> bool(out.lam[0] == 1 - (y2 - y1) * (x2 - x1) / 256)
        True
    """

    name = "cutmix"

    def __init__(self, alpha: float = 1.0, *, cutmix_minmax: tuple[float, float] | None = None,
                 correct_lam: bool = True, **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        check_type("correct_lam", correct_lam, bool, "a bool")
        self.cutmix_minmax = None if cutmix_minmax is None else check_pair("cutmix_minmax", cutmix_minmax, 0.0, 1.0)
        self.correct_lam = correct_lam or cutmix_minmax is not None

    def _repr_keys(self) -> tuple[str, ...]:
        return ("cutmix_minmax", "correct_lam")

    def _sample(self, x: Tensor, index: Tensor, lam: Tensor, gen: torch.Generator) -> MixParams:
        height, width = x.shape[-2:]
        n = 1 if self.mode == "batch" else x.shape[0]
        draw = lam[:n]
        if self.cutmix_minmax is None and n == 1:
            box = _one_box(float(draw[0]), height, width, gen)  # plain floats: a few us, not ~20 tensor ops
        elif self.cutmix_minmax is None:
            box = box_from_lam(draw, height, width, gen)
        else:
            lo, hi = self.cutmix_minmax
            cut_h = _uniform_side(n, height, lo, hi, gen)
            cut_w = _uniform_side(n, width, lo, hi, gen)
            # An inactive sample (lam == 1, elem/pair modes) gets an empty box.
            cut_h = torch.where(draw.to(cut_h.device) < 1, cut_h, 0)
            box = box_inside(cut_h, cut_w, height, width, gen)
        if self.correct_lam:
            draw = 1.0 - box_area(box) / float(height * width)
        return MixParams(index, draw.to(lam.device).expand(x.shape[0]).clone(), self.mode, True,
                         (height, width), box=box)


def _one_box(lam: float, height: int, width: int, gen: torch.Generator) -> Tensor:
    """The batch-mode box: same draws and rule as ``box_from_lam`` for one lam, in Python floats."""
    cut = max(0.0, min(1.0, 1.0 - lam)) ** 0.5
    cut_h, cut_w = int(height * cut), int(width * cut)
    u = torch.rand(2, generator=gen, device=gen.device).tolist()
    cy, cx = min(int(u[0] * height), height - 1), min(int(u[1] * width), width - 1)
    y1, x1 = cy - cut_h // 2, cx - cut_w // 2
    clip = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    return torch.tensor([[clip(y1, height), clip(y1 + cut_h, height), clip(x1, width), clip(x1 + cut_w, width)]])


def _uniform_side(n: int, side: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    """Box side lengths uniform over the integers in [side * lo, side * hi] (both ends included)."""
    low, high = int(side * lo), int(side * hi)
    return low + rand_int(torch.full((n,), high - low + 1), gen)
