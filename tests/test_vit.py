"""Vision transformers: the built-in ViTs, attention maps from the same forward pass, token features for the
learned methods, TransMix's attention-weighted labels, and the errors for bad input."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from conftest import image_batch, tiny_vit
from torch import nn

import automix
from automix.context import attention, capture_context
from automix.mixers import MixParams
from automix.models import AttentionTap, create_model, default_feature_layer, token_grid, tokens_to_map

# name -> (dim, heads, parameters in millions at 32 px / patch 4 / 10 classes, at 224 / 16 / 1000 classes)
SHAPES = {"vit_tiny": (192, 3, 5.363, 5.717), "vit_small": (384, 6, 21.342, 22.051)}


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("size, patch, classes", [(32, 4, 10), (224, 16, 1000)])
def test_shapes_at_both_sizes(name, size, patch, classes):
    dim, heads, small, large = SHAPES[name]
    torch.manual_seed(0)
    kw = {} if size == 32 else {"img_size": 224, "patch_size": 16}
    model = create_model(name, num_classes=classes, **kw).eval()
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(small if size == 32 else large, abs=1e-3)
    tokens = 1 + (size // patch) ** 2
    x = torch.randn(1, 3, size, size)
    with torch.no_grad(), automix.FeatureTap(model, default_feature_layer(model)) as tap:
        logits = model(x)
        feats = tap.pop()
    assert logits.shape == (1, classes)
    assert feats.shape == (1, tokens, dim)  # a block's tokens: the class token and the patch grid
    assert model.forward_features(x).shape == (1, tokens, dim)
    assert model.blocks[0].attn.num_heads == heads and model.num_features == dim
    assert default_feature_layer(model) == default_feature_layer(name) == "blocks.5"
    assert tokens_to_map(feats, (size, size)).shape == (1, dim, size // patch, size // patch)


def test_other_image_sides_resize_the_position_embeddings():
    model = tiny_vit().eval()
    assert model(torch.randn(2, 3, 48, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"x must be \[B, C, H, W\] with H and W multiples of patch_size=4, got "
                                         r"shape \(2, 3, 30, 32\)"):
        model(torch.randn(2, 3, 30, 32))


@pytest.mark.parametrize("name", ["vit_tiny", "preact_resnet18", "wrn28_8"])
def test_an_input_with_other_channels_than_in_chans_is_named(name):
    """torch's own error names the first convolution's weight; the model's names the input and in_chans."""
    model = create_model(name, num_classes=4, **({"depth": 1} if name.startswith("vit") else {}))
    with pytest.raises(ValueError, match=r"^x must be \[B, 3, H, W\] for \w+ \(built with in_chans=3\), got 1 "
                                         r"channel\(s\), shape \(2, 1, 32, 32\).*in_chans=1"):
        model(torch.rand(2, 1, 32, 32))
    grey = create_model(name, num_classes=4, in_chans=1, **({"depth": 1} if name.startswith("vit") else {}))
    assert grey(torch.rand(2, 1, 32, 32)).shape == (2, 4)


def test_the_default_feature_layer_is_the_middle_block_of_the_models_depth():
    """By name the registry knows only the default depth (12: blocks.5); a built model says its own."""
    assert default_feature_layer("vit_tiny") == default_feature_layer(create_model("vit_tiny", num_classes=4))
    for depth, layer in ((2, "blocks.0"), (6, "blocks.2"), (8, "blocks.3")):
        model = create_model("vit_tiny", num_classes=4, depth=depth)
        assert default_feature_layer(model) == layer
        method = automix.AutoMix(model, num_classes=4, total_steps=4)
        assert method.feature_layer == layer, "the method reads the instance, not the name"


@pytest.mark.parametrize("kwargs, match", [
    ({"img_size": 30}, r"img_size must be a multiple of patch_size, got img_size=30 and patch_size=4"),
    ({"img_size": 224, "patch_size": 15}, r"img_size=224 and patch_size=15"),
    ({"drop_path_rate": 1.5}, r"drop_path_rate must be a number in \[0, 1\), got 1.5"),
    ({"depth": 0}, r"depth must be a positive int, got 0"),
])
def test_bad_model_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("vit_tiny", num_classes=4, **kwargs)
    with pytest.raises(ValueError, match="embed_dim must be a multiple of num_heads"):
        automix.models.VisionTransformer(4, embed_dim=10, num_heads=3)


