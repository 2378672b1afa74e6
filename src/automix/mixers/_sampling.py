"""Random draws shared by the mixers: Beta ratios, partner indices and boxes.

Every function takes an explicit ``torch.Generator`` and draws on that generator's device
(the CPU for the default generator), so a seeded generator reproduces a draw exactly and the
hot path never reads a value back from an accelerator.
"""

from __future__ import annotations

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


def box_from_lam(lam: Tensor, height: int, width: int, generator: torch.Generator) -> Tensor:
    """CutMix boxes whose area is about ``1 - lam``, centred uniformly and clipped to the image.

    Returns a long tensor [N, 4] of (y1, y2, x1, x2). Clipping at the border makes the realised
    area smaller than ``1 - lam``; callers correct lam from the box when asked to.
    """
    sides = torch.tensor([height, width], device=lam.device)
    cut = (sides * (1.0 - lam).clamp(0, 1).sqrt().unsqueeze(1)).floor().long()  # [n, 2]: (h, w)
    centre = rand_int(sides.expand(lam.numel(), 2), generator).to(cut.device)
    return box_around(centre, cut, height, width)


def box_around(centre: Tensor, cut: Tensor, height: int, width: int) -> Tensor:
    """Boxes [n, 4] (y1, y2, x1, x2) of sizes ``cut`` [n, 2] centred at ``centre`` [n, 2], clipped."""
    start = centre - cut // 2
    limit = torch.tensor([height, width], device=cut.device)
    lo = torch.minimum(start.clamp_min(0), limit)
    hi = torch.minimum((start + cut).clamp_min(0), limit)
    return torch.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], dim=1)


def box_inside(cut_h: Tensor, cut_w: Tensor, height: int, width: int, generator: torch.Generator) -> Tensor:
    """Boxes of the given sizes placed fully inside the image, every valid origin equally likely.

    Returns a long tensor [N, 4] of (y1, y2, x1, x2).
    """
    y1 = rand_int(height - cut_h + 1, generator)
    x1 = rand_int(width - cut_w + 1, generator)
    return torch.stack([y1, y1 + cut_h, x1, x1 + cut_w], dim=1)


def box_mask(box: Tensor, height: int, width: int, device: torch.device) -> Tensor:
    """Boolean masks [N, 1, H, W] that are True inside each (y1, y2, x1, x2) box."""
    box = box.to(device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= box[:, 0:1]) & (rows < box[:, 1:2])
    in_cols = (cols >= box[:, 2:3]) & (cols < box[:, 3:4])
    return (in_rows[:, None, :, None] & in_cols[:, None, None, :])


def box_area(box: Tensor) -> Tensor:
    """Area of each (y1, y2, x1, x2) box, as float32."""
    return ((box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])).float()
