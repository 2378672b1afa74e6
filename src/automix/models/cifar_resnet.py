"""CIFAR-style ResNet, PreAct-ResNet and ResNeXt backbones (32x32 inputs).

The stem is a single 3x3 stride-1 convolution with no max-pool, so the four stages run at
32x32, 16x16, 8x8 and 4x4 for a 32x32 image. This is the ``ResNet_CIFAR`` / ``ResNeXt_CIFAR``
layout of the AutoMix reference; stage 3 (``layer3``, 8x8) feeds the Mix Block.

Every network takes ``num_classes``, ``width`` (channels of the first stage, default 64, so
``width=16`` gives stages of 16/32/64/128 channels for basic blocks) and ``in_chans``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .registry import check_input_channels, check_positive_int, register_model

__all__ = ["Backbone", "BasicBlock", "Bottleneck", "CifarResNet", "PreActBlock", "init_weights", "preact_resnet18",
           "preact_resnet34", "resnet18", "resnet34", "resnext50_32x4d"]

# ReLUs are never in-place: a FeatureTap keeps a reference to a module's output, and an
# in-place op further down the network would silently overwrite the stored features.


def init_weights(model: nn.Module) -> None:
    """Initialise ``model`` in place.

    Convolutions get Kaiming-normal weights (``fan_out``, ReLU gain), BatchNorm weight 1 and
    bias 0, and Linear layers Normal(0, 0.01) weights with zero bias, as the reference's
    classification heads do (``openmixup/models/heads/cls_mixup_head.py`` of ``Westlake-AI/openmixup`` at
    commit ``37e1372``).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class Backbone(nn.Module):
    """Shared head logic: ``forward(x) == forward_head(forward_features(x))``.

    Subclasses define ``stem``, their stages, ``norm`` (final BN-ReLU or Identity),
    ``global_pool`` and ``fc``, and set ``num_features`` and ``default_feature_layer``.
    """

    num_features: int
    in_chans: int
    default_feature_layer: str
    stage_names: tuple[str, ...]

    def forward_features(self, x: Tensor) -> Tensor:
        """Last feature map before pooling, ``[B, num_features, H, W]`` (``ValueError`` for an ``x`` that is not
        [B, in_chans, H, W])."""
        check_input_channels(x, self.in_chans, type(self).__name__)
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pool then ``fc``; with ``pre_logits`` return the pooled vector."""
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``."""
        return self.forward_head(self.forward_features(x))


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, add shortcut, ReLU."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = nn.ReLU()
        use_proj = stride != 1 or cin != planes
        self.shortcut = _conv_bn(cin, planes, stride) if use_proj else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., arXiv 1603.05027): BN-ReLU-conv3x3, twice, plus shortcut."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.act = nn.ReLU()
        use_proj = stride != 1 or cin != planes
        self.shortcut = nn.Conv2d(cin, planes, 1, stride=stride, bias=False) if use_proj else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(x))
        # The projection sees the activated input; the identity path sees the raw input.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


class Bottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce, grouped 3x3, 1x1 expand (x4), post-activation."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        # Grouped width as in ResNeXt: planes * base_width / 64 per group; at least one channel
        # per group so that narrow test networks still build.
        mid = max(1, planes * base_width // 64) * groups
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act = nn.ReLU()
        use_proj = stride != 1 or cin != out
        self.shortcut = _conv_bn(cin, out, stride) if use_proj else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + self.shortcut(x))


class CifarResNet(Backbone):
    """Four-stage CIFAR ResNet family.

    Args:
        block: ``BasicBlock``, ``PreActBlock`` or ``Bottleneck``.
        layers: Blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: Number of logits.
        width: Planes of the first stage (doubling per stage); 64 is the standard network.
        in_chans: Input channels.
        **block_kwargs: Extra block arguments (``groups``, ``base_width`` for ResNeXt).

    Module names: ``stem``, ``layer1``..``layer4``, ``norm`` (final BN-ReLU for pre-activation
    blocks, else Identity), ``global_pool``, ``fc``.
    """

    default_feature_layer = "layer3"
    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, block: type[nn.Module], layers: Sequence[int], num_classes: int = 10, width: int = 64,
                 in_chans: int = 3, **block_kwargs: int) -> None:
        super().__init__()
        num_classes = check_positive_int("num_classes", num_classes)
        width = check_positive_int("width", width)
        self.in_chans = in_chans = check_positive_int("in_chans", in_chans)
        if len(layers) != 4:
            raise ValueError(f"layers must list 4 stage depths, got {layers!r}")
        preact = block is PreActBlock
        stem: list[nn.Module] = [nn.Conv2d(in_chans, width, 3, padding=1, bias=False)]
        if not preact:  # pre-activation blocks start with their own BN-ReLU
            stem += [nn.BatchNorm2d(width), nn.ReLU()]
        self.stem = nn.Sequential(*stem)
        cin = width
        for i, depth in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(check_positive_int(f"layers[{i}]", depth)):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride, **block_kwargs))
                cin = planes * block.expansion  # type: ignore[attr-defined]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = cin
        self.norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()) if preact else nn.Identity()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)


@register_model("preact_resnet18", feature_layer="layer3")
def preact_resnet18(num_classes: int = 10, width: int = 64, in_chans: int = 3) -> CifarResNet:
    """PreAct-ResNet-18 for CIFAR (~11.2M parameters at width 64, 10 classes)."""
    return CifarResNet(PreActBlock, (2, 2, 2, 2), num_classes, width, in_chans)


@register_model("preact_resnet34", feature_layer="layer3")
def preact_resnet34(num_classes: int = 10, width: int = 64, in_chans: int = 3) -> CifarResNet:
    """PreAct-ResNet-34 for CIFAR (~21.3M parameters at width 64)."""
    return CifarResNet(PreActBlock, (3, 4, 6, 3), num_classes, width, in_chans)


@register_model("resnet18", feature_layer="layer3")
def resnet18(num_classes: int = 10, width: int = 64, in_chans: int = 3) -> CifarResNet:
    """ResNet-18 with the CIFAR stem (~11.2M parameters at width 64, 10 classes)."""
    return CifarResNet(BasicBlock, (2, 2, 2, 2), num_classes, width, in_chans)


@register_model("resnet34", feature_layer="layer3")
def resnet34(num_classes: int = 10, width: int = 64, in_chans: int = 3) -> CifarResNet:
    """ResNet-34 with the CIFAR stem (~21.3M parameters at width 64)."""
    return CifarResNet(BasicBlock, (3, 4, 6, 3), num_classes, width, in_chans)


@register_model("resnext50_32x4d", feature_layer="layer3")
def resnext50_32x4d(num_classes: int = 10, width: int = 64, in_chans: int = 3, groups: int = 32,
                    base_width: int = 4) -> CifarResNet:
    """ResNeXt-50 32x4d with the CIFAR stem (~23.0M parameters; layer3 gives 1024 channels).

    Stage outputs are ``4 * width * 2**i`` channels (256/512/1024/2048 at width 64).
    """
    groups = check_positive_int("groups", groups)
    base_width = check_positive_int("base_width", base_width)
    return CifarResNet(Bottleneck, (3, 4, 6, 3), num_classes, width, in_chans, groups=groups, base_width=base_width)

