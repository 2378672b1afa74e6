"""The vision-transformer methods SMMix, MixPro and TL-Align (issue 16): their draws and label weights computed by
hand on hand-made attention maps and on a 2-block ViT, their switches, the trainer and exact resume, and the errors
for bad input. The contract matrix (tests/test_method_contract.py) runs over them too."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from conftest import image_batch, tiny_vit
from test_train import Boom, rows

import automix
from automix.context import attention, attention_maps, capture_context
from automix.losses import soft_targets, target_loss
from automix.mixers import MixParams
from automix.mixers._sampling import box_mask
from automix.mixers.mixpro import MaskMix, MixPro
from automix.mixers.smmix import SMMix, best_squares
from automix.mixers.tla import TLA, trace_label_weights
from automix.train import engine

NAMES = ("smmix", "mixpro", "tla")


def softmax_rows(batch, heads, n, seed=0):
    """Hand-made attention probabilities [batch, heads, n, n]: random rows that sum to 1."""
    return torch.rand(batch, heads, n, n, generator=torch.Generator().manual_seed(seed)).mul(4).softmax(-1)


def hand_attention(model, x):
    """Every block's attention probabilities of ``model`` on ``x``, computed from the weights (no hooks, no flags)."""
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), tokens], 1) + model.pos_embed
    maps = []
    for blk in model.blocks:
        attn, z = blk.attn, blk.norm1(tokens)
        b, n, c = z.shape
        qkv = (z @ attn.qkv.weight.T + attn.qkv.bias).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        maps.append((q @ k.transpose(-2, -1) / (c // attn.num_heads) ** 0.5).softmax(-1))
        tokens = blk(tokens)
    return maps


# ---------------------------------------------------------------- SMMix


def brute_square(score, side, largest):
    """The (row, col) of the side x side square of least / most total ``score`` [h, w], first in row-major order."""
    h, w = score.shape
    best, where = None, None
    for r, c in itertools.product(range(h - side + 1), range(w - side + 1)):
        total = float(score[r:r + side, c:c + side].double().sum())
        if best is None or (total > best if largest else total < best):
            best, where = total, (r, c)
    return where


def test_best_squares_match_a_brute_force_search():
    score = torch.rand(5, 6, 7, generator=torch.Generator().manual_seed(0))
    side = torch.tensor([1, 2, 3, 6, 4])
    for largest in (False, True):
        top, left = best_squares(score, side, largest=largest)
        for i in range(5):
            assert (int(top[i]), int(left[i])) == brute_square(score[i], int(side[i]), largest), (i, largest)


@pytest.mark.parametrize("score", ["patches", "cls"])
def test_smmix_pastes_the_partners_most_attended_square_over_the_least_attended(score):
    mixer = SMMix(patch_size=4, score=score, mode="elem", num_classes=4)
    x, y = image_batch(0, 6)
    attn = softmax_rows(6, 3, 65, seed=1)
    out = mixer(x, y, torch.Generator().manual_seed(0), context=attn)
    params = out.params
    # The scores by hand: the patch tokens' attention received from the patch tokens (the authors'), or the class
    # token's attention (OpenMixup's), averaged over heads.
    rated = attn[:, :, 1:, 1:].mean((1, 2)) if score == "patches" else attn[:, :, 0, 1:].mean(1)
    rated = rated.reshape(6, 8, 8)
    tokens = params.mask[:, 0, ::4, ::4]
    for i in range(6):
        j = int(params.index[i])
        rows_, cols_ = torch.nonzero(tokens[i], as_tuple=True)
        side = int(rows_.max() - rows_.min() + 1)
        assert int(tokens[i].sum()) == side * side, "one square of whole tokens"
        assert 2 <= side <= 6, "int(8 * 0.25) .. int(8 * 0.75) tokens a side"
        assert (int(rows_.min()), int(cols_.min())) == brute_square(rated[i], side, largest=False)
        src = brute_square(rated[j], side, largest=True)
        assert params.extra["shift"][i].tolist() == [4 * (src[0] - int(rows_.min())), 4 * (src[1] - int(cols_.min()))]
        r0, c0 = 4 * int(rows_.min()), 4 * int(cols_.min())
        pasted = out.x[i, :, r0:r0 + 4 * side, c0:c0 + 4 * side]
        assert torch.equal(pasted, x[j, :, 4 * src[0]:4 * (src[0] + side), 4 * src[1]:4 * (src[1] + side)])
        keep = ~params.mask[i, 0]
        assert torch.equal(out.x[i][:, keep], x[i][:, keep]), "the rest is the sample's own"
        assert float(out.lam[i]) == pytest.approx(1 - side * side / 64)
    assert out.lam.dtype == torch.float32 and params.mask.dtype == torch.bool and params.mask.shape == (6, 1, 32, 32)


@pytest.mark.parametrize("grid, low, high", [(14, 3, 10), (8, 2, 6), (2, 1, 1)])
def test_smmix_square_sides_cover_the_references_range(grid, low, high):
    mixer = SMMix(patch_size=4, mode="elem", num_classes=4)
    assert mixer.side_range((grid, grid)) == (low, high)
    n = 4 * grid
    attn = torch.full((64, 1, 1 + grid * grid, 1 + grid * grid), 1.0 / (1 + grid * grid))
    params = mixer.sample(torch.rand(64, 3, n, n), torch.Generator().manual_seed(0), context=attn)
    sides = params.mask[:, 0].flatten(1).sum(1).float().div(16).sqrt().round().long()
    assert set(sides.tolist()) == set(range(low, high + 1)), "every side in the range is drawn"
    batch = SMMix(patch_size=4, num_classes=4).sample(torch.rand(8, 3, n, n), torch.Generator().manual_seed(1),
                                                       context=attn[:8])
    assert len(set(batch.mask[:, 0].flatten(1).sum(1).tolist())) == 1, "batch mode: one side for the batch"


def test_smmix_replays_and_mixes_segmentation_maps_alike():
    mixer = SMMix(patch_size=4, num_classes=4, mode="elem")
    x, y = image_batch(1, 5)
    out = mixer(x, y, torch.Generator().manual_seed(3), context=softmax_rows(5, 2, 65, seed=2))
    assert torch.equal(mixer.apply(x, out.params), out.x)
    ids = torch.arange(5).view(5, 1, 1).expand(5, 32, 32)  # each pixel labelled with its image
    seg = mixer.apply_seg(ids, out.params, x)
    own = ~out.params.mask[:, 0]
    assert torch.equal(seg[own], ids[own]) and torch.equal(seg[~own], out.params.index.view(5, 1, 1).expand(
        5, 32, 32)[~own])


def _smmix(**kw):
    return automix.create_method("smmix", tiny_vit(), num_classes=4, seed=0, **{"switch_prob": 1.0, **kw})


@pytest.mark.parametrize("share_head", [False, True])
def test_smmix_losses_equal_a_computation_by_hand(share_head):
    method = _smmix(share_head=share_head, label_smoothing=0.1)
    model = method.model
    x, y = image_batch(2, 6)
    calls = []
    model.register_forward_pre_hook(lambda m, args: calls.append(m.training))
    loss, logs = method.training_step(x, y)
    assert calls == [False, True], "a clean pass in eval mode, then the mixed batch's in train mode"
    params = method.last_params["mix"]
    assert params.extra["choice"] == "smmix"
    with torch.no_grad():
        model.eval()
        clean = model(x)
        attn = attention(model, x)
        model.train()
    # The regions come from the clean pass's last-block attention.
    rated = attn[:, :, 1:, 1:].mean((1, 2)).reshape(6, 8, 8)
    tokens = params.mask[:, 0, ::4, ::4]
    for i in range(6):
        side = round(int(tokens[i].sum()) ** 0.5)
        r, c = torch.nonzero(tokens[i], as_tuple=True)
        assert (int(r.min()), int(c.min())) == brute_square(rated[i], side, largest=False)
    with torch.no_grad():
        mixed = method.apply(x, params)
        feats = model.forward_features(mixed)
        logits = model.forward_head(feats)
        targets = soft_targets(y, 4, 0.1)
        lam = params.lam
        mixed_t = lam[:, None] * targets + (1 - lam[:, None]) * targets[params.index]
        loss_cls = target_loss("ce", logits, mixed_t)
        head = model.head if share_head else method.token_head
        pasted = tokens.flatten(1).float()
        patches = feats[:, 1:]
        mean_kept = (patches * (1 - pasted)[..., None]).sum(1) / (1 - pasted).sum(1, keepdim=True)
        mean_pasted = (patches * pasted[..., None]).sum(1) / pasted.sum(1, keepdim=True)
        loss_fine = 0.5 * (target_loss("ce", head(mean_kept), targets)
                           + target_loss("ce", head(mean_pasted), targets[params.index]))
        p = (lam[:, None] * clean + (1 - lam[:, None]) * clean[params.index]).softmax(1)
        loss_con = (p * (p.log() - logits.log_softmax(1))).sum(1).mean()
    torch.testing.assert_close(logs["loss_cls"], loss_cls)
    torch.testing.assert_close(logs["loss_fine"], loss_fine)
    torch.testing.assert_close(logs["loss_con"], loss_con, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss, loss_cls + loss_fine + loss_con)
    assert (method.token_head is None) == share_head
    loss.backward()
    trained = method.model.head if share_head else method.token_head
    assert trained.weight.grad is not None and trained.weight.grad.abs().sum() > 0


def test_smmix_loss_weights_and_the_openmixup_setting():
    x, y = image_batch(3, 4)
    full = _smmix().training_step(x, y)[1]
    plain_loss, plain = _smmix(fine_loss_weight=0.0, consistency_loss_weight=0.0).training_step(x, y)
    torch.testing.assert_close(plain_loss, plain["loss_cls"])
    torch.testing.assert_close(full["loss"], full["loss_cls"] + full["loss_fine"] + full["loss_con"])
    half = _smmix(fine_loss_weight=0.5, consistency_loss_weight=2.0).training_step(x, y)[1]
    torch.testing.assert_close(half["loss"], half["loss_cls"] + 0.5 * half["loss_fine"] + 2.0 * half["loss_con"])


def test_smmix_switches_with_mixup_per_batch():
    x, y = image_batch(4, 6)
    method = _smmix(switch_prob=0.0)
    passes = []
    method.model.register_forward_pre_hook(lambda m, args: passes.append(1))
    loss, logs = method.training_step(x, y)
    params = method.last_params["mix"]
    assert params.extra["choice"] == "mixup" and params.mask is None and len(passes) == 1, "no clean pass"
    assert float(logs["loss_fine"]) == 0 and float(logs["loss_con"]) == 0
    torch.testing.assert_close(method.apply(x, params), params.lam[0] * x + (1 - params.lam[0]) * x[params.index])
    choices = []
    method = _smmix(switch_prob=0.5)
    for step in range(40):
        method.training_step(*image_batch(step, 2))
        choices.append(method.last_params["mix"].extra["choice"])
    assert 8 < choices.count("smmix") < 32


def test_smmix_elem_mode_with_prob_skips_the_unmixed_samples_regions():
    method = _smmix(mode="elem", prob=0.5)
    x, y = image_batch(5, 8)
    loss, logs = method.training_step(x, y)
    params = method.last_params["mix"]
    unmixed = params.lam == 1
    assert bool(unmixed.any()) and bool((~unmixed).any())
    assert not params.mask[unmixed].any(), "an unmixed sample pastes nothing"
    assert torch.isfinite(loss) and torch.isfinite(logs["loss_fine"])


# ---------------------------------------------------------------- MixPro


@pytest.mark.parametrize("size, patch, cell", [(32, 4, 8), (224, 16, 64), (8, 4, 4)])
def test_maskmix_cells_follow_the_patches(size, patch, cell):
    mixer = MaskMix(patch_size=patch, mode="elem", num_classes=4)
    assert mixer.cell((size, size)) == cell, "the reference's 64 px at 224 / 16, scaled with the grid"
    x = torch.rand(6, 3, size, size)
    out = mixer(x, torch.arange(6) % 4, torch.Generator().manual_seed(0))
    mask = out.params.mask[:, 0]
    cells = mask[:, ::cell, ::cell]
    per_side = math.ceil(size / cell)
    assert cells.shape[1:] == (per_side, per_side)
    expanded = cells.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :size, :size]
    assert torch.equal(mask, expanded), "one value per mask cell"
    torch.testing.assert_close(out.lam, 1 - mask.float().mean((1, 2)))


def test_maskmix_keeps_ceil_lam_cells_and_draws_a_mask_per_sample():
    mixer = MaskMix(patch_size=4, mask_patch_size=8, lam=0.3, num_classes=4)
    out = mixer(torch.rand(16, 3, 32, 32), torch.arange(16) % 4, torch.Generator().manual_seed(0))
    own = (~out.params.mask[:, 0, ::8, ::8]).flatten(1).sum(1)
    assert torch.equal(own, torch.full((16,), math.ceil(0.3 * 16))), "ceil(lam * cells) cells keep the sample"
    assert len({tuple(m.flatten().tolist()) for m in out.params.mask}) > 1, "batch mode: one lam, a mask each"
    cropped = MaskMix(patch_size=4, mask_patch_size=12, lam=0.5, num_classes=4)  # 3 x 3 cells, the last cropped
    out = cropped(torch.rand(4, 3, 32, 32), torch.arange(4), torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.lam, 1 - out.params.mask.float().mean((1, 2, 3)))


def _maskmix_draw(mixer, seed=0):
    x, y = image_batch(seed, 4)
    return x, y, mixer.sample(x, torch.Generator().manual_seed(seed))


def test_mixpro_attention_lam_is_the_class_tokens_attention_on_the_kept_tokens():
    mixer = MixPro(patch_size=4, mask_patch_size=8, switch_prob=1.0, num_classes=4)
    x, y, params = _maskmix_draw(mixer)
    attn = softmax_rows(4, 3, 65, seed=5)
    out = mixer.reweight(params, attn)
    own = (~params.mask[:, 0, ::4, ::4]).flatten(1).float()  # [4, 64] tokens that show the sample
    row = attn[:, :, 0, 1:].mean(1)
    expected = (row * own).sum(1) / row.sum(1)
    torch.testing.assert_close(out.lam, expected)
    torch.testing.assert_close(out.extra["lam_attn"], expected)
    torch.testing.assert_close(out.extra["lam_area"], params.lam)
    uniform = torch.zeros(4, 1, 65, 65)
    uniform[:, 0, 0, 1:] = 1 / 64
    torch.testing.assert_close(mixer.reweight(params, uniform).lam, params.lam), "uniform attention: the area lam"


def test_mixpro_progress_blends_the_two_lams_by_the_predictions_cosine():
    mixer = MixPro(patch_size=4, mask_patch_size=8, switch_prob=1.0, num_classes=4, label_smoothing=0.1)
    x, y, params = _maskmix_draw(mixer, seed=1)
    params = mixer.reweight(params, softmax_rows(4, 2, 65, seed=6))
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(7))
    out = mixer.progress(params, logits, y)
    area, attn_lam = params.extra["lam_area"], params.extra["lam_attn"]
    target = soft_targets(y, 4, 0.1)
    mixed = area[:, None] * target + (1 - area[:, None]) * target[params.index]
    pred = logits.softmax(1)
    sim = (pred * mixed).sum(1) / (pred.norm(dim=1) * mixed.norm(dim=1))
    torch.testing.assert_close(out.extra["progress"], sim)
    torch.testing.assert_close(out.lam, sim * attn_lam + (1 - sim) * area)
    # A prediction equal to the targets: all attention; orthogonal to them: all area.
    perfect = mixer.progress(params, mixed.log(), y)
    torch.testing.assert_close(perfect.lam, attn_lam)
    plain = MixPro(patch_size=4, mask_patch_size=8, switch_prob=1.0, num_classes=4)
    zeros = torch.zeros(4, dtype=torch.long)  # every label class 0, so every mix's target is class 0 ...
    away = torch.full((4, 4), -1e4)
    away[:, 1] = 0  # ... and every prediction class 1
    torch.testing.assert_close(plain.progress(params, away, zeros).lam, area)


@pytest.mark.parametrize("mode, switch_prob", [("batch", 1.0), ("elem", 0.6)])
def test_mixpro_method_reads_the_mixed_batchs_own_pass(mode, switch_prob):
    method = automix.create_method("mixpro", tiny_vit(), num_classes=4, seed=0, mode=mode, switch_prob=switch_prob)
    x, y = image_batch(6, 8)
    calls = []
    method.model.register_forward_pre_hook(lambda m, args: calls.append(args[0].detach().clone()))
    loss, _ = method.training_step(x, y)
    assert len(calls) == 1, "no second forward pass"
    params = method.last_params["mix"]
    assert torch.equal(calls[0], method.apply(x, params))
    with torch.no_grad():
        logits = method.model(calls[0])
    attn = attention(method.model, calls[0])
    area = MixParams(**{**params.__dict__, "lam": params.extra["lam_area"],
                        "extra": {k: v for k, v in params.extra.items()
                                  if k not in ("lam_area", "lam_attn", "progress")}})
    expected = method.mixer.progress(method.mixer.reweight(area, attn), logits, y)
    torch.testing.assert_close(params.lam, expected.lam)
    torch.testing.assert_close(loss, target_loss("ce", logits, method.mixer.mix_targets(y, params)))
    if mode == "elem":
        choice = params.extra["choice"]
        assert bool((choice == 0).any()) and bool((choice == 1).any())
        assert torch.equal(params.lam[choice == 0], params.extra["lam_area"][choice == 0]), "mixup keeps its lam"


def test_mixpro_reads_attention_only_on_maskmix_draws(monkeypatch):
    fused = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: fused.append(1) or sdpa(*a, **k))
    x, y = image_batch(0, 4)
    automix.create_method("mixpro", tiny_vit(), num_classes=4, switch_prob=0.0, seed=0).training_step(x, y)
    assert len(fused) == 2, "a mixup draw: every block on the fused kernel"
    automix.create_method("mixpro", tiny_vit(), num_classes=4, switch_prob=1.0, seed=0).training_step(x, y)
    assert len(fused) == 3, "a MaskMix draw: the last block explicit"


