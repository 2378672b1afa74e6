"""FMix (Harris et al., 2020): masks cut from thresholded low-frequency Fourier noise.

A random complex spectrum with power falling off as ``1 / f ** decay_power`` is turned into a
grey-level image by an inverse FFT; the ``(1 - lam) * H * W`` highest pixels come from the partner.
``max_soft > 0`` softens the border into a linear ramp over that fraction of the pixels. lam is
recomputed from the realised mask when ``correct_lam`` is on (default), so targets match pixels.
As in the FMix paper's code, the same noise is drawn in 1, 2 or 3 dims, so signals ``[B, C, T]`` and
volumes ``[B, C, D, H, W]`` get masks of the same kind as images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_positive, check_range, check_type
from ._sampling import sample_beta
from .base import BaseMixer, Region, lam_from_mask
from .registry import register_mixer


@register_mixer("fmix")
class FMix(BaseMixer):
    """Fourier-noise mask mixer.

    Takes ``x`` as signals ``[B, C, T]``, images ``[B, C, H, W]`` or volumes ``[B, C, D, H, W]``; other
    shapes raise ``ValueError`` naming ``x`` and its shape.

    Args:
        alpha: Beta concentration of lam.
        decay_power: spectral decay exponent; larger gives smoother, blobbier masks (default 3).
        max_soft: fraction of pixels on each side of the threshold that get a soft ramp (0 = hard).
        reformulate: draw lam from Beta(alpha + 1, alpha) as the FMix paper's reformulation (not with ``lam``).
        correct_lam: report lam from the realised mask mean.
        **kwargs: see ``BaseMixer``.

    Example:
        >>> import torch
        >>> from automix import create_mixer
        >>> out = create_mixer("fmix", alpha=1.0)(torch.rand(2, 3, 32, 32), torch.rand(2, 4))
        >>> bool(torch.allclose(out.lam, 1 - out.params.mask.float().mean((1, 2, 3)).expand(2)))
        True
        >>> out = create_mixer("fmix", alpha=1.0)(torch.rand(2, 1, 8, 8, 8), torch.rand(2, 4))  # a volume
        >>> out.params.mask.shape
        torch.Size([1, 1, 8, 8, 8])
    """

    name = "fmix"
    spatial_dims = (1, 2, 3)

    def __init__(self, alpha: float = 1.0, *, decay_power: float = 3.0, max_soft: float = 0.0,
                 reformulate: bool = False, correct_lam: bool = True, **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        self.decay_power = check_positive("decay_power", decay_power)
        self.max_soft = check_range("max_soft", max_soft, 0.0, 0.5)
        check_type("reformulate", reformulate, bool, "a bool")
        if reformulate and self.lam is not None:
            raise ValueError(f"reformulate=True draws lam from Beta(alpha + 1, alpha), but lam={self.lam!r} is given; "
                             "give one")
        check_type("correct_lam", correct_lam, bool, "a bool")
        self.reformulate = reformulate
        self.correct_lam = correct_lam
        self.hard = self.max_soft == 0

    def _repr_keys(self) -> tuple[str, ...]:
        return ("decay_power", "max_soft", "reformulate", "correct_lam")

    def _draw_lam(self, n: int, gen: torch.Generator) -> Tensor:
        if self.reformulate and self.lam_sampler is None:
            return sample_beta(self.alpha + 1.0, n, gen, beta=self.alpha)
        return super()._draw_lam(n, gen)

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, **_) -> Region:
        noise = fourier_noise(lam.numel(), tuple(x.shape[2:]), self.decay_power, gen)
        mask = threshold_mask(noise, lam, self.max_soft)
        return Region(mask=mask, lam=lam_from_mask(mask) if self.correct_lam else None)


def fourier_noise(n: int, size: Sequence[int], decay_power: float, gen: torch.Generator) -> Tensor:
    """``n`` low-frequency noise maps [n, *size] (size (T,), (H, W) or (D, H, W)), spectrum amplitude
    ``1 / f ** decay_power``."""
    device, dims = gen.device, len(size)
    # Full frequencies on every axis but the last, which the real inverse FFT halves.
    axes = [torch.fft.fftfreq(side, device=device) for side in size[:-1]]
    axes.append(torch.fft.rfftfreq(size[-1], device=device))
    squared = None
    for i, f in enumerate(axes):
        f = f.view([-1 if j == i else 1 for j in range(dims)]) ** 2
        squared = f if squared is None else squared + f
    freq = squared.sqrt().clamp_min(1.0 / max(size))
    scale = freq.pow(-decay_power)
    spectrum = torch.randn((n, 2) + tuple(scale.shape), generator=gen, device=device) * scale
    return torch.fft.irfftn(torch.complex(spectrum[:, 0], spectrum[:, 1]), s=tuple(size), dim=tuple(range(-dims, 0)))


def threshold_mask(noise: Tensor, lam: Tensor, max_soft: float) -> Tensor:
    """Partner mask [n, 1, *size]: the ``(1 - lam)`` share of highest-noise elements, ramped if soft."""
    n, size = noise.shape[0], tuple(noise.shape[1:])
    pixels = noise[0].numel()
    flat = noise.reshape(n, pixels)
    count = ((1.0 - lam.to(noise.device)) * pixels).round()[:, None]
    if max_soft == 0:
        # The count-th largest value of each map is its threshold: one sort, no ranks needed.
        top = flat.sort(dim=1, descending=True).values
        threshold = top.gather(1, (count.long() - 1).clamp(0, pixels - 1))
        return ((flat >= threshold) & (count > 0)).reshape((n, 1) + size)
    order = flat.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=noise.device).expand(n, pixels))
    # Linear ramp from 1 to 0 across `2 * soft` pixels centred on the threshold rank.
    share = torch.minimum(lam, 1.0 - lam).to(noise.device).clamp_max(max_soft)
    soft = (share * pixels).floor()[:, None].clamp_min(1.0)
    mask = ((count + soft - 0.5 - rank) / (2 * soft)).clamp(0, 1)
    return mask.reshape((n, 1) + size).float()
