"""SaliencyMix (Uddin et al., ICLR 2021): a CutMix box centred on the partner's most salient pixel.

The reference uses OpenCV's fine-grained static saliency (centre-surround intensity differences,
Montabone & Ruiz 2010). We compute the same kind of map in torch, with no OpenCV: the grey image's
on-centre and off-centre differences against box-blurred surrounds at several scales, summed.
The box has area about ``1 - lam``, is centred on the saliency peak of the partner and clipped at
the border; lam is then corrected from the realised area (switchable). In batch mode one box serves
the whole batch, centred on the peak of the first sample's partner (as the reference does);
in the other modes every sample gets the peak of its own partner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_type
from ._sampling import box_area, box_around
from .base import BaseMixer, Region
from .registry import register_mixer

_GREY = (0.299, 0.587, 0.114)


@torch.no_grad()
def saliency_map(x: Tensor, scales: tuple[int, ...] = (1, 2, 3, 4)) -> Tensor:
    """Centre-surround saliency [B, H, W] (float32) of a batch [B, C, H, W]; larger = more salient."""
    x = x.detach().float()
    if x.shape[1] == 3:
        grey = (x * x.new_tensor(_GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
    else:
        grey = x.mean(1, keepdim=True)
    total = torch.zeros_like(grey)
    for s in scales:
        surround = F.avg_pool2d(grey, 2 * s + 1, stride=1, padding=s, count_include_pad=False)
        total += (grey - surround).abs()  # on-centre and off-centre responses together
    return total[:, 0]


def peak_location(sal: Tensor) -> tuple[Tensor, Tensor]:
    """(row, col) long tensors of each map's maximum (the first one on ties)."""
    width = sal.shape[-1]
    flat = sal.flatten(1).argmax(dim=1)
    return flat // width, flat % width


@register_mixer("saliencymix")
class SaliencyMix(BaseMixer):
    """Saliency-centred CutMix.

    Args:
        alpha: Beta concentration of lam.
        correct_lam: recompute lam from the clipped box area (default True).
        **kwargs: see ``BaseMixer``.
    """

    name = "saliencymix"

    def __init__(self, alpha: float = 1.0, *, correct_lam: bool = True, **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        check_type("correct_lam", correct_lam, bool, "a bool")
        self.correct_lam = correct_lam

    def _repr_keys(self) -> tuple[str, ...]:
        return ("correct_lam",)

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, **_) -> Region:
        height, width = x.shape[-2:]
        partners = index[:lam.numel()].to(x.device)
        cy, cx = peak_location(saliency_map(x[partners]))
        cy, cx = cy.to(gen.device), cx.to(gen.device)
        draw = lam.to(gen.device)
        sides = torch.tensor([height, width], device=draw.device)
        cut = (sides * (1.0 - draw).clamp(0, 1).sqrt().unsqueeze(1)).floor().long()
        box = box_around(torch.stack([cy, cx], dim=1), cut, (height, width))
        return Region(box=box, lam=1.0 - box_area(box) / float(height * width) if self.correct_lam else None)