# ---------------------------------------------------------------- TL-Align


def test_tla_pastes_a_box_of_whole_tokens():
    mixer = TLA(patch_size=4, mode="elem", num_classes=4)
    x = torch.rand(32, 3, 32, 32)
    params = mixer.sample(x, torch.Generator().manual_seed(0))
    box = params.box
    assert box.shape == (32, 4) and bool((box % 4 == 0).all()), "the box follows patch borders"
    area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
    torch.testing.assert_close(params.lam, 1 - area.float() / 1024)


def test_trace_of_hand_made_attention():
    share = torch.tensor([[0.0, 1.0, 1.0, 1.0, 0.0]])  # class token, then 4 tokens: the last pasted
    start = torch.tensor([[0.75, 1.0, 1.0, 1.0, 0.0]])
    eye = torch.eye(5).view(1, 1, 5, 5)
    torch.testing.assert_close(trace_label_weights([eye, eye], start), start), "attending to oneself keeps labels"
    uniform = torch.full((1, 2, 5, 5), 0.2)
    once = trace_label_weights([uniform], start)
    torch.testing.assert_close(once, 0.5 * (start + start.mean())), "(A w + w) / 2 with A = mean"
    look = torch.zeros(1, 1, 5, 5)
    look[0, 0, :, 4] = 1.0  # every token looks at the pasted one
    twice = trace_label_weights([look, look], start)
    torch.testing.assert_close(twice[0, 0], torch.tensor(0.25 * 0.75)), "((0.75 + 0) / 2 + 0) / 2"
    assert share.shape == start.shape


