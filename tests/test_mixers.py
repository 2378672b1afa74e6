"""Every registered mixer over a mode x dtype x label-kind matrix, plus the contract's promises."""

from __future__ import annotations

import pytest
import torch
from conftest import LABEL_KINDS, NUM_CLASSES, build_mixer, make_targets, sample_id_probe

import automix

MODES = ("batch", "pair", "elem")
DTYPES = (torch.float32, torch.bfloat16)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", LABEL_KINDS)
def test_matrix(mixer_name, mode, dtype, kind):
    gen = torch.Generator().manual_seed(0)
    batch = 7
    x = torch.rand(batch, 3, 16, 16, generator=gen).to(dtype)
    y = make_targets(kind, batch, gen)
    x_before, y_before = x.clone(), y.clone()
    mixer = build_mixer(mixer_name, mode=mode)
    out = mixer(x, y, torch.Generator().manual_seed(1))

    assert out.x.shape == x.shape and out.x.dtype == dtype
    assert out.lam.shape == (batch,) and out.lam.dtype == torch.float32
    assert out.index.shape == (batch,) and out.index.dtype == torch.long
    assert ((out.lam >= 0) & (out.lam <= 1)).all()
    assert torch.equal(x, x_before) and torch.equal(y, y_before), "inputs must not be modified"
    # Targets: float32 and lam-weighted blends of own and partner targets.
    target = y.float() if kind != "index" else torch.nn.functional.one_hot(y, NUM_CLASSES).float()
    lam = out.lam.view((-1,) + (1,) * (target.ndim - 1))
    assert out.y.dtype == torch.float32 and out.y.shape == target.shape
    torch.testing.assert_close(out.y, lam * target + (1 - lam) * target[out.index])
    if kind in ("index", "onehot", "soft"):
        torch.testing.assert_close(out.y.sum(1), torch.ones(batch))
    # Pixels are convex blends of the sample and its partner.
    lo = torch.minimum(x, x[out.index]).float() - 1e-2
    hi = torch.maximum(x, x[out.index]).float() + 1e-2
    if mixer_name != "resizemix":  # resizemix resamples the partner, not pixel-aligned
        assert ((out.x.float() >= lo) & (out.x.float() <= hi)).all()
    if mode == "pair":
        assert torch.equal(out.index[out.index], torch.arange(batch)), "pair mode pairs symmetrically"
        torch.testing.assert_close(out.lam, out.lam[out.index])


def test_realised_weight_matches_lam(mixer_name):
    """The share of its own pixels each sample keeps equals lam (lam correction on by default)."""
    for mode in MODES:
        mixer = build_mixer(mixer_name, mode=mode)
        batch = 6
        probe = sample_id_probe(batch, 16, 16)
        params = mixer.sample(torch.rand(batch, 3, 16, 16), torch.Generator().manual_seed(4))
        mixed = mixer.apply(probe, params)
        own = mixed[torch.arange(batch), torch.arange(batch)].mean(dim=(1, 2))
        moved = params.index != torch.arange(batch)
        torch.testing.assert_close(own[moved], params.lam[moved], atol=2e-3, rtol=0)


def test_replay_reproduces(mixer_name):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(5, 3, 12, 12, generator=gen), torch.randint(0, NUM_CLASSES, (5,), generator=gen)
    mixer = build_mixer(mixer_name, mode="elem")
    first = mixer(x, y, torch.Generator().manual_seed(9))
    again = mixer(x, y, params=first.params)
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)
    seeded = mixer(x, y, torch.Generator().manual_seed(9))
    assert torch.equal(first.x, seeded.x), "the same seed gives the same draw"


def test_global_generator_is_used(mixer_name):
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, NUM_CLASSES, (4,))
    mixer = build_mixer(mixer_name, mode="elem")
    torch.manual_seed(3)
    a = mixer(x, y)
    torch.manual_seed(3)
    b = mixer(x, y)
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_small_and_odd_batches(mixer_name, batch):
    for mode in MODES:
        out = build_mixer(mixer_name, mode=mode)(torch.rand(batch, 3, 8, 8), torch.randint(0, NUM_CLASSES, (batch,)))
        assert out.x.shape[0] == batch and out.lam.shape == (batch,)


def test_gradients_flow_to_input(mixer_name):
    for mode in MODES:
        x = torch.rand(4, 3, 16, 16, requires_grad=True)
        y = torch.randint(0, NUM_CLASSES, (4,))
        out = build_mixer(mixer_name, mode=mode)(x, y, torch.Generator().manual_seed(2))
        (out.x * torch.linspace(0, 1, out.x.numel()).view_as(out.x)).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_channels_last_is_kept(mixer_name):
    x = torch.rand(4, 3, 16, 16).to(memory_format=torch.channels_last)
    for mode in MODES:
        y = torch.randint(0, NUM_CLASSES, (4,))
        out = build_mixer(mixer_name, mode=mode)(x, y, torch.Generator().manual_seed(2))
        assert out.x.is_contiguous(memory_format=torch.channels_last), mode


def test_prob_zero_and_one(mixer_name):
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, NUM_CLASSES, (6,))
    for mode in MODES:
        out = build_mixer(mixer_name, mode=mode, prob=0.0)(x, y)
        assert torch.equal(out.x, x) and torch.equal(out.lam, torch.ones(6))
        torch.testing.assert_close(out.y, torch.nn.functional.one_hot(y, NUM_CLASSES).float())
    out = build_mixer(mixer_name, mode="batch", prob=1.0)(x, y, torch.Generator().manual_seed(5))
    assert out.params.mixed