def _reference_attention(model, x, block):
    """Attention probabilities of ``model.blocks[block]`` computed by hand from the weights (no hooks, no flags)."""
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), tokens], 1) + model.pos_embed
    for blk in model.blocks[:block]:
        tokens = blk(tokens)
    attn = model.blocks[block].attn
    z = model.blocks[block].norm1(tokens)
    b, n, c = z.shape
    qkv = (z @ attn.qkv.weight.T + attn.qkv.bias).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
    q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
    return (q @ k.transpose(-2, -1) / (c // attn.num_heads) ** 0.5).softmax(-1)


@pytest.mark.parametrize("layer, block", [(None, 1), ("blocks.1", 1), ("blocks.0.attn", 0), ("blocks.0", 0)])
def test_attention_context_equals_a_reference_computation(layer, block):
    model = tiny_vit().eval()
    x = image_batch(0, 3)[0]
    with torch.no_grad():
        expected = _reference_attention(model, x, block)
    got = attention(model, x, layer=layer)
    assert got.shape == (3, 3, 65, 65) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert not any(m.attn.keep_attention for m in model.blocks), "the block is back on the fused kernel"


def test_asking_for_attention_changes_nothing_else(monkeypatch):
    """Same output and gradients with the tap open; only the tapped block leaves the fused kernel, and nothing
    runs twice."""
    model = tiny_vit(depth=3)
    x = image_batch(1, 4)[0]
    fused = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: fused.append(1) or sdpa(*a, **k))
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(1))
    plain = model(x)
    plain.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    assert len(fused) == 3
    with AttentionTap(model, "blocks.1") as tap:
        tapped = model(x)
        tapped.square().sum().backward()
        probs = tap.pop()
    assert len(fused) == 5 and len(calls) == 2, "one block explicit, one forward pass each"
    assert probs.shape == (4, 3, 65, 65) and not probs.requires_grad
    torch.testing.assert_close(tapped, plain, rtol=1e-5, atol=1e-5)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)
    model(x)
    assert len(fused) == 8, "after the tap the fused kernel runs everywhere again"
    with pytest.raises(RuntimeError, match="no attention recorded"):
        tap.pop()


def test_attention_from_a_model_that_has_none_is_refused_by_name():
    cnn = automix.create_model("preact_resnet18", num_classes=4, width=4)
    x = image_batch()[0]
    with pytest.raises(ValueError, match=r"^model: CifarResNet has no attention module that can give its attention "
                                         r"map"):  # no layer given: the model is what lacks attention
        attention(cnn, x)
    with pytest.raises(ValueError, match=r"layer 'layer3' of CifarResNet \(Sequential\) holds no attention module"):
        attention(cnn, x, layer="layer3")
    with pytest.raises(ValueError, match=r"layer 'blocks' holds 2 attention modules"):
        attention(tiny_vit(), x, layer="blocks")
    with pytest.raises(ValueError, match=r"^model: CifarResNet has no attention module"):  # when built, not at a step
        automix.create_method("transmix", cnn, num_classes=4, switch_prob=1.0, seed=0)