def test_tla_lam_is_traced_through_every_block_of_a_two_block_vit():
    method = automix.create_method("tla", tiny_vit(), num_classes=4, seed=0, mode="elem")
    x, y = image_batch(7, 6)
    calls = []
    method.model.register_forward_pre_hook(lambda m, args: calls.append(args[0].detach().clone()))
    loss, _ = method.training_step(x, y)
    assert len(calls) == 1, "no second forward pass"
    params = method.last_params["mix"]
    with torch.no_grad():
        a1, a2 = hand_attention(method.model, calls[0])
        logits = method.model(calls[0])
    partner = box_mask(params.box, (32, 32), "cpu")
    own = 1 - partner[:, 0, ::4, ::4].flatten(1).float()
    w = torch.cat([params.extra["lam_area"][:, None], own], 1)
    for a in (a1, a2):
        w = 0.5 * (a.mean(1) @ w[..., None])[..., 0] + 0.5 * w
    torch.testing.assert_close(params.lam, w[:, 0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(params.lam, params.extra["lam_area"]), "the attention moves the label"
    # The authors' label embedding (one class vector per token, smoothed) traced the same way gives the same targets.
    smooth = soft_targets(y, 4, 0.1)
    embed = own[..., None] * smooth[:, None] + (1 - own[..., None]) * smooth[params.index][:, None]
    embed = torch.cat([(params.extra["lam_area"][:, None] * smooth + (1 - params.extra["lam_area"][:, None])
                        * smooth[params.index])[:, None], embed], 1)
    for a in (a1, a2):
        embed = 0.5 * (a.mean(1) @ embed + embed)
    mixed = params.lam[:, None] * smooth + (1 - params.lam[:, None]) * smooth[params.index]
    torch.testing.assert_close(embed[:, 0], mixed, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss, target_loss("ce", logits, method.mixer.mix_targets(y, params)))


def test_attention_maps_context_reads_every_block_from_one_pass():
    model = tiny_vit(depth=3).eval()
    x = image_batch(8, 3)[0]
    with torch.no_grad():
        expected = hand_attention(model, x)
    got = attention_maps(model, x)
    assert len(got) == 3 and all(g.shape == (3, 3, 65, 65) and g.dtype == torch.float32 for g in got)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    with capture_context("attention_maps", model) as seen, torch.no_grad():
        model(x)
    for g, e in zip(seen.value, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
    assert not any(b.attn.keep_attention for b in model.blocks), "every block back on the fused kernel"
    with pytest.raises(ValueError, match=r"'attention_maps', no options"):
        with capture_context("attention_maps", model, layer="blocks.0"):
            pass


# ---------------------------------------------------------------- all three


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size, patch", [(32, 4), (224, 16)])
def test_shapes_and_dtypes_at_both_sizes(name, size, patch):
    model = tiny_vit(depth=1, img_size=size, patch_size=patch)
    method = automix.create_method(name, model, num_classes=4, seed=0,
                                   **({"switch_prob": 1.0} if name != "tla" else {}))
    x, y = torch.rand(2, 3, size, size), torch.tensor([0, 3])
    loss, logs = method.training_step(x, y)
    loss.backward()
    params = method.last_params["mix"]
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    assert params.lam.dtype == torch.float32 and params.lam.shape == (2,) and params.index.shape == (2,)
    assert bool(((params.lam >= 0) & (params.lam <= 1)).all())
    weight = method.mix_preview(x)["mask"]
    assert weight.shape == (2, 1, size, size)
    cells = weight.unfold(2, patch, patch).unfold(3, patch, patch)
    assert torch.equal(cells.amax((-2, -1)), cells.amin((-2, -1))), "whole tokens are mixed"


@pytest.mark.parametrize("name", NAMES)
def test_trains_from_the_trainer(tmp_path, name):
    out = train(tmp_path, "--dataset", "digits", "--subset", "64", "--epochs", "1", "--batch-size", "16",
                "--model", "vit_tiny", "--model-opt", "depth=1", "--model-opt", "patch_size=4", "--method", name,
                "--no-save-images")
    assert f"method: {name}" in (out / "args.yaml").read_text()
    if name == "smmix":
        assert {"train_loss_cls", "train_loss_fine", "train_loss_con"} <= set(rows(out)[0])


def train(tmp_path, *args, name="run"):
    from automix.cli import main

    out = tmp_path / name
    assert main(["train", "--no-progress", "--output", str(out), "--cache-dir", str(tmp_path / "cache"), *args]) == 0
    return out


@pytest.mark.parametrize("name", NAMES)
def test_resume_continues_exactly(tmp_path, monkeypatch, name):
    """A run killed mid-epoch and resumed ends with the same numbers and weights (SMMix's token head included)."""
    args = ["--dataset", "digits", "--subset", "96", "--epochs", "2", "--checkpoint-interval", "2",
            "--batch-size", "16", "--model", "vit_tiny", "--model-opt", "depth=1", "--model-opt", "patch_size=4",
            "--opt", "adamw", "--lr", "1e-3", "--method", name, "--seed", "3", "--no-save-images",
            "--method-opt", "switch_prob=0.5" if name != "tla" else "alpha=1.0"]
    straight = train(tmp_path, *args, name="straight")
    calls = {"n": 0}
    original = engine.Run.train_step

    def flaky(self, x, y):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 1 (5 steps an epoch), 3rd step: the last checkpoint is after its 2nd
            raise Boom("killed")
        return original(self, x, y)

    monkeypatch.setattr(engine.Run, "train_step", flaky)
    with pytest.raises(Boom):
        train(tmp_path, *args, name="resumed")
    monkeypatch.setattr(engine.Run, "train_step", original)
    train(tmp_path, *args, "--resume", "auto", name="resumed")
    a, b = rows(straight), rows(tmp_path / "resumed")
    keys = [k for k in a[0] if k not in ("epoch_time", "img_per_s")]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    wa = torch.load(straight / "last.pt", weights_only=True)["method"]
    wb = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["method"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa if isinstance(wa[k], torch.Tensor))
    if name == "smmix":
        assert "token_head.weight" in wa


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_with_the_switch(name):
    def build(seed):
        return automix.create_method(name, tiny_vit(), num_classes=4, total_steps=10, seed=seed,
                                     **({"switch_prob": 0.5} if name != "tla" else {}))

    method = build(0)
    opt = torch.optim.AdamW(method.param_groups(), lr=1e-3)
    for step in range(3):
        loss, _ = method.training_step(*image_batch(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step()
    again = build(9)
    again.load_state_dict(copy.deepcopy(method.state_dict()))
    for step in range(3, 6):
        a, la = method.training_step(*image_batch(step))
        b, lb = again.training_step(*image_batch(step))
        assert torch.equal(a, b) and all(torch.equal(la[k], lb[k]) for k in la)


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_a_bf16_vit(name):
    model = tiny_vit(depth=1).to(torch.bfloat16)
    method = automix.create_method(name, model, num_classes=4, seed=0,
                                   **({"switch_prob": 1.0} if name != "tla" else {}))
    loss, _ = method.training_step(*image_batch(0, 4))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name, match", [
    ("smmix", r"^model: CifarResNet has no attention module that can give its attention map"),
    ("mixpro", r"^model: CifarResNet has no attention module that can give its attention map"),
    ("tla", r"^model: CifarResNet has no attention module that can give its attention map"),
])
def test_a_model_without_attention_is_refused_by_name(name, match):
    cnn = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match=match):
        automix.create_method(name, cnn, num_classes=4)


class NoPatchSize(torch.nn.Module):
    """A transformer that does not say its patch size (its attention can still be read)."""

    def __init__(self):
        super().__init__()
        vit = tiny_vit(depth=1)
        self.embed, self.cls_token, self.pos_embed = vit.patch_embed.proj, vit.cls_token, vit.pos_embed
        self.blocks, self.norm, self.head = vit.blocks, vit.norm, vit.head

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(t))[:, 0])


