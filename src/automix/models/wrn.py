"""Wide ResNets (Zagoruyko & Komodakis, arXiv 1605.07146) for 32x32 inputs: WRN-28-8 and any depth/widen.

Pre-activation blocks, three stages of ``16 * widen``, ``32 * widen`` and ``64 * widen``
channels at 32x32, 16x16 and 8x8. The AutoMix reference feeds the Mix Block from stage 2
(``layer2``: 256 channels at 16x16 for WRN-28-8, ``mask_layer=1`` in
``configs/classification/cifar100/automix/basic/wrn28_8_l1_a2_near_L1_01_mlr1e_3.py`` of
``Westlake-AI/openmixup`` at commit ``37e1372``).

The width keyword is ``widen`` (the WRN "k"), not ``width`` as for the CIFAR ResNets, because the
paper's names (WRN-28-8) are stated in it.
"""

from __future__ import annotations

from torch import Tensor, nn

from .cifar_resnet import Backbone, init_weights
from .registry import check_positive_int, register_model

__all__ = ["WideBasicBlock", "WideResNet", "wide_resnet", "wrn28_8", "wrn28_10"]


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3 (-dropout) -BN-ReLU-conv3x3 plus shortcut (1x1 conv when shapes change)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.act = nn.ReLU()  # not in-place: see the note in cifar_resnet.py
        use_proj = stride != 1 or cin != cout
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if use_proj else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.drop(self.conv1(out))
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


class WideResNet(Backbone):
    """WRN-depth-widen.

    Args:
        depth: Total depth; ``(depth - 4)`` must be a positive multiple of 6 (28 gives 4 blocks
            per stage).
        widen: Width factor k; stages have ``16k``, ``32k`` and ``64k`` channels.
        num_classes: Number of logits.
        in_chans: Input channels.
        drop_rate: Dropout between the two convolutions of each block (0 disables it).

    Module names: ``stem``, ``layer1``..``layer3``, ``norm`` (final BN-ReLU), ``global_pool``,
    ``fc``. Initialisation as :func:`automix.models.cifar_resnet.init_weights`.
    """

    default_feature_layer = "layer2"
    stage_names = ("layer1", "layer2", "layer3")

    def __init__(self, depth: int = 28, widen: int = 8, num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        depth = check_positive_int("depth", depth)
        widen = check_positive_int("widen", widen)
        num_classes = check_positive_int("num_classes", num_classes)
        self.in_chans = in_chans = check_positive_int("in_chans", in_chans)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"depth must be 6n + 4 with n >= 1 (e.g. 16, 22, 28), got {depth}")
        if not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be a float in [0, 1), got {drop_rate!r}")
        n = (depth - 4) // 6
        self.stem = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        cin = 16
        for i, cout in enumerate((16 * widen, 32 * widen, 64 * widen)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(WideBasicBlock(cin, cout, stride, float(drop_rate)))
                cin = cout
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = cin
        self.norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)


def wide_resnet(depth: int = 28, widen: int = 8, num_classes: int = 10, in_chans: int = 3,
                drop_rate: float = 0.0) -> WideResNet:
    """Generic WRN builder, e.g. ``wide_resnet(16, 4, num_classes=100)`` for WRN-16-4."""
    return WideResNet(depth, widen, num_classes, in_chans, drop_rate)


@register_model("wrn28_8", feature_layer="layer2")
def wrn28_8(num_classes: int = 10, widen: int = 8, in_chans: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-28-8 (~23.4M parameters at 10 classes); ``layer2`` gives 256 channels at 16x16."""
    return WideResNet(28, widen, num_classes, in_chans, drop_rate)


@register_model("wrn28_10", feature_layer="layer2")
def wrn28_10(num_classes: int = 10, widen: int = 10, in_chans: int = 3, drop_rate: float = 0.0) -> WideResNet:
    """WRN-28-10 (~36.5M parameters at 10 classes), the PuzzleMix / Co-Mixup CIFAR backbone."""
    return WideResNet(28, widen, num_classes, in_chans, drop_rate)
