"""ManifoldMix (Verma et al., "Manifold Mixup: Better Representations by Interpolating Hidden States", ICML 2019,
arXiv:1806.05236): mixup of the hidden features at a layer drawn anew every step.

Each step draws one layer from ``layers`` (``"input"`` is the image itself, as mixup; a module path is that
module's output) and one mixup draw (partner index and lambda, ``automix.mixers.Mixup``). The batch runs
through the model once: a one-shot forward hook on the drawn module replaces its output ``h`` with
``lam * h + (1 - lam) * h[index]`` (the draw's ``apply``), and the targets are mixed with the same draw.
``last_params["mix"]`` holds the draw with ``extra["layer"]`` naming the layer, so ``apply(h, params)`` replays
it on the hidden tensor (or on the image when the layer is ``"input"``).

Why a Method and not a mixer with a context: the mix happens *inside* the forward pass that trains the model,
not before it, so there is no input batch to hand the model; a context function (which reads the model) cannot
express "change what the model computes". The hook is the only coupling to the backbone, so any model with
named stages works (``"layer1"`` for these CIFAR ResNets and torchvision's, ``"stages.0"`` for timm ConvNeXt).

Reference: ``_manifoldmix`` in ``openmixup/models/classifiers/mixup_classification.py`` and ``ResNet_Mix`` in
``openmixup/models/backbones/resnet_mmcls.py`` of Westlake-AI/openmixup at commit 37e1372 (layer ~ U{0, 1, 2} on
CIFAR: the input or the output of the first two stages; a constant lambda mask; alpha 2 on CIFAR). The
reference multiplies by a constant mask; a scalar blend is the same and works on any tensor shape.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_type
from ..losses import TargetLoss, resolve_loss, target_loss
from ..mixers import MixParams, Mixup
from ..mixers._lam import LamSpec, alpha_or_lam
from ..models.features import forward_replacing, resolve_module
from .base import Method
from .registry import register_method

INPUT = "input"


def default_layers(model: nn.Module) -> tuple[str, ...]:
    """``("input", <first stage>, <second stage>)``: the reference's layer in {0, 1, 2}. The stages are
    ``model.stage_names`` (these CIFAR networks) or ``layer1`` / ``layer2`` (torchvision and timm ResNets).

    Raises:
        ValueError: the model has neither; pass ``layers`` (module paths) yourself.
    """
    stages = tuple(getattr(model, "stage_names", ()))[:2]
    if len(stages) < 2:
        names = {n for n, _ in model.named_modules()}
        stages = ("layer1", "layer2") if {"layer1", "layer2"} <= names else ()
    if not stages:
        raise ValueError(f"layers must be given for {type(model).__name__}: it has no stage_names and no "
                         f"layer1/layer2; pass module paths, e.g. layers=('input', 'stages.0', 'stages.1')")
    return (INPUT, *stages)


@register_method("manifoldmix", kind="model-aware")
class ManifoldMix(Method):
    """Mixup of hidden features at a layer drawn each step; any backbone with named modules.

    Args:
        model: the classifier.
        alpha: Beta(alpha, alpha) of lambda (2.0, the reference's CIFAR value).
        lam: a given lambda instead of Beta(alpha, alpha) (``automix.mixers._lam``: a number, a range, a
            distribution, ...), as every drawing mixer takes.
        layers: where to mix, drawn uniformly each step: ``"input"`` or module paths whose output is a tensor
            ``[B, ...]``. None: ``("input", first stage, second stage)`` (``default_layers``).
        prob, mode, pairing: as ``BaseMixer`` (``mode="batch"``: one lambda for the batch, as the reference).
        num_classes, label_smoothing: of the targets, as the mixers.
        loss: as every Method (``automix.losses.target_loss``).
        total_steps, seed: see ``Method``.

    Raises:
        ValueError: a layer that is not ``"input"`` nor a module path of ``model`` (the error names ``layers``),
            or bad mixup options (named by ``Mixup``).
        TypeError: ``layers`` is not a sequence of strings.

    Example (x: [B, C, H, W] images, y: [B] class ids; the loss is a float32 scalar):
        >>> import torch, automix
        >>> model = automix.create_model("preact_resnet18", num_classes=4, width=4)
        >>> method = automix.create_method("manifoldmix", model, num_classes=4, seed=0)
        >>> method.layers
        ('input', 'layer1', 'layer2')
        >>> loss, logs = method.training_step(torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1]))
        >>> params = method.last_params["mix"]
        >>> params.extra["layer"] in method.layers, tuple(params.lam.shape), loss.dtype
        (True, (6,), torch.float32)
    """

    def __init__(self, model: nn.Module, *, alpha: float = 2.0, lam: LamSpec | None = None,
                 layers: tuple[str, ...] | None = None,
                 prob: float = 1.0, mode: str = "batch", pairing: str = "perm", num_classes: int | None = None,
                 label_smoothing: float = 0.0, loss: str | TargetLoss = "ce", total_steps: int | None = None,
                 seed: int | None = None) -> None:
        super().__init__(model, total_steps=total_steps, seed=seed)
        self.mixer = Mixup(**alpha_or_lam(alpha, lam), prob=prob, mode=mode, pairing=pairing, num_classes=num_classes,
                           label_smoothing=label_smoothing)
        if layers is None:
            layers = default_layers(model)
        if isinstance(layers, str) or not isinstance(layers, (tuple, list)) or not layers:
            raise TypeError(f"layers must be a non-empty sequence of module paths (or 'input'), got {layers!r}")
        for layer in layers:
            check_type("layers", layer, str, "a sequence of module path strings")
            if layer != INPUT:
                try:
                    resolve_module(model, layer)
                except ValueError as err:
                    raise ValueError(f"layers: {layer!r} is neither 'input' nor a module of the model "
                                     f"({err})") from None
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers has repeats, which would weight those layers more: {list(layers)!r}")
        self.layers = tuple(layers)
        self.num_classes = num_classes
        self.loss = resolve_loss(loss)

    def apply(self, t: Tensor, params: MixParams) -> Tensor:
        """Replay a draw on any tensor ``[B, ...]`` (the hidden tensor at ``params.extra["layer"]`` or an image)."""
        return self.mixer.apply(t, params)

    @torch.no_grad()
    def mix_preview(self, x: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
                    ) -> dict[str, Tensor]:
        """The draw shown on the images (what layer ``"input"`` does; at a hidden layer the same constant weight
        mixes the features), with a legend saying so."""
        parts = self.mixer.mix_preview(x, y, generator)
        parts["legend"] = ("original: label weight lam",
                           "partner: label weight 1 - lam",
                           "mask: partner's share (constant 1 - lam)",
                           "mixed = (1-mask)*original + mask*partner at",
                           "  layer 'input'; a hidden layer mixes its features so",
                           "right: lam | mean of the mask")
        return parts

    def training_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.mixing:
            return self.clean_step(x, y, who="manifoldmix", num_classes=self.num_classes,
                                   label_smoothing=self.mixer.label_smoothing, loss=self.loss)
        self.check_batch(x, y, "manifoldmix", num_classes=self.num_classes)
        x = self.cast_input(x)
        self.mixer.check_targets(y, x.shape[0])
        layer = self.layers[int(torch.randint(len(self.layers), (1,), generator=self.generator))]
        params = self.mixer.sample(x, self.generator)
        params.extra["layer"] = layer
        if layer == INPUT:
            logits = self.model(self.mixer.apply(x, params))
        else:
            logits = self._forward_mixed_at(layer, x, params)
        self.last_params = {"mix": params}
        loss = target_loss(self.loss, logits, self.mixer.mix_targets(y, params))
        return loss, {"loss": loss.detach()}

    def _forward_mixed_at(self, layer: str, x: Tensor, params: MixParams) -> Tensor:
        """The model on ``x`` with the first output of ``layer`` replaced by its mix (one-shot hook: a module
        called twice in one pass is mixed once)."""
        def mix(output: Any) -> Tensor:
            if not isinstance(output, Tensor) or output.ndim == 0 or output.shape[0] != x.shape[0]:
                raise TypeError(f"layers: module {layer!r} must return a tensor [B, ...] with B={x.shape[0]} to "
                                f"be mixed, got {type(output).__name__} {getattr(output, 'shape', '')}")
            return self.mixer.apply(output, params)

        return forward_replacing(self.model, layer, x, mix, option="layers")