@pytest.mark.parametrize("name", NAMES)
def test_the_patch_size_is_read_or_asked_for(name):
    with pytest.raises(ValueError, match=r"^model: NoPatchSize has no patch size \(not a ViT\).* or give patch_size="):
        automix.create_method(name, NoPatchSize(), num_classes=4)
    method = automix.create_method(name, NoPatchSize(), num_classes=4, patch_size=4, seed=0,
                                   **({"switch_prob": 1.0} if name != "tla" else {}))
    assert torch.isfinite(method.training_step(*image_batch(0, 4))[0])
    with pytest.raises(ValueError, match=r"x must have height and width multiples of patch_size=4, got \(30, 32\)"):
        method.training_step(torch.rand(2, 3, 30, 32), torch.tensor([0, 1]))


@pytest.mark.parametrize("name, options, error, match", [
    ("smmix", {"min_side_ratio": 0.0}, ValueError, r"min_side_ratio must be in \(0.0, 1.0\], got 0.0"),
    ("smmix", {"max_side_ratio": 1.5}, ValueError, r"max_side_ratio must be in \(0.0, 1.0\], got 1.5"),
    ("smmix", {"min_side_ratio": 0.8, "max_side_ratio": 0.5}, ValueError,
     r"min_side_ratio must be <= max_side_ratio, got min_side_ratio=0.8 and max_side_ratio=0.5"),
    ("smmix", {"score": "heads"}, ValueError, r"score must be one of \['patches', 'cls'\], got 'heads'"),
    ("smmix", {"mode": "pair"}, ValueError, r"mode must be one of \['batch', 'elem'\], got 'pair'"),
    ("smmix", {"switch_prob": 1.5}, ValueError, r"switch_prob must be in \[0.0, 1.0\], got 1.5"),
    ("smmix", {"mixup_alpha": 0.0}, ValueError, r"mixup_alpha must be in \(0.0, inf\], got 0.0"),
    ("smmix", {"fine_loss_weight": -1.0}, ValueError, r"fine_loss_weight must be in \[0.0, inf\], got -1.0"),
    ("smmix", {"token_layer": "blokcs"}, ValueError, r"token_layer 'blokcs' is not a submodule of VisionTransformer"),
    ("smmix", {"layer": "head"}, ValueError, r"layer 'head' of VisionTransformer \(Linear\) holds no attention"),
    ("mixpro", {"mask_patch_size": 6}, ValueError,
     r"mask_patch_size must be a multiple of patch_size=4 \(a mask cell covers whole patches\), got 6"),
    ("mixpro", {"mask_patch_size": 0}, ValueError, r"mask_patch_size must be a positive int, got 0"),
    ("mixpro", {"switch_prob": -0.1}, ValueError, r"switch_prob must be in \[0.0, 1.0\], got -0.1"),
    ("mixpro", {"mixup_alpha": -1.0}, ValueError, r"mixup_alpha must be in \[0.0, inf\], got -1.0"),
    ("mixpro", {"layer": "blocks.9"}, ValueError, r"^layer 'blocks.9' is not a submodule of VisionTransformer"),
    ("mixpro", {"alpha": 0.0}, ValueError, r"alpha must be a finite number > 0, got 0.0"),
    ("tla", {"alpha": -1.0}, ValueError, r"alpha must be a finite number > 0, got -1.0"),
    ("tla", {"patch_size": 0}, ValueError, r"patch_size must be a positive int, got 0"),
    ("tla", {"mode": "batches"}, ValueError, r"mode must be one of \['batch', 'pair', 'elem'\], got 'batches'"),
])
def test_bad_options_are_named(name, options, error, match):
    with pytest.raises(error, match=match):
        automix.create_method(name, tiny_vit(), num_classes=4, **options)


