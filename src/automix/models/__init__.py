"""Backbones and feature access for mixup-family training.

- :func:`create_model` builds a registered network by name (``list_models()``) or a
  ``"timm:<name>"`` / ``"torchvision:<name>"`` model (those libraries are imported lazily).
- The CIFAR networks (3x3 stride-1 stem, no max-pool) take ``num_classes``, ``in_chans`` and a
  width keyword: ``width`` (first-stage channels, default 64) for the ResNets / ResNeXt,
  ``widen`` (the WRN factor k) for wide ResNets. Each has ``forward_features``,
  ``forward_head``, ``num_features`` and ``default_feature_layer``.
- ``vit_tiny`` / ``vit_small`` (DeiT-Ti / DeiT-S shapes; ``img_size``, ``patch_size``, default 32 / 4) give
  tokens ``[B, 1 + h * w, dim]`` at every block (``tokens_to_map`` lays them on the patch grid) and the
  attention map of any block on request (:class:`AttentionTap`, from the same forward pass).
- :func:`default_feature_layer` names the module feeding the AutoMix Mix Block (``"layer3"``
  for the CIFAR ResNets, ``"layer2"`` for WRN) and :class:`FeatureTap` records that module's
  output during the ordinary forward pass.

Example:
    >>> import torch
    >>> model = create_model("wrn28_8", num_classes=100, widen=1)
    >>> tap = FeatureTap(model, default_feature_layer(model))
    >>> logits, feats = forward_with_features(model, torch.randn(2, 3, 32, 32), tap)
    >>> tuple(logits.shape), tuple(feats.shape)
    ((2, 100), (2, 32, 16, 16))
    >>> tap.remove()
"""

from .attention import AttentionTap, attention_layers, every_attention, find_attention
from .cifar_resnet import (
    Backbone,
    BasicBlock,
    Bottleneck,
    CifarResNet,
    PreActBlock,
    init_weights,
    preact_resnet18,
    preact_resnet34,
    resnet18,
    resnet34,
    resnext50_32x4d,
)
from .features import FeatureTap, forward_with_features, resolve_module, token_grid, tokens_to_map
from .registry import create_model, default_feature_layer, list_models, register_model
from .vit import VisionTransformer, vit_small, vit_tiny
from .wrn import WideBasicBlock, WideResNet, wide_resnet, wrn28_8, wrn28_10

__all__ = ["AttentionTap", "Backbone", "BasicBlock", "Bottleneck", "CifarResNet", "FeatureTap", "PreActBlock",
           "VisionTransformer", "WideBasicBlock", "WideResNet", "attention_layers", "create_model", "every_attention",
           "default_feature_layer", "find_attention", "forward_with_features", "init_weights", "list_models",
           "preact_resnet18", "preact_resnet34", "register_model", "resnet18", "resnet34", "resnext50_32x4d",
           "resolve_module", "token_grid", "tokens_to_map", "vit_small", "vit_tiny", "wide_resnet", "wrn28_10",
           "wrn28_8"]