class FakeTimmAttention(nn.Module):
    """An attention module shaped as timm's (``fused_attn`` flag, probabilities through ``attn_drop``)."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.num_heads, self.fused_attn = heads, True
        self.qkv, self.proj, self.attn_drop = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.Dropout(0.0)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.fused_attn:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            out = self.attn_drop((q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1)) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def test_timm_style_attention_gives_its_map():
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(block=nn.Sequential(OrderedDict(attn=FakeTimmAttention()))))
    x = torch.randn(2, 5, 16)
    plain = model(x)
    with AttentionTap(model, "block") as tap:
        assert model.block.attn.fused_attn is False
        torch.testing.assert_close(model(x), plain, rtol=1e-5, atol=1e-6)
        probs = tap.pop()
    assert model.block.attn.fused_attn is True
    assert probs.shape == (2, 2, 5, 5)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 5))


def test_capture_context_reads_the_attention_of_the_pass_it_wraps():
    model = tiny_vit().eval()
    x = image_batch(2, 3)[0]
    with capture_context("attention", model, layer="blocks.0") as seen:
        with torch.no_grad():
            model(x)
    torch.testing.assert_close(seen.value, _reference_attention(model, x, 0).detach(), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- token features for the learned methods


@pytest.mark.parametrize("cls", [automix.AutoMix, automix.SAMix])
@pytest.mark.parametrize("size, patch", [(32, 4), (224, 16)])
def test_learned_masks_are_image_sized_for_token_features(cls, size, patch):
    model = tiny_vit(img_size=size, patch_size=patch)
    method = cls(model, num_classes=4, total_steps=4, seed=0)
    assert method.token_features and method.mix_block.upsample == "nearest"
    x, y = torch.rand(2, 3, size, size), torch.tensor([0, 3])
    loss, _ = method.training_step(x, y)
    loss.backward()
    mask = method.last_mix["mask_mb"]
    assert mask.shape == (2, 1, size, size)
    patches = mask.unfold(2, patch, patch).unfold(3, patch, patch)  # [2, 1, h, w, patch, patch]
    assert patches.shape[2:4] == (size // patch, size // patch)
    assert torch.equal(patches.amax((-2, -1)), patches.amin((-2, -1))), "nearest x patch: one value per token"
    assert mask.std() > 0, "the map varies over the token grid"
    assert all(p.grad is not None for p in method.mix_block.parameters())
    preview = method.mix_preview(x)
    assert preview["mask"].shape == (2, 1, size, size)


@pytest.mark.parametrize("size, patch", [(32, 4), (224, 16)])
def test_adautomix_masks_are_image_sized_for_token_features(size, patch):
    model = tiny_vit(img_size=size, patch_size=patch)
    method = automix.AdAutoMix(model, num_classes=4, total_steps=4, seed=0)
    assert method.token_features and method.mix_block.upsample == "nearest"
    x, y = torch.rand(3, 3, size, size), torch.tensor([0, 3, 1])
    loss, _ = method.training_step(x, y)
    loss.backward()
    masks = method.last_mix["masks_mb"]  # [B, K, H, W], one map per source
    assert masks.shape == (3, method.mix_samples, size, size)
    torch.testing.assert_close(masks.sum(1), torch.ones(3, size, size))
    patches = masks.unfold(2, patch, patch).unfold(3, patch, patch)  # [B, K, h, w, patch, patch]
    assert patches.shape[2:4] == (size // patch, size // patch)
    assert torch.equal(patches.amax((-2, -1)), patches.amin((-2, -1))), "nearest x patch: one value per token"
    assert masks.std() > 0, "the maps vary over the token grid"
    assert all(p.grad is not None for p in method.mix_block.parameters() if p.requires_grad)
    assert method.mix_preview(x)["mask"].shape[-2:] == (size, size)
    cnn = automix.create_model("preact_resnet18", num_classes=4, width=4)
    assert automix.AdAutoMix(cnn, num_classes=4, total_steps=4).mix_block.upsample == "bilinear"


def test_samix_keeps_bilinear_for_cnn_maps():
    cnn = automix.create_model("preact_resnet18", num_classes=4, width=4)
    assert automix.SAMix(cnn, num_classes=4, total_steps=4).mix_block.upsample == "bilinear"
    assert automix.SAMix(tiny_vit(), num_classes=4, total_steps=4, upsample="bilinear").mix_block.upsample == \
        "bilinear"


def test_token_features_drop_the_class_token():
    model = tiny_vit().eval()
    method = automix.AutoMix(model, feature_layer="blocks.1", num_classes=4, total_steps=4)
    x = image_batch(0, 2)[0]
    with torch.no_grad(), automix.FeatureTap(model, "blocks.1") as tap:
        model(x)
        tokens = tap.pop()
    grid = method._feature_map(tokens, (32, 32))
    assert grid.shape == (2, 192, 8, 8)
    assert torch.equal(grid[:, :, 2, 5], tokens[:, 1 + 2 * 8 + 5]), "row-major patches after the class token"


class OddTokens(nn.Module):
    """A toy transformer whose ``body`` gives 70 tokens for a 32x32 image: no patch grid fits them."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(3 * 4 * 4 * 64 // 64, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        patches = x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], 64, -1)
        tokens = self.body(torch.cat([patches, patches[:, :6]], 1))  # [B, 70, 8]
        return self.head(tokens.mean(1))