def test_mask_cells_larger_than_the_image_are_refused():
    method = automix.create_method("mixpro", tiny_vit(), num_classes=4, mask_patch_size=64, switch_prob=1.0)
    with pytest.raises(ValueError, match=r"mask_patch_size must be at most the image side, got mask_patch_size=64 "
                                         r"for 32x32 images"):
        method.training_step(*image_batch(0, 2))


def test_bad_contexts_are_named():
    x, y = image_batch(0, 3)
    smmix = SMMix(patch_size=4, num_classes=4)
    with pytest.raises(ValueError, match=r"context must be given for smmix: it reads the model's 'attention'"):
        smmix(x, y)
    with pytest.raises(ValueError, match=r"context must be attention probabilities \[B, heads, N, N\] with B=3"):
        smmix(x, y, context=torch.rand(3, 65))
    with pytest.raises(ValueError, match=r"context has a 4x4 token grid, but patch_size=4 cuts the 32x32 images "
                                         r"into 8x8"):
        smmix(x, y, context=softmax_rows(3, 1, 17))
    mixpro = MixPro(patch_size=4, switch_prob=1.0, num_classes=4)
    params = mixpro.sample(x, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="context gives 50 tokens"):
        mixpro.reweight(params, torch.rand(3, 2, 50, 50))
    with pytest.raises(ValueError, match=r"logits must be \[B, K\] matching the targets \(3, 4\), got \(3, 5\)"):
        mixpro.progress(mixpro.reweight(params, softmax_rows(3, 1, 65)), torch.rand(3, 5), y)
    tla = TLA(patch_size=4, num_classes=4)
    params = tla.sample(x, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"context must be a non-empty sequence of attention probabilities"):
        tla.reweight(params, softmax_rows(3, 1, 65))
    with pytest.raises(ValueError, match=r"context must be a non-empty sequence"):
        tla.reweight(params, [])
    with pytest.raises(ValueError, match=r"context\[1\] must be attention probabilities \[B, heads, N, N\] with B=3"):
        tla.reweight(params, [softmax_rows(3, 1, 65), softmax_rows(2, 1, 65)])


