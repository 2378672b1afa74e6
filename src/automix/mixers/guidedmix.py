"""GuidedMixup (Kang & Kim, AAAI 2023, arXiv:2306.16612): pixel-wise mixing ratios from two saliency maps, with
partners paired greedily so that their salient regions differ as much as possible.

1. **Saliency**: the model's input gradient (``guide="gradient"``, ``automix.context.input_saliency``; one extra
   forward and backward in eval mode) or the image's spectral residual (``guide="spectral"``, Hou & Zhang 2007;
   no model), blurred by a Gaussian (``blur_size``, ``blur_sigma``) and normalised to sum 1 per image.
2. **Pairing** (``pairing="greedy"``): the pairwise L2 distances of the maps; starting from the most distant pair,
   each partner picks as its own partner the most distant sample not yet picked, closing one cycle through the
   batch (every sample is the partner of exactly one other). The distance matrix is one batched ``cdist``; the cycle
   is ``B`` steps of a row argmax on it. ``pairing="perm"`` / ``"flip"`` keep the usual random pairing.
3. **Mask**: the partner's weight at each pixel is ``s_partner / (s_own + s_partner)`` and ``lam = 1 - mean(mask)``,
   so a sample keeps the pixels where it is the more salient (``alpha`` is not used: lam comes from the maps).

Read from ``openmixup/models/augments/guidedmix.py`` of ``Westlake-AI/openmixup`` at ``477fcf0`` (its
``guided_type='ap', condition='greedy', size=(7, 7), sigma=(3, 3)``) and ``3neutronstar/GuidedMixup``; not copied.
The spectral residual works on the grey image at its own size (the reference resizes images above 128 px to 128).

>>> import torch
>>> mixer = GuidedMix(num_classes=3, guide="spectral")
>>> x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
>>> out = mixer(x, y, torch.Generator().manual_seed(0))  # the spectral guide needs no model
>>> tuple(out.x.shape), tuple(out.params.mask.shape), sorted(out.index.tolist())
((4, 3, 32, 32), (4, 1, 32, 32), [0, 1, 2, 3])
>>> torch.allclose(out.lam, 1 - out.params.mask.mean((1, 2, 3)))
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_positive, check_positive_int
from ._sampling import PAIRINGS
from .base import BaseMixer, MixParams, Region, lam_from_mask
from .registry import register_mixer

GUIDES = ("gradient", "spectral")
# The chance that a batch is mixed, by guide, from the authors' commands (3neutronstar/GuidedMixup README at
# f5c7881: Guided-AP --mix_prob 0.8, Guided-SR --mix_prob 0.5, CIFAR-100 and Tiny-ImageNet).
PROB = {"gradient": 0.8, "spectral": 0.5}


@register_mixer("guidedmix")
class GuidedMix(BaseMixer):
    """GuidedMixup: saliency-ratio masks between greedily paired samples (arXiv:2306.16612).

    Args:
        alpha: unused by the mask (lam comes from the saliency maps); kept for the common interface.
        guide: ``"gradient"`` (the model's input-gradient saliency) or ``"spectral"`` (spectral residual, no model).
        pairing: ``"greedy"`` (most different saliency, the paper's), ``"perm"`` or ``"flip"``.
        blur_size: odd side of the Gaussian blur of the maps (1: none).
        blur_sigma: its standard deviation in pixels.
        prob: the chance that a batch is mixed; ``None``: the authors' value for the guide, 0.8 for
            ``"gradient"`` (their Guided-AP) and 0.5 for ``"spectral"`` (Guided-SR). The masks' means sit near 0.5
            by construction, so a batch always mixed trains on half-and-half images only.
        **kwargs: see ``BaseMixer`` (with ``pairing="greedy"``, ``mode="pair"`` pairs the samples greedily two by
            two instead of one cycle; as in every mixer's pair mode both members then take the leader's draw: its mask
            and lam).

    Context: saliency [B, H, W] with ``guide="gradient"`` (``needs = "saliency"``); none with ``"spectral"``.
    """

    name = "guidedmix"
    needs = "saliency"
    hard = False

    def __init__(self, alpha: float = 1.0, *, guide: str = "gradient", pairing: str = "greedy", blur_size: int = 7,
                 blur_sigma: float = 3.0, prob: float | None = None, **kwargs) -> None:
        self.greedy = check_choice("pairing", pairing, ("greedy",) + PAIRINGS) == "greedy"
        check_choice("guide", guide, GUIDES)
        if prob is None:  # the authors' mix_prob: every batch mixed at lam ~ 0.5 is the strongest regulariser
            prob = PROB[guide]
        super().__init__(alpha, pairing="perm" if self.greedy else pairing, prob=prob, **kwargs)
        if self.lam is not None:
            raise ValueError(f"lam={self.lam!r} does not apply to guidedmix: its ratio is the saliency maps' (each "
                             "pixel's partner share is the partner's saliency over the sum), no lambda is drawn")
        self.guide = check_choice("guide", guide, GUIDES)
        self.needs = "saliency" if guide == "gradient" else None  # the spectral guide reads only the image
        self.blur_size = check_positive_int("blur_size", blur_size)
        if self.blur_size % 2 == 0:
            raise ValueError(f"blur_size must be odd, got {blur_size!r}")
        self.blur_sigma = check_positive("blur_sigma", blur_sigma)
        self.pairing_name = pairing

    def _repr_keys(self) -> tuple[str, ...]:
        return ("guide", "pairing_name", "blur_size", "blur_sigma")

    def context_options(self) -> dict:
        return {"reduce": "l2"}

    def _maps(self, x: Tensor, context) -> Tensor:
        if self.guide == "spectral":
            sal = spectral_residual(x)
        else:
            if not isinstance(context, Tensor) or tuple(context.shape) != (x.shape[0], *x.shape[-2:]):
                raise ValueError(f"context must be a saliency map [B, H, W] = {(x.shape[0], *x.shape[-2:])}, got "
                                 f"{tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__}")
            sal = context.detach().float().to(x.device).abs()
        sal = gaussian_blur(sal, self.blur_size, self.blur_sigma)
        return sal / sal.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1)

    def _params(self, x: Tensor, index: Tensor, lam: Tensor, gen: torch.Generator, context=None) -> MixParams:
        sal = self._maps(x, context)
        if self.greedy:
            dist = torch.cdist(sal.flatten(1), sal.flatten(1))
            index = (greedy_pairs(dist) if self.mode == "pair" else greedy_cycle(dist)).to(index.device)
        self._sal = sal
        try:
            return super()._params(x, index, lam, gen, context)
        finally:
            self._sal = None

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, context=None) -> Region:
        sal = self._sal
        other = sal[index.to(sal.device)]
        mask = (other / (sal + other).clamp_min(1e-12)).unsqueeze(1)  # the partner's share at each pixel
        mask = torch.where(index.to(sal.device).view(-1, 1, 1, 1) == torch.arange(len(index), device=sal.device)
                           .view(-1, 1, 1, 1), torch.zeros_like(mask), mask)  # a sample paired with itself: unmixed
        return Region(mask=mask, lam=lam_from_mask(mask))


def greedy_pairs(dist: Tensor) -> Tensor:
    """Partner index (long [B], symmetric: ``index[index[i]] == i``) for ``mode="pair"``: the most distant pair
    first, then the most distant among the samples left (an odd one out is paired with itself)."""
    batch = dist.shape[0]
    d = dist.detach().double().cpu().clone()
    d.fill_diagonal_(-math.inf)
    index = torch.arange(batch)
    for _ in range(batch // 2):
        i, j = divmod(int(d.argmax()), batch)
        index[i], index[j] = j, i
        d[[i, j], :] = -math.inf
        d[:, [i, j]] = -math.inf
    return index


def greedy_cycle(dist: Tensor) -> Tensor:
    """Partner index (long [B], one cycle through the batch) built greedily on the distance matrix ``dist`` [B, B]:
    the most distant pair first, then each partner's most distant sample not yet in the cycle."""
    batch = dist.shape[0]
    if batch == 1:
        return torch.zeros(1, dtype=torch.long)
    d = dist.detach().double().cpu().clone()
    d.fill_diagonal_(-math.inf)
    index = torch.empty(batch, dtype=torch.long)
    row, col = divmod(int(d.argmax()), batch)
    first = row
    index[row] = col
    d[:, row] = -math.inf
    for _ in range(batch - 2):
        row = col
        col = int(d[row].argmax())
        index[row] = col
        d[:, row] = -math.inf
    index[col] = first
    return index


def gaussian_blur(maps: Tensor, size: int, sigma: float) -> Tensor:
    """[B, H, W] maps blurred by a ``size`` x ``size`` Gaussian (separable, reflected borders)."""
    if size == 1:
        return maps
    half = size // 2
    t = torch.arange(size, device=maps.device, dtype=torch.float32) - half
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = maps.float().unsqueeze(1)
    mode = "reflect" if min(maps.shape[-2:]) > half else "replicate"
    out = F.conv2d(F.pad(out, (half, half, 0, 0), mode=mode), kernel.view(1, 1, 1, size))
    out = F.conv2d(F.pad(out, (0, 0, half, half), mode=mode), kernel.view(1, 1, size, 1))
    return out[:, 0]


def spectral_residual(x: Tensor) -> Tensor:
    """Spectral-residual saliency [B, H, W] of images [B, C, H, W] (Hou & Zhang, CVPR 2007): the log amplitude
    spectrum minus its 3 x 3 local mean, back to the image with the original phase; its magnitude."""
    grey = x.detach().float().mean(1) if x.shape[1] != 3 else \
        (x.detach().float() * x.new_tensor([0.299, 0.587, 0.114]).float().view(1, 3, 1, 1)).sum(1)
    freq = torch.fft.fft2(grey)
    mag = freq.abs().clamp_min(1e-10)
    log = mag.log()
    local = F.avg_pool2d(F.pad(log.unsqueeze(1), (1, 1, 1, 1), mode="replicate"), 3, stride=1)[:, 0]
    residual = torch.exp(log - local)
    return torch.fft.ifft2(freq / mag * residual).abs()