def test_tokens_that_do_not_tile_the_image_are_refused_by_name():
    with pytest.raises(ValueError, match=r"feature_layer 'body' gives 70 tokens, which do not tile the 32x32 image"):
        automix.AutoMix(OddTokens(), feature_layer="body", num_classes=4, total_steps=4)
    with pytest.raises(ValueError, match=r"feature_layer 'head' gives shape \(2, 4\)"):
        automix.AutoMix(OddTokens(), feature_layer="head", num_classes=4, total_steps=4)
    with pytest.raises(ValueError, match=r"feature_layer gives 65 tokens, which do not tile the 32x32 image with "
                                         r"square patches \(62 after dropping 3 prefix token\(s\) or 65 with none;"):
        token_grid(65, (32, 32), 3)
    assert token_grid(34, (32, 64)) == (2, 4, 8)  # a class and a distillation token, 8 px patches


def test_a_layer_before_the_class_token_is_laid_on_its_grid():
    """patch_embed gives 64 tokens and no class token (they tile 8 x 8): the model's one prefix token belongs to its
    blocks, so this layer's tokens are not cut to 63 and refused as if they did not tile the image."""
    assert token_grid(64, (32, 32), 1) == (0, 8, 8)
    assert token_grid(65, (32, 32), 1) == (1, 8, 8), "a block's tokens keep their class token"
    method = automix.AutoMix(tiny_vit(), feature_layer="patch_embed", num_classes=4, total_steps=4, seed=0)
    assert torch.isfinite(method.training_step(*image_batch(0))[0])


@pytest.mark.parametrize("cls", [automix.AutoMix, automix.AdAutoMix])
def test_learned_mixing_on_a_vit_resumes_exactly(cls):
    method = cls(tiny_vit(), num_classes=4, total_steps=10, seed=0)
    opt = torch.optim.AdamW(method.param_groups(), lr=1e-3)
    loss, _ = method.training_step(*image_batch(0))
    loss.backward()
    opt.step()
    method.after_step()
    again = cls(tiny_vit(), num_classes=4, total_steps=10, seed=5)
    again.load_state_dict(copy.deepcopy(method.state_dict()))
    a, _ = method.training_step(*image_batch(1))
    b, _ = again.training_step(*image_batch(1))
    assert torch.equal(a, b)


def test_timm_vit_as_feature_layer():
    pytest.importorskip("timm")
    for name in ("timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224"):
        model = create_model(name, num_classes=4)
        method = automix.AutoMix(model, num_classes=4, total_steps=4, seed=0)
        assert method.feature_layer == "blocks.5" and method.token_features
        loss, _ = method.training_step(torch.rand(2, 3, 224, 224), torch.tensor([0, 1]))
        assert torch.isfinite(loss) and method.last_mix["mask_mb"].shape == (2, 1, 224, 224)
        adautomix = automix.AdAutoMix(model, num_classes=4, total_steps=4, seed=0)
        loss, _ = adautomix.training_step(torch.rand(3, 3, 224, 224), torch.tensor([0, 1, 2]))
        assert torch.isfinite(loss) and adautomix.last_mix["masks_mb"].shape == (3, 3, 224, 224)
        with AttentionTap(model) as tap:
            model(torch.rand(1, 3, 224, 224))
            assert tap.pop().shape[-1] == 197


# ---------------------------------------------------------------- TransMix


def _cls_attention(batch=3, heads=3, grid=8, seed=0):
    """A hand-made attention map [B, heads, 1 + grid^2, 1 + grid^2]: random rows that sum to 1."""
    n = 1 + grid * grid
    return torch.rand(batch, heads, n, n, generator=torch.Generator().manual_seed(seed)).softmax(-1)


def _box_params(box, batch=3, size=32):
    y1, y2, x1, x2 = box
    lam = 1.0 - (y2 - y1) * (x2 - x1) / size**2
    return MixParams(index=torch.tensor([2, 0, 1][:batch]), lam=torch.full((batch,), lam), mode="batch",
                     size=(size, size), box=torch.tensor([list(box)]))


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_transmix_lam_is_the_attention_mass_off_the_pasted_tokens(ratio):
    mixer = automix.create_mixer("transmix", mixup_alpha=0.0, ratio=ratio, num_classes=4)
    attn = _cls_attention()
    params = _box_params((8, 24, 4, 16))  # rows 8..23, columns 4..15: tokens (2..5, 1..3) of the 8 x 8 grid
    out = mixer.reweight(params, attn)
    cls_row = attn[:, :, 0, 1:].mean(1).reshape(3, 8, 8)
    pasted = cls_row[:, 2:6, 1:4].sum((1, 2)) / cls_row.sum((1, 2))
    expected = ratio * params.lam + (1 - ratio) * (1 - pasted)
    torch.testing.assert_close(out.lam, expected)
    torch.testing.assert_close(out.extra["lam_area"], params.lam)
    assert out.lam.dtype == torch.float32


