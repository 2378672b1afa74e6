"""SnapMix (arXiv:2012.04846): label weights from the model's own CAMs agree with the realised box; the CAM pass
leaves no gradients and no BN statistics moved; a head that is not linear-after-pooling is refused by name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import image_batch, sample_id_probe, tiny_method

import automix
from automix.context import class_activation_map
from automix.losses import soft_target_cross_entropy
from automix.mixers._sampling import box_area, box_mask
from automix.mixers.snapmix import normalised_cam


def snapmix_method(**kw):
    return tiny_method("snapmix", **kw)


def batch(seed=0):
    return image_batch(seed)


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_label_weights_agree_with_the_realised_boxes_and_the_cams(mode):
    method = snapmix_method(mode=mode)
    x, y = batch()
    cam = normalised_cam(class_activation_map(method.model, x, y), (32, 32))
    loss, _ = method.training_step(x, y)
    params = method.last_params["mix"]
    own = method.apply(sample_id_probe(6, 32, 32), params)[torch.arange(6), torch.arange(6)]  # [B, H, W]
    pasted = 1.0 - own  # the partner's share at each pixel, read off the mixed probe
    assert pasted.flatten(1).amax(1).max() == 1, "a box was pasted"
    torch.testing.assert_close(params.lam, 1.0 - (cam * pasted).flatten(1).sum(1))
    # the partner's weight: its CAM mass in the box its patch is cut from (the next test checks that the pasted
    # content is that box resized)
    cut = box_mask(params.extra["src_box"], (32, 32), cam.device)[:, 0].float()
    torch.testing.assert_close(params.lam_partner, (cam[params.index] * cut).flatten(1).sum(1))
    assert not torch.allclose(params.lam + params.lam_partner, torch.ones(6)), "two weights, not lam and 1 - lam"
    target = params.lam[:, None] * F.one_hot(y, 4) + params.lam_partner[:, None] * F.one_hot(y[params.index], 4)
    torch.testing.assert_close(method.mixer.mix_targets(y, params), target.float())
    logits = method.model(method.apply(x, params))
    torch.testing.assert_close(loss, soft_target_cross_entropy(logits, target.float()))


def test_the_partner_patch_is_a_second_box_resized_into_the_first():
    mixer = automix.create_mixer("snapmix", num_classes=3, mode="elem")
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 3
    out = mixer(x, y, torch.Generator().manual_seed(3), context=torch.rand(8, 4, 4))
    box, src = out.params.box, out.params.extra["src_box"]
    assert not torch.equal(box, src), "the paper's second box, not the first one again"
    for i in range(8):
        y1, y2, x1, x2 = box[i].tolist()
        v1, v2, u1, u2 = src[i].tolist()
        if y2 == y1 or x2 == x1:
            torch.testing.assert_close(out.x[i], x[i])
            continue
        patch = F.interpolate(x[out.index[i]][None, :, v1:v2, u1:u2], size=(y2 - y1, x2 - x1), mode="bilinear",
                              align_corners=False)[0]
        torch.testing.assert_close(out.x[i, :, y1:y2, x1:x2], patch, atol=1e-5, rtol=1e-5)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[y1:y2, x1:x2] = False
        torch.testing.assert_close(out.x[i][:, outside], x[i][:, outside])
    # one pair of boxes in batch mode: the fast path agrees with the per-sample one
    batch_mix = automix.create_mixer("snapmix", num_classes=3)
    params = batch_mix.sample(x, torch.Generator().manual_seed(4), context=torch.rand(8, 4, 4))
    from automix.mixers.snapmix import paste_resized
    n = x.shape[0]
    per_sample = paste_resized(x, params.index, params.extra["src_box"].expand(n, 4), params.box.expand(n, 4))
    torch.testing.assert_close(batch_mix.apply(x, params), per_sample, atol=1e-5, rtol=1e-5)
    # segmentation maps are resized by nearest neighbour and keep their dtype
    seg = torch.randint(0, 3, (8, 32, 32))
    mixed = batch_mix(x, y, params=params, seg=seg).seg
    assert mixed.dtype == seg.dtype and set(mixed.unique().tolist()) <= {0, 1, 2}


def test_same_box_pastes_the_partner_from_the_same_place():
    mixer = automix.create_mixer("snapmix", num_classes=3, mode="elem", same_box=True)
    x, y = torch.rand(5, 3, 16, 16), torch.tensor([0, 0, 0, 1, 2])
    out = mixer(x, y, torch.Generator().manual_seed(1), context=torch.ones(5, 4, 4))
    assert "src_box" not in out.params.extra
    inside = box_mask(out.params.box, (16, 16), x.device)
    torch.testing.assert_close(out.x, torch.where(inside, x[out.index], x))


@pytest.mark.parametrize("same_box", [True, False])
def test_a_flat_cam_gives_the_area_weights_and_one_class_pairs_add_up(same_box):
    mixer = automix.create_mixer("snapmix", num_classes=3, mode="elem", same_box=same_box)
    x, y = torch.rand(5, 3, 16, 16), torch.tensor([0, 0, 0, 1, 2])
    out = mixer(x, y, torch.Generator().manual_seed(1), context=torch.ones(5, 4, 4))
    area = 1.0 - out.params.lam
    torch.testing.assert_close(area, box_area(out.params.box) / 256.0)
    src = out.params.box if same_box else out.params.extra["src_box"]
    torch.testing.assert_close(out.params.lam_partner, box_area(src) / 256.0)
    same = y == y[out.index]
    onehot = F.one_hot(y, 3).float()
    total = (out.params.lam + out.params.lam_partner)[:, None]
    torch.testing.assert_close(out.y[same], (total * onehot)[same])


def test_cam_pass_leaves_no_gradients_and_no_bn_statistics_moved():
    method = snapmix_method()
    x, y = batch()
    model = method.model
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in bn]
    cam = method.context(x, y)
    assert cam.shape == (6, 4, 4) and model.training and all(m.training for m in model.modules())
    for m, (mean, var, count) in zip(bn, before):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert int(m.num_batches_tracked) == count
    assert all(p.grad is None for p in model.parameters())
    # and the training step itself moves them once (its own forward), with gradients only from its loss
    loss, _ = method.training_step(x, y)
    assert all(int(m.num_batches_tracked) == c + 1 for m, (_, _, c) in zip(bn, before))


class MLPHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.pool(self.body(x)).flatten(1))


class MaxPooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.body(x).amax((2, 3)))


def test_a_head_that_is_not_linear_after_global_pooling_is_named():
    x, y = batch()
    method = automix.create_method("snapmix", MLPHead(), num_classes=4, seed=0)
    with pytest.raises(TypeError, match=r"head 'head.2' is not a linear layer applied to the global average pool "
                                        r"of the input of 'pool'"):
        method.training_step(x, y)
    method = automix.create_method("snapmix", MLPHead(), num_classes=4, seed=0, head="head.0")
    with pytest.raises(TypeError, match=r"head 'head.0' does not give the model's logits"):
        method.training_step(x, y)  # head.0 sees the pooled features, but the logits are not its linear map
    method = automix.create_method("snapmix", MaxPooled(), num_classes=4, seed=0)
    with pytest.raises(ValueError, match="layer: MaxPooled has no nn.AdaptiveAvgPool2d"):
        method.training_step(x, y)
    method = automix.create_method("snapmix", MaxPooled(), num_classes=4, seed=0, layer="body")
    with pytest.raises(TypeError, match=r"head 'fc' is not a linear layer applied to the global average pool of "
                                        r"'body'"):
        method.training_step(x, y)
    with pytest.raises(TypeError, match="head='body' must name an nn.Linear classifier of MaxPooled, got Conv2d"):
        automix.create_method("snapmix", MaxPooled(), num_classes=4, seed=0, layer="body", head="body")  # when built


def test_bad_options_name_the_option():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match="mode 'pair' does not apply to snapmix: .* use mode 'batch' or 'elem'"):
        automix.create_method("snapmix", model, num_classes=4, mode="pair")
    with pytest.raises(TypeError, match="option layer=3 for method 'snapmix' must be"):
        automix.create_method("snapmix", model, num_classes=4, layer=3)
    with pytest.raises(ValueError, match="layer 'layer9' is not a submodule of CifarResNet"):
        automix.create_method("snapmix", model, num_classes=4, layer="layer9")  # at build, not at the first step
    with pytest.raises(ValueError, match="head 'fc2' is not a submodule of CifarResNet"):
        automix.create_method("snapmix", model, num_classes=4, head="fc2")
    with pytest.raises(ValueError, match="context must be given for snapmix"):
        automix.create_mixer("snapmix", num_classes=4)(*batch())