def test_smmix_token_layer_that_gives_no_tokens_is_named():
    method = _smmix(token_layer="head")
    with pytest.raises(ValueError, match=r"token_layer 'head' gives shape \(6, 4\); SMMix needs the final tokens"):
        method.training_step(*image_batch(0))


def test_config_refuses_flags_the_methods_do_not_take():
    from automix.train.config import from_dict, validate

    with pytest.raises(ValueError, match="alpha 1.0 does not apply to method 'smmix'"):
        validate(from_dict({"method": "smmix", "alpha": 1.0}))
    with pytest.raises(ValueError, match="mixup 0.8 applies only to method 'mixup_cutmix'"):
        validate(from_dict({"method": "mixpro", "mixup": 0.8}))
    cfg = validate(from_dict({"method": "mixpro", "alpha": 2.0, "method_opts": {"mask_patch_size": 8}}))
    from automix.train.build import build_method

    method = build_method(cfg, tiny_vit(), 4, 10, 0)
    assert method.mixer.alpha == 2.0 and method.mixer.mask_patch_size == 8


def test_attention_tap_is_closed_after_every_step():
    for name in NAMES:
        method = automix.create_method(name, tiny_vit(), num_classes=4, seed=0,
                                       **({"switch_prob": 1.0} if name != "tla" else {}))
        method.training_step(*image_batch(0, 4))
        assert not any(b.attn.keep_attention for b in method.model.blocks), name
        assert not method.model.norm._forward_hooks, name