def test_transmix_partner_weight_equals_the_attention_on_the_pasted_tokens():
    """With the class token's attention spread over the patches only, the partner's label weight is exactly the
    attention mass on the tokens it pasted (ratio 0)."""
    mixer = automix.create_mixer("transmix", mixup_alpha=0.0, ratio=0.0, num_classes=4)
    attn = torch.zeros(3, 1, 65, 65)
    attn[:, 0, 0, 1:] = torch.rand(3, 64, generator=torch.Generator().manual_seed(3)).softmax(-1)
    params = _box_params((0, 8, 24, 32))  # tokens (0..1, 6..7)
    lam = mixer.reweight(params, attn).lam
    mass = attn[:, 0, 0, 1:].reshape(3, 8, 8)[:, 0:2, 6:8].sum((1, 2))
    torch.testing.assert_close(1 - lam, mass)
    # A box that covers half of one token counts half of that token's attention.
    half = mixer.reweight(_box_params((0, 2, 0, 4)), attn).lam
    torch.testing.assert_close(1 - half, 0.5 * attn[:, 0, 0, 1])


def test_transmix_leaves_mixup_draws_alone_and_checks_its_context():
    mixer = automix.create_mixer("transmix", cutmix_alpha=1.0, switch_prob=0.0, num_classes=4)
    x, y = image_batch(0, 3)
    params = mixer.sample(x, torch.Generator().manual_seed(0))
    assert params.box is None and mixer.reweight(params, _cls_attention()) is params
    cut = automix.create_mixer("transmix", switch_prob=1.0, num_classes=4)
    params = cut.sample(x, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"context must be attention probabilities \[B, heads, N, N\] with B=3"):
        cut.reweight(params, torch.rand(3, 65))
    with pytest.raises(ValueError, match="context gives 50 tokens"):
        cut.reweight(params, torch.rand(3, 2, 50, 50))
    with pytest.raises(TypeError, match="transmix takes mixup_alpha and cutmix_alpha, not alpha"):
        automix.create_mixer("transmix", alpha=1.0)
    with pytest.raises(ValueError, match=r"ratio must be in \[0.0, 1.0\], got 2"):
        automix.create_mixer("transmix", ratio=2)
    with pytest.raises(ValueError, match="mixers: 'transmix' reads the model's 'attention' context"):
        automix.create_mixer("mix_choice", mixers=["transmix", "mixup"], num_classes=4)


@pytest.mark.parametrize("name", ["transmix", "mixpro", "tla"])
def test_a_reweighting_mixer_called_bare_is_refused_and_says_how_to_train_it(name):
    """``mixer(x, y)`` cannot see the attention of the model's pass on the mixed batch: it would hand out area
    labels as if they were the method's, so it is refused, naming the method and training_step; a draw already
    reweighted replays (``params=``), and the step-by-step path gives the attention's targets."""
    from automix.mixers.mixpro import MixPro
    from automix.mixers.tla import TLA

    mixer = {"transmix": lambda: automix.create_mixer("transmix", switch_prob=1.0, num_classes=4),
             "mixpro": lambda: MixPro(patch_size=4, switch_prob=1.0, num_classes=4),
             "tla": lambda: TLA(patch_size=4, num_classes=4)}[name]()
    x, y = image_batch(0, 3)
    with pytest.raises(TypeError, match=rf"{name} sets its label weight from the .*attention.* of the model's forward "
                                        rf"pass on the mixed batch.*create_method\('{name}', model.*training_step"):
        mixer(x, y)
    with pytest.raises(TypeError, match="training_step"):
        mixer(x, y, torch.Generator().manual_seed(0), context=_cls_attention())
    model = tiny_vit()
    params = mixer.sample(x, torch.Generator().manual_seed(0))
    with capture_context(mixer.reweights, model, **mixer.context_options()) as seen:
        model(mixer.apply(x, params))
    params = mixer.reweight(params, seen.value)
    out = mixer(x, y, params=params)
    torch.testing.assert_close(out.y, mixer.mix_targets(y, params))
    torch.testing.assert_close(out.x, mixer.apply(x, params))
    with pytest.raises(ValueError, match=f"mixer {name!r} reads the model's"):
        automix.MixCollate(mixer)


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_transmix_method_reads_the_mixed_batchs_attention_in_its_own_pass(mode):
    method = automix.create_method("transmix", tiny_vit(), num_classes=4, mode=mode, switch_prob=0.5, seed=0)
    assert automix.methods.method_spec("transmix").kind == "model-aware"
    x, y = image_batch(0, 8)
    calls = []
    method.model.register_forward_pre_hook(lambda m, args: calls.append(args[0].detach().clone()))
    method.training_step(x, y)
    assert len(calls) == 1, "no second forward pass"
    params = method.last_params["mix"]
    assert torch.equal(calls[0], method.apply(x, params))
    attn = attention(method.model, calls[0])  # the same model, the same mixed batch
    area = params.extra["lam_area"]
    expected = method.mixer.reweight(
        MixParams(**{**params.__dict__, "lam": area, "extra": {k: v for k, v in params.extra.items()
                                                               if k != "lam_area"}}), attn).lam
    torch.testing.assert_close(params.lam, expected)
    if mode == "elem":
        choice = params.extra["choice"]
        assert torch.equal(params.lam[choice == 0], area[choice == 0]), "mixup samples keep their lam"
    else:
        assert not torch.equal(params.lam, area) or params.extra["choice"] == 0


