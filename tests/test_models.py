"""Tests for automix.models: registry, CIFAR backbones, WRN, external prefixes, FeatureTap."""

from __future__ import annotations

import copy
import sys
import types

import pytest
import torch
from torch import nn

from automix.models import (
    FeatureTap,
    create_model,
    default_feature_layer,
    forward_with_features,
    list_models,
    register_model,
    wide_resnet,
)
from automix.models import registry as registry_mod

# name -> (small-width kwargs, expected [C, H, W] at the default feature layer for 32x32 input)
SMALL = {
    "preact_resnet18": ({"width": 16}, (64, 8, 8)),
    "preact_resnet34": ({"width": 8}, (32, 8, 8)),
    "resnet18": ({"width": 16}, (64, 8, 8)),
    "resnet34": ({"width": 8}, (32, 8, 8)),
    "resnext50_32x4d": ({"width": 8}, (128, 8, 8)),
    "wrn28_8": ({"widen": 2}, (64, 16, 16)),
    "wrn28_10": ({"widen": 1}, (32, 16, 16)),
}


def _x(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _small(name: str, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, **SMALL[name][0])


def test_every_registered_model_is_covered() -> None:
    assert set(list_models()) == set(SMALL) | {"vit_tiny", "vit_small"}  # the ViTs: tests/test_vit.py
    assert list_models("wrn*") == ["wrn28_10", "wrn28_8"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_shapes_and_feature_layer(name: str) -> None:
    model = _small(name, num_classes=7)
    x = _x()
    logits = model(x)
    assert logits.shape == (2, 7)
    feats = model.forward_features(x)
    assert feats.shape[:2] == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), logits)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)

    layer = default_feature_layer(name)
    assert layer == model.default_feature_layer == default_feature_layer(model)
    with FeatureTap(model, layer) as tap:
        model(x)
        assert tap.pop().shape == (2, *SMALL[name][1])


def test_default_feature_layers_match_reference() -> None:
    assert default_feature_layer("preact_resnet18") == "layer3"
    assert default_feature_layer("resnext50_32x4d") == "layer3"
    assert default_feature_layer("wrn28_8") == "layer2"


def test_full_width_stage_shapes_match_spec() -> None:
    # Spec 1.1: CIFAR ResNet-18 stage 3 is 256ch @ 8x8, WRN-28-8 stage 2 is 256ch @ 16x16.
    # Checked on a 1x3x32x32 input in eval mode to keep this cheap.
    for name, shape in [("resnet18", (256, 8, 8)), ("wrn28_8", (256, 16, 16))]:
        model = create_model(name, num_classes=10).eval()
        with torch.no_grad(), FeatureTap(model, default_feature_layer(name)) as tap:
            model(_x(batch=1))
            assert tap.pop().shape == (1, *shape)


def test_resnext_stage3_has_1024_channels_at_default_width() -> None:
    model = create_model("resnext50_32x4d", num_classes=10)
    assert model.layer3[-1].conv3.out_channels == 1024
    assert model.layer3[0].conv2.groups == 32
    assert model.num_features == 2048


@pytest.mark.parametrize(
    "name, expected",
    [
        ("preact_resnet18", 11.17e6),
        ("resnet18", 11.17e6),
        ("resnext50_32x4d", 23.0e6),
        ("wrn28_8", 23.35e6),
    ],
)
def test_parameter_counts_at_default_width(name: str, expected: float) -> None:
    n = sum(p.numel() for p in create_model(name, num_classes=10).parameters())
    assert abs(n - expected) / expected < 0.02, n


def test_width_keyword_scales_channels() -> None:
    model = create_model("preact_resnet18", num_classes=10, width=16)
    assert [getattr(model, f"layer{i}")[-1].conv2.out_channels for i in (1, 2, 3, 4)] == [
        16, 32, 64, 128,
    ]
    assert create_model("wrn28_8", num_classes=10, widen=1).num_features == 64
    assert wide_resnet(16, 2, num_classes=5).num_features == 128


def test_in_chans() -> None:
    model = create_model("resnet18", num_classes=3, width=8, in_chans=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)


def test_gradient_reaches_input() -> None:
    model = _small("preact_resnet18")
    x = _x().requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["preact_resnet18", "wrn28_8"])
def test_channels_last_input(name: str) -> None:
    model = _small(name).eval()
    x = _x()
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_init_scheme() -> None:
    model = _small("resnet18")
    assert torch.all(model.fc.bias == 0) and model.fc.weight.std() < 0.02
    bn = model.layer1[0].bn1
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