def test_elem_prob_mixes_a_share_of_samples():
    mixer = automix.create_mixer("mixup", mode="elem", prob=0.3)
    params = mixer.sample(torch.rand(4000, 2), torch.Generator().manual_seed(0))
    share = (params.lam < 1).float().mean().item()
    assert 0.26 < share < 0.34, "prob is applied once per sample (not squared)"


def test_nan_in_x_is_passed_through():
    x = torch.rand(4, 3, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    out = automix.create_mixer("mixup", num_classes=3)(x, torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0))
    assert torch.isnan(out.x).any() and not torch.isnan(out.y).any()


def test_label_smoothing_index_and_onehot_agree():
    y = torch.tensor([0, 2, 1])
    mixer = automix.create_mixer("mixup", num_classes=3, label_smoothing=0.1)
    a = mixer.to_target(y)
    b = mixer.to_target(torch.nn.functional.one_hot(y, 3).float())
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], torch.tensor([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]))


def test_mixup_on_feature_vectors_and_regression():
    x, y = torch.randn(9, 10), torch.randn(9, 1)
    out = automix.create_mixer("mixup")(x, y, torch.Generator().manual_seed(0))
    lam = out.lam[:, None]
    torch.testing.assert_close(out.x, lam * x + (1 - lam) * x[out.index])
    torch.testing.assert_close(out.y, lam * y + (1 - lam) * y[out.index])


def test_flip_pairing():
    mixer = automix.create_mixer("cutmix", pairing="flip", num_classes=3)
    out = mixer(torch.rand(5, 3, 8, 8), torch.zeros(5, dtype=torch.long))
    assert torch.equal(out.index, torch.tensor([4, 3, 2, 1, 0]))


def test_switch_follows_probs():
    mixer = automix.create_mixer("mixup_cutmix", mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=0.8, num_classes=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    picks = [mixer.sample(x, gen).extra["choice"] for _ in range(500)]
    assert 0.74 < sum(picks) / 500 < 0.86  # choice 1 is cutmix


def test_mixup_cutmix_single_methods():
    assert isinstance(automix.create_mixer("mixup_cutmix", mixup_alpha=0.2, cutmix_alpha=0.0), automix.mixers.Mixup)
    cut = automix.create_mixer("mixup_cutmix", mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8))
    assert isinstance(cut, automix.mixers.CutMix) and cut.correct_lam


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_segmentation_masks_follow_the_image(name):
    gen = torch.Generator().manual_seed(0)
    batch = 6
    x = torch.rand(batch, 3, 16, 16, generator=gen)
    seg = torch.randint(0, 4, (batch, 16, 16), generator=gen)
    mixer = automix.create_mixer(name, num_classes=4, mode="elem")
    if name == "mixup":
        onehot = torch.nn.functional.one_hot(seg, 4).permute(0, 3, 1, 2).float()
        out = mixer(x, torch.randint(0, 4, (batch,)), gen, seg=onehot)
        lam = out.lam.view(-1, 1, 1, 1)
        torch.testing.assert_close(out.seg, lam * onehot + (1 - lam) * onehot[out.index])
        with pytest.raises(TypeError, match="seg"):
            mixer(x, torch.randint(0, 4, (batch,)), seg=seg)
        return
    out = mixer(x, torch.randint(0, 4, (batch,)), gen, seg=seg)
    assert out.seg.dtype == seg.dtype and out.seg.shape == seg.shape
    # Where the image shows the partner, the mask shows the partner's mask too.
    from_partner = (out.x == x[out.index]).all(1) & (out.x != x).any(1)
    assert torch.equal(out.seg[from_partner], seg[out.index][from_partner])
    assert torch.equal(out.seg[~(out.x == x[out.index]).all(1)], seg[~(out.x == x[out.index]).all(1)])


def test_cutmix_minmax_origins_cover_every_valid_position():
    mixer = automix.create_mixer("cutmix", cutmix_minmax=(0.5, 0.5), mode="elem")
    params = mixer.sample(torch.rand(4000, 1, 8, 8), torch.Generator().manual_seed(0))
    box = params.box
    assert ((box[:, 1] - box[:, 0]) == 4).all() and ((box[:, 3] - box[:, 2]) == 4).all()
    counts = torch.bincount(box[:, 0], minlength=5)
    assert counts.shape[0] == 5 and (counts > 600).all(), counts  # origins 0..4 all about 800 times


def test_cutmix_without_correction_keeps_sampled_lam():
    gen = torch.Generator().manual_seed(0)
    on = automix.create_mixer("cutmix", mode="elem").sample(torch.rand(64, 3, 8, 8), gen)
    gen = torch.Generator().manual_seed(0)
    off = automix.create_mixer("cutmix", mode="elem", correct_lam=False).sample(torch.rand(64, 3, 8, 8), gen)
    assert torch.equal(on.box, off.box) and not torch.allclose(on.lam, off.lam)


def test_saliency_box_is_centred_on_partner_peak():
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, 20, 6] = 1.0  # one bright pixel: the saliency peak of both images
    mixer = automix.create_mixer("saliencymix", mode="elem", num_classes=2)
    params = mixer.sample(x, torch.Generator().manual_seed(1))
    y1, y2, x1, x2 = params.box[0].tolist()
    assert y1 <= 20 < y2 and x1 <= 6 < x2
