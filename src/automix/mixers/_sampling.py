"""Random draws shared by the mixers: Beta ratios, partner indices and boxes.

Boxes work for any number ``d`` of spatial dims (signals [B, C, T], images, volumes [B, C, D, H, W]): a box
is a long row of ``2d`` values, (lo, hi) per spatial dim, i.e. ``(y1, y2, x1, x2)`` for images.

Every function takes an explicit ``torch.Generator`` and draws on that generator's device
(the CPU for the default generator), so a seeded generator reproduces a draw exactly and the
hot path never reads a value back from an accelerator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PAIRINGS = ("perm", "flip")


def sample_beta(alpha: float, n: int, generator: torch.Generator, beta: float | None = None) -> Tensor:
    """Draw ``n`` values from Beta(alpha, beta) (beta defaults to alpha) as float32.

    Uses the Gamma-ratio construction so the draw comes from ``generator``
    (``torch.distributions.Beta`` cannot take a generator).
    """
    if beta is None:
        conc = torch.full((2, n), float(alpha), device=generator.device)
    else:
        conc = torch.tensor([[float(alpha)], [float(beta)]], device=generator.device).expand(2, n).contiguous()
    ga, gb = torch._standard_gamma(conc, generator=generator)
    # Both gammas can underflow to 0 for tiny alpha; that draw gives 0 rather than NaN.
    return ga / (ga + gb).clamp_min(torch.finfo(torch.float32).tiny)


def pair_index(batch: int, pairing: str, involution: bool, generator: torch.Generator) -> Tensor:
    """Partner index for every sample of a batch of ``batch`` samples.

    ``pairing="perm"`` pairs through a random permutation, ``"flip"`` pairs sample ``i`` with
    ``batch - 1 - i`` (timm's choice). With ``involution=True`` (pair mode) the pairing is made
    symmetric: if ``i`` is paired with ``j`` then ``j`` is paired with ``i``; for odd batches the
    sample left over is paired with itself.
    """
    device = generator.device
    if pairing == "flip":
        return torch.arange(batch - 1, -1, -1, device=device)
    perm = torch.randperm(batch, generator=generator, device=device)
    if not involution:
        return perm
    index = torch.arange(batch, device=device)
    half = batch // 2
    first, second = perm[:half], perm[half : 2 * half]
    index[first] = second
    index[second] = first
    return index


def pair_leader(index: Tensor) -> Tensor:
    """For a symmetric pairing, the smaller of (i, index[i]): the sample whose draw a pair shares."""
    return torch.minimum(torch.arange(index.numel(), device=index.device), index)


def rand_int(high: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform integers in ``[0, high)`` for a tensor of (positive) upper bounds."""
    u = torch.rand(high.shape, generator=generator, device=generator.device)
    return (u * high).floor().long().clamp_max(high.long() - 1).clamp_min(0)


def box_from_lam(lam: Tensor, size: Sequence[int], generator: torch.Generator) -> Tensor:
    """CutMix boxes whose volume is about ``1 - lam``, centred uniformly and clipped to the input.

    ``size`` is the spatial size: ``(T,)``, ``(H, W)`` or ``(D, H, W)``; each side is ``(1 - lam) ** (1 / d)``
    of the input's. Returns a long tensor [N, 2d] of (lo, hi) per spatial dim, ``(y1, y2, x1, x2)`` for
    images. Clipping at the border makes the realised volume smaller than ``1 - lam``; callers correct
    lam from the box when asked to.
    """
    dims = len(size)
    sides = torch.tensor(tuple(size), device=lam.device)
    share = (1.0 - lam).clamp(0, 1)
    share = share.sqrt() if dims == 2 else share.pow(1.0 / dims)  # sqrt keeps the image draws bit-identical
    cut = (sides * share.unsqueeze(1)).floor().long()  # [n, d]
    centre = rand_int(sides.expand(lam.numel(), dims), generator).to(cut.device)
    return box_around(centre, cut, size)


def box_around(centre: Tensor, cut: Tensor, size: Sequence[int]) -> Tensor:
    """Boxes [n, 2d] (lo, hi per dim) of sides ``cut`` [n, d] centred at ``centre`` [n, d], clipped to ``size``."""
    start = centre - cut // 2
    limit = torch.tensor(tuple(size), device=cut.device)
    lo = torch.minimum(start.clamp_min(0), limit)
    hi = torch.minimum((start + cut).clamp_min(0), limit)
    return torch.stack([lo, hi], dim=2).flatten(1)


def box_inside(cut: Tensor, size: Sequence[int], generator: torch.Generator) -> Tensor:
    """Boxes of sides ``cut`` [n, d] placed fully inside ``size``, every valid origin equally likely.

    Returns a long tensor [n, 2d] of (lo, hi) per spatial dim. Origins are drawn one dim at a time (rows,
    then columns for images).
    """
    lo = torch.stack([rand_int(side - cut[:, i] + 1, generator) for i, side in enumerate(size)], dim=1)
    return torch.stack([lo, lo + cut.to(lo.device)], dim=2).flatten(1)


def box_mask(box: Tensor, size: Sequence[int], device: torch.device) -> Tensor:
    """Boolean masks [N, 1, *size] that are True inside each (lo, hi per dim) box."""
    box = box.to(device)
    dims = len(size)
    mask = None
    for i, side in enumerate(size):
        pos = torch.arange(side, device=device)
        inside = (pos >= box[:, 2 * i : 2 * i + 1]) & (pos < box[:, 2 * i + 1 : 2 * i + 2])  # [N, side]
        shape = [box.shape[0]] + [1] * dims
        shape[1 + i] = side
        inside = inside.view(shape)
        mask = inside if mask is None else mask & inside
    return mask.unsqueeze(1)


def box_area(box: Tensor) -> Tensor:
    """Volume of each (lo, hi per dim) box [N, 2d] in elements (area for images), as float32."""
    return (box[:, 1::2] - box[:, 0::2]).prod(dim=1).float()