def test_smmix_under_ddp_expects_its_token_head_to_sit_out_mixup_steps(tmp_path):
    """SMMix's token head gets no gradient on mixup steps: the trainer must tell DDP (else the next step fails with
    "Expected to have finished reduction in the prior iteration")."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "automix",
           "train", "--dataset", "digits", "--subset", "160", "--epochs", "1", "--batch-size", "16", "--model",
           "vit_tiny", "--model-opt", "depth=1", "--model-opt", "patch_size=4", "--method", "smmix", "--method-opt",
           "switch_prob=0.3", "--no-progress", "--no-save-images", "--output", str(out), "--cache-dir",
           str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = rows(out)[0]
    assert 0 < float(row["train_loss_fine"]) < float(row["train_loss"]), "both kinds of steps ran"
    assert automix.create_method("smmix", tiny_vit(), num_classes=4).skips_parameters
    assert not automix.create_method("smmix", tiny_vit(), num_classes=4, switch_prob=1.0).skips_parameters
    assert not automix.create_method("smmix", tiny_vit(), num_classes=4, share_head=True).skips_parameters


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch, prob", [(4, 0.0), (1, 1.0)])
def test_unmixed_batches_and_a_batch_of_one(name, batch, prob):
    """prob 0 leaves the batch unmixed (lam 1; SMMix's region losses see only the sample's own tokens); a batch of
    one pairs the sample with itself."""
    method = automix.create_method(name, tiny_vit(), num_classes=4, seed=0, prob=prob,
                                   **({"switch_prob": 1.0} if name != "tla" else {}))
    x, y = image_batch(0, batch)
    loss, logs = method.training_step(x, y)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in logs.values())
    params = method.last_params["mix"]
    assert params.lam.shape == (batch,)
    if prob == 0.0:
        assert not params.mixed and torch.equal(params.lam, torch.ones(batch))
        assert torch.equal(method.apply(x, params), x)


def test_an_attention_layer_that_is_no_module_is_named_as_the_users_option():
    """find_attention named the path 'feature_layer' (resolve_module's default) whatever the user's option was."""
    x = image_batch(0, 2)[0]
    with pytest.raises(ValueError, match=r"^layer 'blocks.9' is not a submodule of VisionTransformer"):
        attention(tiny_vit(), x, layer="blocks.9")
    with pytest.raises(ValueError, match=r"^layer 'blocks.9' is not a submodule of VisionTransformer"):
        automix.create_method("smmix", tiny_vit(), num_classes=4, layer="blocks.9")


def test_smmix_needs_a_linear_classifier_for_its_token_head():
    vit = tiny_vit()
    vit.head = torch.nn.Conv2d(192, 4, 1)
    with pytest.raises(ValueError, match=r"model: SMMix's token head is a linear classifier beside the model's, which "
                                         r"must be an nn.Linear; got Conv2d at 'head'"):
        automix.create_method("smmix", vit, num_classes=4)


def test_mixpro_takes_a_given_lam_for_both_of_its_parts():
    # its parts were built with an alpha beside the lam, which every mixer refuses
    from automix.mixers.mixpro import MixPro

    mixer = MixPro(patch_size=4, mask_patch_size=8, switch_prob=0.5, lam=0.25, num_classes=3)
    assert mixer.maskmix.lam == 0.25 and all(m.lam == 0.25 for m in mixer.inner.mixers)


@pytest.mark.parametrize("name", [*NAMES, "tokenmix"])
@pytest.mark.parametrize("patch_size", [2, 8])
def test_a_patch_size_other_than_the_models_is_refused_when_built(name, patch_size):
    """The references mix whole tokens of the model's own grid: a finer patch_size cuts tokens, a coarser one draws
    on a grid the model does not have (SMMix refused it only on its own draws, so whether a run failed hung on
    the random switch)."""
    extra = {"switch_prob": 0.0} if name in ("smmix", "mixpro") else {}  # mixup draws only: still refused
    with pytest.raises(ValueError, match=rf"^patch_size={patch_size} differs from the model's patch size 4 "
                                         rf"\(VisionTransformer\): {name} mixes whole tokens"):
        automix.create_method(name, tiny_vit(), num_classes=4, patch_size=patch_size, **extra)
    method = automix.create_method(name, tiny_vit(), num_classes=4, patch_size=4, seed=0, **extra)
    assert method.mixer.patch_size == 4, "the model's own patch size is taken"
    if name == "mixpro":
        with pytest.raises(ValueError, match=r"mask_patch_size= for coarser mask cells"):
            automix.create_method(name, tiny_vit(), num_classes=4, patch_size=8)


def test_tokenmix_teacher_options_are_named_and_checked_when_built():
    vit = tiny_vit()
    with pytest.raises(ValueError, match=r"^teacher_layer: VisionTransformer has no nn.AdaptiveAvgPool2d .*give "
                                         r"teacher_layer="):
        automix.create_method("tokenmix", vit, num_classes=4, teacher=tiny_vit(depth=1))
    cnn = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match=r"^teacher_layer 'foo' is not a submodule of CifarResNet"):
        automix.create_method("tokenmix", vit, num_classes=4, teacher=cnn, teacher_layer="foo")
    with pytest.raises(ValueError, match=r"^teacher_head 'foo' is not a submodule of CifarResNet"):
        automix.create_method("tokenmix", vit, num_classes=4, teacher=cnn, teacher_head="foo")
    with pytest.raises(TypeError, match=r"^teacher_head must name an nn.Linear of the model, got Sequential"):
        automix.create_method("tokenmix", vit, num_classes=4, teacher=cnn, teacher_head="layer1")
    ten = automix.create_model("preact_resnet18", num_classes=10, width=4)
    with pytest.raises(ValueError, match=r"^teacher: CifarResNet gives 10 classes, but the student has 4 "
                                         r"\(num_classes\)"):
        automix.create_method("tokenmix", vit, num_classes=4, teacher=ten)
    with pytest.raises(ValueError, match=r"^teacher: CifarResNet gives 10 classes, but the student has 4 "
                                         r"\(the model's classifier\)"):
        automix.create_method("tokenmix", vit, teacher=ten)
    for option in ("teacher_layer", "teacher_head"):
        with pytest.raises(ValueError, match=rf"^{option} given without a teacher"):
            automix.create_method("tokenmix", vit, num_classes=4, **{option: "layer4"})
    # A layer that is not pooled into the head is still named by its option at the step.
    method = automix.create_method("tokenmix", vit, num_classes=4, teacher=cnn, teacher_layer="layer3", seed=0)
    with pytest.raises(TypeError, match=r"^teacher_layer 'layer3' gives shape \(4, 16, 8, 8\); a CAM for teacher_head "
                                        r"'fc' needs \[B, 32, h, w\]"):
        method.training_step(*image_batch(0, 4))
