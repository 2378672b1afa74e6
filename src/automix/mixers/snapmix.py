"""SnapMix (Huang et al., "SnapMix: Semantically Proportional Mixing for Augmenting Fine-grained Data", AAAI 2021,
arXiv:2012.04846): a CutMix box, and each image's label weighted by the share of its class activation map (CAM)
that the mixed image shows.

Given the CAMs of the label classes ``S`` [B, h, w] (``automix.context.class_activation_map``: the training model's
own classifier weights on its pooled feature map), each map is resized to the image, shifted to a minimum of 0
and normalised to sum 1 (a flat map counts every pixel alike). As in the paper, two boxes are drawn from two
lambdas: the partner's content in its box ``M'`` is resized into the box ``M`` of sample ``i``:

* ``lam[i]`` (own label) = ``1 - sum(S_i * M)``: the semantic mass of image ``i`` that stays visible;
* ``lam_partner[i]`` (partner's label) = ``sum(S_index[i] * M')``: the partner's semantic mass cut out and pasted.

The two need not sum to 1 (``MixParams.lam_partner``); targets are ``lam * y + lam_partner * y[index]``, so a
pair of one class gets their sum on that class. Train on ``out.y`` (soft targets): a loss interpolated from
``(index, lam)`` alone (``mixed_cross_entropy``) would assume the partner's weight is ``1 - lam``.
``same_box=True`` cuts the partner's patch from the box it is pasted into (no resizing: a plain box blend, which
mixes segmentation maps without resampling them).

Reference: Shaoli-Huang/SnapMix ``utils/mixmethod.py`` (``snapmix``, ``get_spm``) and ``snapmix`` in
``openmixup/models/augments/snapmix.py`` of Westlake-AI/openmixup at commit 37e1372. Deliberate differences: a
same-class pair gets ``lam + lam_partner`` once (the reference adds each weight to the other and then counts
the class twice); the resize is bilinear with ``align_corners=False`` (the reference's uses ``True``), so a
patch resized to its own size is unchanged; the CAM pass runs in eval mode (as OpenMixup's, so BN statistics
follow the training batches only). As in the reference, a draw whose partner box is empty mixes nothing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_type
from ._sampling import box_area, box_from_lam, box_mask
from .base import BaseMixer, MixParams, Region, blend
from .registry import register_mixer


def normalised_cam(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """CAMs [B, h, w] resized (bilinear) to ``size``, minus each map's minimum, divided by its sum: float32
    [B, *size], every map summing to 1 (a constant map becomes uniform)."""
    maps = F.interpolate(cam.float().unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    maps = maps - maps.flatten(1).amin(1).view(-1, 1, 1)
    total = maps.flatten(1).sum(1).view(-1, 1, 1)
    flat = torch.full_like(maps, 1.0 / (size[0] * size[1]))
    return torch.where(total > 1e-12, maps / total.clamp_min(1e-12), flat)


@register_mixer("snapmix")
class SnapMix(BaseMixer):
    """CutMix box with CAM-proportional label weights (two per sample: own and partner's).

    Reads the ``"cam"`` context (``automix.context.class_activation_map``); through
    ``automix.create_method("snapmix", model)`` it comes from the training model itself.

    Args:
        alpha: Beta(alpha, alpha) of the box lambda.
        layer: module path of the feature map the CAM uses; None: the input of the model's last global average
            pooling (``nn.AdaptiveAvgPool2d``).
        head: module path of the linear classifier on the pooled features; None: the model's last ``nn.Linear``.
            A head that is not a linear layer after global pooling is refused with both modules named.
        same_box: cut the partner's patch from the box it is pasted into (no resize) instead of the paper's
            second box drawn from a second lambda and resized (bilinear) into the first.
        **kwargs: see ``BaseMixer`` (prob, mode ``"batch"`` or ``"elem"``, pairing, num_classes, ...).

    Raises:
        ValueError: ``mode="pair"``, naming the mode and snapmix (each sample's weights come from its own CAM, so a
            pair cannot share a draw).
        TypeError: ``layer`` / ``head`` not a string or None; ``same_box`` not a bool.

    Example (x: [B, C, H, W]; the CAM context [B, h, w], here made by hand):
        >>> import torch
        >>> from automix import create_mixer
        >>> mixer = create_mixer("snapmix", num_classes=3, mode="elem")
        >>> x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
        >>> out = mixer(x, y, torch.Generator().manual_seed(0), context=torch.rand(4, 4, 4))
        >>> out.params.lam.shape, out.params.lam_partner.shape, out.y.shape
        (torch.Size([4]), torch.Size([4]), torch.Size([4, 3]))
        >>> bool(torch.allclose(out.y.sum(1), out.params.lam + out.params.lam_partner))
        True
    """

    name = "snapmix"
    spatial_dims = (2,)
    needs = "cam"

    def __init__(self, alpha: float = 1.0, *, layer: str | None = None, head: str | None = None,
                 same_box: bool = False, **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        if self.mode == "pair":
            raise ValueError("mode 'pair' does not apply to snapmix: each sample's label weights come from its own "
                             "class activation map, so the two samples of a pair cannot share one draw; use mode "
                             "'batch' or 'elem'")
        if layer is not None:
            check_type("layer", layer, str, "a module path string or None")
        if head is not None:
            check_type("head", head, str, "a module path string or None")
        check_type("same_box", same_box, bool, "a bool")
        self.layer, self.head, self.same_box = layer, head, same_box

    def _repr_keys(self) -> tuple[str, ...]:
        return ("layer", "head", "same_box")

    def context_options(self) -> dict[str, Any]:
        return {"layer": self.layer, "head": self.head}

    def _sample(self, x: Tensor, lam: Tensor, gen: torch.Generator, *, index: Tensor, context: Any = None
                ) -> Region:
        size = tuple(x.shape[-2:])
        if not isinstance(context, Tensor) or context.ndim != 3 or context.shape[0] != x.shape[0]:
            raise ValueError(f"context must be class activation maps [B, h, w] with B={x.shape[0]}, got "
                             f"{type(context).__name__} {tuple(getattr(context, 'shape', ()))}")
        box = box_from_lam(lam, size, gen)  # [n, 4]: one box in batch mode
        cam = normalised_cam(context, size)  # [B, H, W]
        index = index.to(cam.device)
        if self.same_box:
            src = box
        else:
            src = box_from_lam(self._draw_lam(lam.numel(), gen).to(lam.device), size, gen)
            # An empty partner box has nothing to paste: that draw mixes nothing (lam 1, partner weight 0).
            box = torch.where((box_area(src) > 0).unsqueeze(1).to(box.device), box, torch.zeros_like(box))
            src = torch.where((box_area(box) > 0).unsqueeze(1).to(src.device), src, torch.zeros_like(src))
        inside = box_mask(box, size, cam.device)[:, 0].float()  # [n, H, W]
        cut = box_mask(src, size, cam.device)[:, 0].float()
        own = (cam * inside).flatten(1).sum(1)
        partner = (cam[index] * cut).flatten(1).sum(1)
        extra = {} if self.same_box else {"src_box": src}
        return Region(box=box, lam=(1.0 - own).clamp(0.0, 1.0), lam_partner=partner.clamp(0.0, 1.0), extra=extra)

    def preview_parts(self, x: Tensor, params: MixParams) -> dict[str, Any]:
        """Two label weights from the CAMs; without ``same_box``, the partner's source box (``partner_region``,
        outlined in pictures), which is resized into the box the mask shows."""
        weights = ("original: label weight lam = the share",
                   "  of its CAM it keeps; partner: lam_b = the",
                   "  share of its CAM cut out (sum need not be 1)")
        src_box = params.extra.get("src_box")
        if src_box is None:
            return {"legend": weights + ("mask: the box, partner's share (white = partner)",
                                         "mixed = (1-mask)*original + mask*partner",
                                         "right: lam / lam_b | mean of the mask")}
        region = box_mask(src_box, tuple(x.shape[-2:]), x.device).expand(x.shape[0], -1, -1, -1)
        return {"partner_region": region,
                "legend": weights + ("mixed: the partner's red box, resized into",
                                     "  the mask's box (white = partner)",
                                     "right: lam / lam_b | mean of the mask")}

    def _apply(self, t: Tensor, params: MixParams) -> Tensor:
        src_box = params.extra.get("src_box")
        if src_box is None:
            return blend(t, params)
        return paste_resized(t, params.index.to(t.device), src_box, params.box)


def paste_resized(t: Tensor, index: Tensor, src_box: Tensor, box: Tensor) -> Tensor:
    """``t`` [B, C, H, W] with the content of ``src_box`` of each partner ``t[index]`` resized into ``box``.

    ``src_box`` and ``box`` are long [n, 4] ``(y1, y2, x1, x2)`` (n = 1: one pair of boxes for the batch, else
    one per sample). Floating tensors are resized bilinearly (``align_corners=False``), integer ones (segmentation
    maps) by nearest neighbour. Returns a new tensor of ``t``'s dtype and memory format.
    """
    mode = "bilinear" if t.is_floating_point() else "nearest"
    src = t if t.is_floating_point() else t.float()
    height, width = t.shape[-2:]
    if box.shape[0] == 1:
        y1, y2, x1, x2 = box[0].tolist()
        v1, v2, u1, u2 = src_box[0].tolist()
        out = t.clone()
        if y2 > y1 and x2 > x1 and v2 > v1 and u2 > u1:
            patch = F.interpolate(src[index][..., v1:v2, u1:u2], size=(y2 - y1, x2 - x1), mode=mode,
                                  **({"align_corners": False} if mode == "bilinear" else {}))
            out[..., y1:y2, x1:x2] = patch.to(t.dtype)
        return out
    # Per-sample boxes: one bilinear sampling grid for the batch. Each output pixel inside its box reads the
    # partner at the position F.interpolate of the crop would (half-pixel centres, clamped to the crop), so the
    # result equals resizing each crop on its own (bilinear); pixels outside the box are not used.
    dst = box.to(device=t.device, dtype=torch.float32)
    srcb = src_box.to(device=t.device, dtype=torch.float32)

    def axis(side: int, d0: Tensor, d1: Tensor, s0: Tensor, s1: Tensor) -> Tensor:  # [n, side], normalised
        pos = torch.arange(side, device=t.device, dtype=torch.float32)
        scale = (s1 - s0) / (d1 - d0).clamp_min(1)
        at = s0[:, None] + (pos[None] - d0[:, None] + 0.5) * scale[:, None] - 0.5
        at = torch.minimum(torch.maximum(at, s0[:, None]), (s1 - 1)[:, None])
        return (at + 0.5) * 2.0 / side - 1.0

    gy = axis(height, dst[:, 0], dst[:, 1], srcb[:, 0], srcb[:, 1])
    gx = axis(width, dst[:, 2], dst[:, 3], srcb[:, 2], srcb[:, 3])
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [n, H, W, 2] (x, y)
    grid = grid.to(src.dtype) if src.dtype in (torch.float16, torch.bfloat16, torch.float64) else grid
    warped = F.grid_sample(src[index], grid, mode=mode, align_corners=False).to(t.dtype)
    out = torch.where(box_mask(box, (height, width), t.device), warped, t)
    if t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)
    return out