# --- create_model errors


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"name": "resnet99", "num_classes": 10}, ValueError, r"name 'resnet99'.*preact_resnet18"),
        ({"name": "resnet18", "num_classes": 0}, ValueError, "num_classes"),
        ({"name": "resnet18", "num_classes": -1}, ValueError, "num_classes"),
        ({"name": "resnet18", "num_classes": 2.5}, TypeError, "num_classes"),
        ({"name": "resnet18", "num_classes": "10"}, TypeError, "num_classes"),
        ({"name": "resnet18", "num_classes": True}, TypeError, "num_classes"),
        ({"name": "resnet18", "num_classes": 10, "foo": 1}, TypeError, "'foo'"),
        ({"name": "resnet18", "num_classes": 10, "widen": 2}, TypeError, "'widen'"),
        ({"name": "wrn28_8", "num_classes": 10, "width": 16}, TypeError, "'width'"),
        ({"name": "resnet18", "num_classes": 10, "width": 0}, ValueError, "width"),
        ({"name": "resnet18", "num_classes": 10, "width": 2.5}, TypeError, "width"),
        ({"name": "wrn28_8", "num_classes": 10, "widen": -2}, ValueError, "widen"),
        ({"name": "wrn28_8", "num_classes": 10, "drop_rate": 1.5}, ValueError, "drop_rate"),
        ({"name": "resnet18", "num_classes": 10, "in_chans": 0}, ValueError, "in_chans"),
    ],
)
def test_create_model_bad_inputs(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        create_model(**kwargs)


def test_wide_resnet_bad_depth() -> None:
    with pytest.raises(ValueError, match="depth"):
        wide_resnet(depth=27, widen=1)


def test_register_model_rules() -> None:
    with pytest.raises(ValueError, match="name"):
        register_model("timm:x", feature_layer="layer3")
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18", feature_layer="layer3")(lambda num_classes=10: nn.Identity())

    @register_model("test_tiny_net", feature_layer="0")
    def test_tiny_net(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    try:
        assert create_model("test_tiny_net", num_classes=4)(_x()).shape == (2, 4)
        assert default_feature_layer("test_tiny_net") == "0"
    finally:
        registry_mod._REGISTRY.pop("test_tiny_net")


# --- default_feature_layer


class _FakeTimmCNN(nn.Module):
    feature_info = [
        {"module": "act1", "num_chs": 8, "reduction": 2},
        {"module": "stages.0", "num_chs": 8, "reduction": 4},
        {"module": "stages.1", "num_chs": 8, "reduction": 8},
        {"module": "stages.2", "num_chs": 8, "reduction": 16},
        {"module": "stages.3", "num_chs": 8, "reduction": 32},
    ]


class _FakeTimmViT(nn.Module):
    feature_info = [{"module": f"blocks.{i}", "num_chs": 8, "reduction": 16} for i in range(12)]


class _FakeTorchvisionResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer3, self.layer4, self.fc = nn.Identity(), nn.Identity(), nn.Identity()


def test_default_feature_layer_guesses() -> None:
    assert default_feature_layer(_FakeTimmCNN()) == "stages.2"
    assert default_feature_layer(_FakeTimmViT()) == "blocks.5"  # DeiT-S uses block 6 of 12
    assert default_feature_layer(_FakeTorchvisionResNet()) == "layer3"
    assert default_feature_layer("torchvision:resnet50") == "layer3"
    with pytest.raises(ValueError, match="feature_layer"):
        default_feature_layer(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="feature_layer"):
        default_feature_layer("timm:resnet18")
    with pytest.raises(ValueError, match="not a registered model"):
        default_feature_layer("nope")
    with pytest.raises(TypeError, match="name_or_model"):
        default_feature_layer(3)  # type: ignore[arg-type]


# --- FeatureTap


def test_tap_uses_the_same_forward_pass() -> None:
    model = _small("preact_resnet18")
    calls = []
    model.stem.register_forward_hook(lambda m, i, o: calls.append(1))
    tap = FeatureTap(model, "layer3")
    logits, feats = forward_with_features(model, _x(), tap)
    assert len(calls) == 1
    assert logits.shape == (2, 10) and feats.shape == (2, 64, 8, 8)
    # The features belong to the graph of this pass: gradients flow through them.
    assert feats.requires_grad and feats.grad_fn is not None
    # And they are what the remaining layers turned into the logits.
    torch.testing.assert_close(model.forward_head(model.norm(model.layer4(feats))), logits)
    tap.remove()


def test_tap_pop_semantics() -> None:
    model = _small("resnet18").eval()
    tap = FeatureTap(model, "layer2")
    with pytest.raises(RuntimeError, match="no features"):
        tap.pop()
    model(_x(seed=1))
    model(_x(seed=2))  # a later pass overwrites the earlier one
    expected = model.layer2(model.layer1(model.stem(_x(seed=2))))
    torch.testing.assert_close(tap.features, expected)
    torch.testing.assert_close(tap.pop(), expected)
    with pytest.raises(RuntimeError, match="no features"):
        tap.pop()  # never hand out stale features twice
    with pytest.raises(RuntimeError):
        _ = tap.features
    tap.remove()
    tap.remove()  # idempotent
    model(_x())
    with pytest.raises(RuntimeError, match="removed"):
        tap.pop()
    assert not model.layer2._forward_hooks


def test_tap_context_manager_removes_hook_keeps_features() -> None:
    model = _small("resnet18")
    with FeatureTap(model, "layer3", detach=True) as tap:
        model(_x())
    assert not tap.active and not model.layer3._forward_hooks
    feats = tap.pop()
    assert feats.shape == (2, 64, 8, 8) and not feats.requires_grad


def test_tap_bad_path() -> None:
    model = _small("resnet18")
    with pytest.raises(ValueError, match=r"feature_layer 'layer9'.*layer1"):
        FeatureTap(model, "layer9")
    with pytest.raises(ValueError, match="feature_layer"):
        FeatureTap(model, "")
    with pytest.raises(TypeError, match="feature_layer"):
        FeatureTap(model, 3)  # type: ignore[arg-type]
    tap = FeatureTap(model, "layer3.1.conv2")  # dotted paths work
    model(_x())
    assert tap.pop().shape == (2, 64, 8, 8)
    tap.remove()


def test_tap_on_deepcopy_does_not_leak_into_original() -> None:
    model = _small("preact_resnet18")
    tap = FeatureTap(model, "layer3")
    clone = copy.deepcopy(model)
    clone(_x())
    with pytest.raises(RuntimeError):
        tap.pop()
    clone_tap = FeatureTap(clone, "layer3")
    clone(_x())
    assert clone_tap.pop().shape == (2, 64, 8, 8)
    with pytest.raises(RuntimeError):
        tap.pop()
    model(_x())
    assert tap.pop().shape == (2, 64, 8, 8)
    with pytest.raises(RuntimeError):
        clone_tap.pop()


def test_tap_tuple_and_token_outputs() -> None:
    class TupleOut(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple:
            return (None, x * 2, x)

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.Sequential(TupleOut(), nn.Identity())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.blocks[0](x)[1].mean(1)

    model = Tokens()
    x = torch.randn(2, 5, 4)  # ViT-style [B, N, C] tokens stay as they are
    with FeatureTap(model, "blocks.0") as tap:
        model(x)
        torch.testing.assert_close(tap.pop(), x * 2)


def test_dropped_tap_leaves_harmless_hook() -> None:
    model = _small("resnet18")
    FeatureTap(model, "layer3")  # dropped immediately; only a weak reference stays in the hook
    assert model(_x()).shape == (2, 10)


# --- external models


def test_missing_external_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(ImportError, match="pip install timm"):
        create_model("timm:resnet18", num_classes=10)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ImportError, match="pip install torchvision"):
        create_model("torchvision:resnet18", num_classes=10)


def test_external_arguments_are_forwarded(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_create(arch: str, **kw: object) -> nn.Module:
        seen.update(arch=arch, **kw)
        return nn.Linear(2, 2)

    monkeypatch.setitem(sys.modules, "timm", types.SimpleNamespace(create_model=fake_create))
    create_model("timm:convnext_atto", num_classes=5, drop_path_rate=0.1)
    assert seen == {"arch": "convnext_atto", "num_classes": 5, "pretrained": False,
                    "drop_path_rate": 0.1}
    with pytest.raises(ValueError, match="empty architecture"):
        create_model("timm:", num_classes=5)


def test_timm_model_roundtrip() -> None:
    pytest.importorskip("timm")
    model = create_model("timm:resnet18", num_classes=10).eval()
    layer = default_feature_layer(model)
    assert layer == "layer3"
    with torch.no_grad(), FeatureTap(model, layer) as tap:
        assert model(_x()).shape == (2, 10)
        assert tap.pop().shape[1] == 256


def test_torchvision_model_roundtrip() -> None:
    pytest.importorskip("torchvision")
    model = create_model("torchvision:resnet18", num_classes=10).eval()
    assert default_feature_layer(model) == "layer3"
    with torch.no_grad(), FeatureTap(model, "layer3") as tap:
        assert model(_x()).shape == (2, 10)
        assert tap.pop().shape[1] == 256