def test_transmix_asks_for_attention_only_on_cutmix_draws(monkeypatch):
    fused = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: fused.append(1) or sdpa(*a, **k))
    x, y = image_batch(0, 4)
    automix.create_method("transmix", tiny_vit(), num_classes=4, switch_prob=0.0, seed=0).training_step(x, y)
    assert len(fused) == 2, "a Mixup draw: every block on the fused kernel"
    automix.create_method("transmix", tiny_vit(), num_classes=4, switch_prob=1.0, seed=0).training_step(x, y)
    assert len(fused) == 3, "a CutMix draw: the last block explicit"


def test_transmix_trains_from_the_trainer(tmp_path):
    from automix.cli import main

    out = tmp_path / "run"
    code = main(["train", "--dataset", "digits", "--subset", "64", "--epochs", "1", "--batch-size", "16",
                 "--model", "vit_tiny", "--model-opt", "depth=1", "--model-opt", "patch_size=4",
                 "--method", "transmix", "--no-progress", "--no-save-images", "--output", str(out),
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    text = (out / "args.yaml").read_text()
    assert "depth: 1" in text and "method: transmix" in text


def test_build_model_builds_the_vit_for_the_images_side():
    from automix.train.build import build_model
    from automix.train.config import from_dict, validate

    cfg = validate(from_dict({"model": "vit_tiny", "model_opts": {"depth": 1, "patch_size": 8}}))
    assert build_model(cfg, 10, 3, 64).img_size == 64
    assert build_model(cfg, 10, 1).img_size == 32 and build_model(cfg, 10, 1).in_chans == 1
    with pytest.raises(ValueError, match=r"model_opts img_size=224 is set by --img-size"):
        validate(from_dict({"model": "vit_tiny", "model_opts": {"img_size": 224}}))
    with pytest.raises(TypeError, match="unexpected keyword argument 'widht'"):
        build_model(validate(from_dict({"model": "vit_tiny", "model_opts": {"widht": 1}})), 10, 3)


def test_transmix_takes_timms_switch_flags_from_the_trainer():
    from automix.train.build import build_method
    from automix.train.config import from_dict, validate

    def mixer(values):
        return build_method(validate(from_dict({"method": "transmix", **values})), tiny_vit(), 4, 10, 0).mixer

    plain = mixer({})
    assert (plain.mixup_alpha, plain.cutmix_alpha, plain.switch_prob, plain.ratio) == (0.8, 1.0, 0.8, 0.5)
    given = mixer({"mixup": 0.5, "cutmix": 2.0, "method_opts": {"ratio": 0.0}})
    assert (given.mixup_alpha, given.cutmix_alpha, given.switch_prob, given.ratio) == (0.5, 2.0, 0.8, 0.0)
    assert mixer({"cutmix": 1.0}).mixup_alpha == 0.8, "a flag not given is TransMix's own, not 0"
    assert mixer({"mixup": 0.0}).cutmix_alpha == 1.0 and mixer({"mixup": 0.0}).mixup_alpha == 0.0
    with pytest.raises(ValueError, match="alpha 1.0 does not apply to method 'transmix': give --mixup and --cutmix"):
        validate(from_dict({"method": "transmix", "alpha": 1.0}))
    with pytest.raises(ValueError, match="mixup 0.8 applies only to method 'mixup_cutmix'.*and 'transmix'"):
        validate(from_dict({"method": "cutmix", "mixup": 0.8}))


VIT_RECIPES = ["cifar100/deit_s_mixup_cutmix", "cifar100/deit_s_transmix", "cifar100/deit_s_automix",
               "imagenet/deit_s_transmix", "cpu/cifar10_vit_tiny_vanilla", "cpu/cifar10_vit_tiny_mixup_cutmix",
               "cpu/cifar10_vit_tiny_transmix", "cpu/cifar10_vit_tiny_automix", "cifar100/deit_s_smmix",
               "cifar100/deit_s_mixpro", "cifar100/deit_s_tla", "imagenet/deit_s_smmix", "imagenet/deit_s_tla"]


@pytest.mark.parametrize("recipe", VIT_RECIPES)
def test_vit_recipes_build(recipe):
    """Each ViT recipe parses and builds its model and method for its images (224 px DeiT-S, 32 px vit_tiny)."""
    from pathlib import Path

    from automix.train.build import build_method, build_model
    from automix.train.config import from_dict, load_yaml, validate

    cfg = validate(from_dict(load_yaml(Path(__file__).resolve().parents[1] / "configs" / f"{recipe}.yaml")))
    side = cfg.img_size or 32
    classes = 100 if "cifar100" in recipe else (1000 if "imagenet" in recipe else 10)
    model = build_model(cfg, classes, 3, side)
    # DeiT-S: 224 / 16; the CPU protocol's vit_tiny: 32 / 8 (docs/benchmarks.md, the ViT protocol)
    assert model.img_size == side and model.patch_size == (16 if side == 224 else 8)
    method = build_method(cfg, model, classes, 100, 0)
    if cfg.method == "automix":
        assert method.token_features and method.mix_block.lam_concat and method.mix_block.upsample == "nearest"
    if cfg.method == "transmix":
        assert (method.mixer.mixup_alpha, method.mixer.cutmix_alpha, method.mixer.switch_prob) == (0.8, 1.0, 0.8)
    if cfg.method == "smmix":  # OpenMixup's CIFAR values, the authors' ImageNet ones; the authors' losses
        expected = (0.8, 1.0) if "cifar100" in recipe else (0.5, 0.8)
        assert (method.switch_prob, method.mixup_alpha) == expected and method.mixer.side_range((14, 14)) == (3, 10)
        assert method.fine_loss_weight == method.consistency_loss_weight == 1.0 and method.token_head is not None
    if cfg.method == "mixpro":
        assert (method.mixer.mask_patch_size, method.mixer.patch_size, method.mixer.switch_prob) == (64, 16, 0.8)
        assert method.mixer.maskmix.cell((224, 224)) == 64
    if cfg.method == "tla":
        assert method.mixer.patch_size == 16 and method.mixer.alpha == 1.0


# ---------------------------------------------------------------- TokenMix


@pytest.mark.parametrize("mask_type", ["block", "random"])
def test_tokenmix_pastes_exactly_its_token_count_on_whole_tokens(mask_type):
    from automix.mixers.tokenmix import TokenMix

    mixer = TokenMix(patch_size=4, mask_type=mask_type, mode="elem", num_classes=4)
    x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 4, (64,))
    out = mixer(x, y, torch.Generator().manual_seed(0))
    tokens = out.params.mask[:, 0, ::4, ::4]
    assert torch.equal(out.params.mask[:, 0], tokens.repeat_interleave(4, 1).repeat_interleave(4, 2))
    count = tokens.flatten(1).sum(1)
    torch.testing.assert_close(out.lam, 1 - count.float() / 64)
    assert int(count.min()) >= 5, "min_tokens: 14 / 196 of 64 tokens, rounded"
    assert torch.equal(automix.mixers.base.mix_targets(y, out.params, 4), out.y)
    fixed = TokenMix(patch_size=4, mask_type=mask_type, mode="elem", lam=0.5, num_classes=4)
    count = fixed(x, y, torch.Generator().manual_seed(1)).params.mask[:, 0, ::4, ::4].flatten(1).sum(1)
    assert torch.equal(count, torch.full((64,), 32 + 5)), "floor((1 - lam) N) + min_tokens, exactly"
    full = TokenMix(patch_size=4, mask_type=mask_type, lam=0.0, min_tokens=14, num_classes=4)(x, y, torch.Generator())
    assert bool(full.params.mask.all()), "capped at N"


def test_tokenmix_block_masks_are_blocks():
    """Block masks are made of rectangles: far fewer mask/no-mask borders between neighbouring tokens than random
    masks of the same counts."""
    from automix.mixers.tokenmix import block_masks, random_masks

    count = torch.full((200,), 98)
    gen = torch.Generator().manual_seed(1)
    edges = {}
    for name, draw in (("block", block_masks), ("random", random_masks)):
        m = draw(count, 14, 14, gen)
        assert torch.equal(m.flatten(1).sum(1), count)
        edges[name] = float((m[:, 1:] != m[:, :-1]).float().mean() + (m[:, :, 1:] != m[:, :, :-1]).float().mean())
    assert edges["block"] < 0.6 * edges["random"], edges


def test_tokenmix_teacher_labels_follow_its_activation_maps():
    from automix.mixers.tokenmix import TokenMix

    mixer = TokenMix(patch_size=8, mode="elem", num_classes=4, min_tokens=0)
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])
    cam = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(2))
    out = mixer(x, y, torch.Generator().manual_seed(0), context=cam)
    pasted = out.params.mask[:, 0, ::8, ::8].float()  # [3, 4, 4]
    norm = cam - cam.flatten(1).amin(1).view(-1, 1, 1)
    norm = norm / norm.flatten(1).sum(1).view(-1, 1, 1)
    torch.testing.assert_close(out.params.lam, (norm * (1 - pasted)).flatten(1).sum(1))
    torch.testing.assert_close(out.params.lam_partner, (norm[out.index] * pasted).flatten(1).sum(1))


