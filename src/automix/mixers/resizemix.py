"""ResizeMix (Qin et al., 2020): paste the whole partner image, shrunk, into a box of the sample.

The box side is ``tau`` times the image side, ``tau ~ U(scope)`` or, with ``use_alpha=True`` (the
CIFAR configs of the reference), ``tau ~ Beta(alpha, alpha)`` clipped to ``scope``. The box is placed
fully inside the image with every origin equally likely; lam is ``1 - box area / image area``.
With a given ``lam`` (``BaseMixer``), the box side is ``sqrt(1 - lam)`` of the image side instead, so the
pasted area is ``1 - lam`` (up to rounding to whole pixels; ``scope`` is not used), and lam is again the
realised share.
Batch mode resizes once with ``F.interpolate``; the other modes resample every sample into its own
box with one ``grid_sample`` call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_pair, check_type
from ._sampling import box_area, box_inside, box_mask, sample_beta
from .base import BaseMixer, MixParams, Region
from .registry import register_mixer


@register_mixer("resizemix")
class ResizeMix(BaseMixer):
    """Shrunk-partner pasting mixer.

    Args:
        alpha: Beta concentration of tau when ``use_alpha`` is True.
        scope: (lo, hi) range of tau, the box side as a fraction of the image side.
        use_alpha: draw tau from Beta(alpha, alpha) clipped to scope instead of U(scope) (not with ``lam``).
        interpolation: ``"bilinear"`` or ``"nearest"`` (integer segmentation maps always use nearest).
        **kwargs: see ``BaseMixer``.
    """

    name = "resizemix"

    def __init__(self, alpha: float = 1.0, *, scope: tuple[float, float] = (0.1, 0.8), use_alpha: bool = False,
                 interpolation: str = "bilinear", **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        self.scope = check_pair("scope", scope, 0.0, 1.0)
        check_type("use_alpha", use_alpha, bool, "a bool")
        self.use_alpha = use_alpha
        if use_alpha and self.lam is not None:
            raise ValueError(f"use_alpha=True draws the box scale from Beta(alpha, alpha), but lam={self.lam!r} is "
                             "given; give one")
        self.interpolation = check_choice("interpolation", interpolation, ("bilinear", "nearest"))

    def _repr_keys(self) -> tuple[str, ...]:
        return ("scope", "use_alpha", "interpolation")

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, **_) -> Region:
        height, width = x.shape[-2:]
        n = lam.numel()
        lo, hi = self.scope
        if self.lam_sampler is not None:
            tau = (1.0 - lam.to(gen.device)).clamp(0, 1).sqrt()  # the pasted area is 1 - lam
        elif self.use_alpha:
            tau = sample_beta(self.alpha, n, gen).clamp(lo, hi)
        else:
            tau = lo + (hi - lo) * torch.rand(n, generator=gen, device=gen.device)
        cut_h = (tau * height).round().long().clamp(1, height)
        cut_w = (tau * width).round().long().clamp(1, width)
        # Inactive samples (lam == 1 in elem / pair modes) get an empty box.
        active = (lam < 1).to(cut_h.device)
        box = box_inside(torch.stack([cut_h, cut_w], dim=1) * active.unsqueeze(1), (height, width), gen)
        return Region(box=box, lam=1.0 - box_area(box) / float(height * width))

    def preview_parts(self, x: Tensor, params: MixParams) -> dict[str, Any]:
        """The whole partner is shown (``partner_region``), shrunk into the box the mask shows."""
        return {"partner_region": torch.ones(x.shape[0], 1, *x.shape[-2:], dtype=torch.bool),
                "legend": ("original: label weight lam",
                           "partner: label weight 1 - lam",
                           "mask: where the partner is pasted (white)",
                           "mixed: the whole partner (red frame),",
                           "  shrunk into the mask's box",
                           "right: lam | mean of the mask")}

    def _apply(self, t: Tensor, params: MixParams) -> Tensor:
        index = params.index.to(t.device)
        mode = self.interpolation if t.is_floating_point() else "nearest"
        src = t if t.is_floating_point() else t.float()
        if params.box.shape[0] == 1:
            y1, y2, x1, x2 = params.box[0].tolist()
            out = t.clone()
            if y2 > y1 and x2 > x1:
                small = F.interpolate(src[index], size=(y2 - y1, x2 - x1), mode=mode,
                                      **({"align_corners": False} if mode == "bilinear" else {}))
                out[..., y1:y2, x1:x2] = small.to(t.dtype)
            return out
        height, width = t.shape[-2:]
        box = params.box.to(device=t.device, dtype=torch.float32)
        # Affine map from output coordinates inside each box to the whole partner image
        # (normalised [-1, 1] coordinates, align_corners=False).
        sy = height / (box[:, 1] - box[:, 0]).clamp_min(1)
        sx = width / (box[:, 3] - box[:, 2]).clamp_min(1)
        cy = (box[:, 0] + box[:, 1]) / height - 1
        cx = (box[:, 2] + box[:, 3]) / width - 1
        theta = torch.zeros(t.shape[0], 2, 3, device=t.device)
        theta[:, 0, 0], theta[:, 0, 2] = sx, -sx * cx
        theta[:, 1, 1], theta[:, 1, 2] = sy, -sy * cy
        grid = F.affine_grid(theta, (t.shape[0], 1, height, width), align_corners=False)
        grid = grid.to(src.dtype) if src.dtype in (torch.float16, torch.bfloat16, torch.float64) else grid
        warped = F.grid_sample(src[index], grid, mode=mode, align_corners=False).to(t.dtype)
        out = torch.where(box_mask(params.box, (height, width), t.device), warped, t)
        if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out
