"""SnapMix (Huang et al., "SnapMix: Semantically Proportional Mixing for Augmenting Fine-grained Data", AAAI 2021,
arXiv:2012.04846): a CutMix box, and each image's label weighted by the share of its class activation map (CAM)
that the mixed image shows.

Given the CAMs of the label classes ``S`` [B, h, w] (``automix.context.class_activation_map``: the training model's
own classifier weights on its pooled feature map), each map is resized to the image, shifted to a minimum of 0
and normalised to sum 1 (a flat map counts every pixel alike). With the partner box ``M_i`` pasted into sample
``i``:

* ``lam[i]`` (own label) = ``1 - sum(S_i * M_i)``: the semantic mass of image ``i`` that stays visible;
* ``lam_partner[i]`` (partner's label) = ``sum(S_index[i] * M_i)``: the partner's semantic mass pasted in.

The two need not sum to 1 (``MixParams.lam_partner``); targets are ``lam * y + lam_partner * y[index]``, so a
pair of one class gets their sum on that class. Train on ``out.y`` (soft targets): a loss interpolated from
``(index, lam)`` alone (``mixed_cross_entropy``) would assume the partner's weight is ``1 - lam``.

Reference: Shaoli-Huang/SnapMix ``utils/mixmethod.py`` (``snapmix``, ``get_spm``) and ``snapmix`` in
``openmixup/models/augments/snapmix.py`` of Westlake-AI/openmixup at commit 37e1372. Deliberate differences: the
partner's patch is taken from the same box it is pasted into (the paper cuts it from a second random box and
resizes it), so the mix is a plain box blend that replays exactly on any tensor and on segmentation maps, and a
same-class pair gets ``lam + lam_partner`` once (the reference adds each weight to the other and then counts
the class twice); the CAM pass runs in eval mode (as OpenMixup's, so BN statistics follow the training batches
only).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_choice, check_type
from ._sampling import box_from_lam, box_mask
from .base import BaseMixer, Region
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
        **kwargs: see ``BaseMixer`` (prob, mode ``"batch"`` or ``"elem"``, pairing, num_classes, ...).

    Raises:
        ValueError: ``mode="pair"`` (each sample's weights come from its own CAM, so a pair cannot share a draw).
        TypeError: ``layer`` / ``head`` not a string or None.

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

    def __init__(self, alpha: float = 1.0, *, layer: str | None = None, head: str | None = None, **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        if self.mode == "pair":
            check_choice("mode", self.mode, ("batch", "elem"))
        if layer is not None:
            check_type("layer", layer, str, "a module path string or None")
        if head is not None:
            check_type("head", head, str, "a module path string or None")
        self.layer, self.head = layer, head

    def _repr_keys(self) -> tuple[str, ...]:
        return ("layer", "head")

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
        inside = box_mask(box, size, cam.device)[:, 0].float()  # [n, H, W]
        own = (cam * inside).flatten(1).sum(1)
        partner = (cam[index.to(cam.device)] * inside).flatten(1).sum(1)
        return Region(box=box, lam=(1.0 - own).clamp(0.0, 1.0), lam_partner=partner.clamp(0.0, 1.0))