def test_tokenmix_method_with_and_without_a_teacher():
    x, y = image_batch(0, 6)
    plain = automix.create_method("tokenmix", tiny_vit(), num_classes=4, mode="elem", seed=0)
    plain.training_step(x, y)
    assert plain.mixer.patch_size == 4 and plain.last_params["mix"].lam_partner is None
    torch.manual_seed(1)
    teacher = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("tokenmix", tiny_vit(), num_classes=4, mode="elem", seed=0, teacher=teacher)
    loss, _ = method.training_step(x, y)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters()), "the teacher is not trained"
    assert not any(p is q for g in method.param_groups() for p in g["params"] for q in teacher.parameters())
    params = method.last_params["mix"]
    cam = automix.context.class_activation_map(teacher, x, y)  # [6, 4, 4]: the teacher's 4 x 4 map
    from automix.mixers.snapmix import normalised_cam

    norm = normalised_cam(cam, (8, 8))
    pasted = params.mask[:, 0, ::4, ::4].float()
    torch.testing.assert_close(params.lam, (norm * (1 - pasted)).flatten(1).sum(1))
    torch.testing.assert_close(params.lam_partner, (norm[params.index] * pasted).flatten(1).sum(1))


def test_tokenmix_bad_input_is_named():
    cnn = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match=r"^model: CifarResNet has no patch size \(not a ViT\), and tokenmix mixes "
                                         r"whole tokens .*vit_tiny.* or give patch_size="):
        automix.create_method("tokenmix", cnn, num_classes=4)
    automix.create_method("tokenmix", cnn, num_classes=4, patch_size=8)  # given: any model
    with pytest.raises(ValueError, match=r"x must have height and width multiples of patch_size=4, got \(30, 32\)"):
        automix.create_method("tokenmix", tiny_vit(), num_classes=4).mixer.sample(torch.rand(2, 3, 30, 32))
    with pytest.raises(ValueError, match="mode 'pair' does not apply to tokenmix with a teacher: .* 'batch' or 'elem'"):
        automix.create_method("tokenmix", tiny_vit(), num_classes=4, mode="pair", teacher=cnn)
    with pytest.raises(ValueError, match=r"mask_type must be one of \['block', 'random'\], got 'grid'"):
        automix.create_method("tokenmix", tiny_vit(), num_classes=4, mask_type="grid")
    with pytest.raises(ValueError, match="min_tokens must be an int >= 0"):
        automix.create_method("tokenmix", tiny_vit(), num_classes=4, min_tokens=-1)
