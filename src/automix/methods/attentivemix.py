"""AttentiveMix+ as a Method: the ``AttentiveMix`` mixer with a feature extractor the method owns.

The reference ranks grid cells with a *pre-trained* ResNet (``backbone_k`` in
``openmixup/models/classifiers/mixup_classification.py``, Westlake-AI/openmixup at commit 37e1372). No
pre-trained weights can be downloaded here (and automix never fetches weights), so the extractor is any module
the user passes (``extractor=``: e.g. a network trained earlier, loaded by the user), and by default an EMA copy
of the model being trained: it follows the model with ``extractor_ema_decay`` after every optimiser step, gets no
gradients and is not optimised. The default copy runs in train mode (batch statistics, as AutoMix's EMA
encoder); a user's extractor runs in eval mode (its own frozen statistics). Neither pass moves the trained
model's BN statistics or leaves gradients.

Everything else is ``MixerMethod``: the mixer's draw from the extractor's features, the mixed batch through the
model, soft-target loss.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_range, check_type
from ..context import eval_mode, features
from ..losses import TargetLoss
from ..mixers._lam import LamSpec, alpha_or_lam
from ..mixers.attentivemix import AttentiveMix
from .base import MixerMethod, check_module_options
from .ema import ema_update
from .registry import register_method


@register_method("attentivemix", kind="model-aware")
class AttentiveMixMethod(MixerMethod):
    """AttentiveMix+ (arXiv:2003.13048; "+": k from lambda): paste the partner's top-k grid cells, ranked by an
    extractor's features.

    Args:
        model: the classifier being trained.
        alpha: Beta(alpha, alpha) of lam (2.0, the reference's CIFAR configs).
        lam: a given lambda instead of Beta(alpha, alpha) (``automix.mixers._lam``: a number, a range, a
            distribution, a callable or a spec); k is then ``round((1 - lam) * cells)``. Refused with ``top_k``.
        top_k: cells pasted per mixed sample, or None (k from lam: AttentiveMix+).
        layer: the extractor's module giving the grid [B, C, h, w]; None: the map it global-average-pools.
        extractor: the module that ranks the cells (run in eval mode, never trained here), or None for an EMA
            copy of ``model``. Its grid must cover the image (any h x w; upsampled nearest).
        extractor_ema_decay: decay of the default EMA copy per step (0 copies the model every step).
        prob, mode, pairing, num_classes, label_smoothing: as ``BaseMixer``.
        loss, total_steps, seed: as ``MixerMethod``.

    Raises:
        ValueError / TypeError: a bad option, named (``top_k``, ``extractor_ema_decay``, ...); ``layer`` not
            giving feature maps [B, C, h, w] or ``top_k`` beyond their cells: at ``check_image_size`` (the trainer,
            before the run starts) or at the first step.

    Example (x: [B, C, H, W], y: [B] class ids):
        >>> import torch, automix
        >>> model = automix.create_model("preact_resnet18", num_classes=4, width=4)
        >>> method = automix.create_method("attentivemix", model, num_classes=4, seed=0)
        >>> loss, logs = method.training_step(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1]))
        >>> params = method.last_params["mix"]
        >>> tuple(params.mask.shape), bool(torch.allclose(params.lam, 1 - params.mask.float().mean((1, 2, 3))))
        ((6, 1, 32, 32), True)
        >>> method.after_step()   # the EMA extractor follows the model
    """

    def __init__(self, model: nn.Module, *, alpha: float = 2.0, lam: LamSpec | None = None, top_k: int | None = None,
                 layer: str | None = None, extractor: nn.Module | None = None, extractor_ema_decay: float = 0.999,
                 prob: float = 1.0,
                 mode: str = "batch", pairing: str = "perm", num_classes: int | None = None,
                 label_smoothing: float = 0.0, loss: str | TargetLoss = "ce", total_steps: int | None = None,
                 seed: int | None = None) -> None:
        mixer = AttentiveMix(**alpha_or_lam(alpha, lam), top_k=top_k, layer=layer, prob=prob, mode=mode,
                             pairing=pairing, num_classes=num_classes, label_smoothing=label_smoothing)
        super().__init__(model, mixer, num_classes=num_classes, loss=loss, total_steps=total_steps, seed=seed)
        self.extractor_ema_decay = check_range("extractor_ema_decay", extractor_ema_decay, 0.0, 1.0)
        self.own_extractor = extractor is None
        if extractor is None:
            extractor = copy.deepcopy(model).requires_grad_(False)
        else:
            check_type("extractor", extractor, nn.Module, "an nn.Module or None")
        self.extractor = extractor
        check_module_options(extractor, self.mixer)

    context_reads_model = False  # the extractor's modules, checked above

    @torch.no_grad()
    def check_image_size(self, size: tuple[int, int], channels: int = 3) -> None:
        """``layer`` must give the extractor's feature maps [B, C, h, w] with at least ``top_k`` cells on images of
        ``size`` (H, W): one forward pass of two blank images through the extractor in eval mode (no statistics
        move, no random numbers are drawn), so a wrong ``layer`` or ``top_k`` is named before the run starts."""
        super().check_image_size(size, channels)
        param = next(self.extractor.parameters(), None)
        x = torch.zeros(2, channels, int(size[0]), int(size[1]), device=None if param is None else param.device,
                        dtype=param.dtype if param is not None and param.is_floating_point() else torch.float32)
        with eval_mode(self.extractor):
            self.mixer.check_features(features(self.extractor, x, layer=self.mixer.layer), 2)

    def context(self, x: Tensor, y: Tensor) -> Any:
        """The extractor's feature grid on the clean batch (no gradients; the trained model is not run)."""
        if self.own_extractor:
            self.extractor.train()
            return features(self.extractor, x, y, layer=self.mixer.layer)
        with eval_mode(self.extractor):
            return features(self.extractor, x, y, layer=self.mixer.layer)

    @torch.no_grad()
    def after_step(self) -> None:
        if self.own_extractor:
            ema_update([self.extractor], [self.model], self.extractor_ema_decay)
        super().after_step()
