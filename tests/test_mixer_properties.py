"""Property-based tests (hypothesis) of the mixer contract over random shapes, seeds and options."""

from __future__ import annotations

import torch
from conftest import NUM_CLASSES, STATIC_MIXERS, build_mixer, sample_id_probe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import automix

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = st.sampled_from(STATIC_MIXERS)
modes = st.sampled_from(["batch", "pair", "elem"])
batches = st.integers(min_value=1, max_value=9)
sides = st.integers(min_value=4, max_value=20)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
probs = st.sampled_from([0.0, 0.3, 1.0])


@SETTINGS
@given(name=names, mode=modes, batch=batches, h=sides, w=sides, seed=seeds, prob=probs,
       smoothing=st.sampled_from([0.0, 0.1]))
def test_soft_targets_keep_their_mass(name, mode, batch, h, w, seed, prob, smoothing):
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(batch, NUM_CLASSES, generator=gen).softmax(1)
    mixer = build_mixer(name, mode=mode, prob=prob, label_smoothing=smoothing)
    out = mixer(torch.rand(batch, 3, h, w, generator=gen), y, gen)
    torch.testing.assert_close(out.y.sum(1), torch.ones(batch))
    assert (out.y >= 0).all()


@SETTINGS
@given(name=names, mode=modes, batch=batches, h=sides, w=sides, seed=seeds, prob=probs)
def test_lam_is_the_realised_share_of_own_pixels(name, mode, batch, h, w, seed, prob):
    mixer = build_mixer(name, mode=mode, prob=prob)
    params = mixer.sample(torch.rand(batch, 3, h, w), torch.Generator().manual_seed(seed))
    mixed = mixer.apply(sample_id_probe(batch, h, w), params)
    own = mixed[torch.arange(batch), torch.arange(batch)].mean(dim=(1, 2))
    moved = params.index != torch.arange(batch)
    # Bilinear resampling (resizemix) and soft ramps can be off by a rounding hair, never more.
    torch.testing.assert_close(own[moved], params.lam[moved], atol=5e-3, rtol=0)


@SETTINGS
@given(name=names, mode=modes, batch=batches, h=sides, seed=seeds)
def test_replay_and_inputs_untouched(name, mode, batch, h, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, h, h, generator=gen)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=gen)
    x0, y0 = x.clone(), y.clone()
    mixer = build_mixer(name, mode=mode)
    out = mixer(x, y, gen)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    again = mixer(x, y, params=out.params)
    assert torch.equal(again.x, out.x) and torch.equal(again.y, out.y)


@SETTINGS
@given(name=names, mode=modes, batch=batches, seed=seeds)
def test_gradient_reaches_every_input_pixel_used(name, mode, batch, seed):
    x = torch.rand(batch, 3, 8, 8, requires_grad=True)
    mixer = build_mixer(name, mode=mode)
    out = mixer(x, torch.randint(0, NUM_CLASSES, (batch,)), torch.Generator().manual_seed(seed))
    out.x.sum().backward()
    # Each output pixel is a convex blend, so the total gradient mass equals the pixel count
    # (resizemix resamples: its partner weights still sum to one per output pixel).
    torch.testing.assert_close(x.grad.sum(), torch.tensor(float(out.x.numel())), rtol=1e-4, atol=1e-3)


@SETTINGS
@given(lo=st.floats(0.05, 0.9), span=st.floats(0.0, 0.5), side=st.integers(4, 32), seed=seeds)
def test_cutmix_minmax_boxes_stay_inside_with_sizes_in_range(lo, span, side, seed):
    hi = min(1.0, lo + span)
    mixer = automix.create_mixer("cutmix", cutmix_minmax=(lo, hi), mode="elem")
    params = mixer.sample(torch.rand(64, 1, side, side), torch.Generator().manual_seed(seed))
    y1, y2, x1, x2 = params.box.unbind(1)
    assert (y1 >= 0).all() and (y2 <= side).all() and (x1 >= 0).all() and (x2 <= side).all()
    assert ((y2 - y1) >= int(side * lo)).all() and ((y2 - y1) <= int(side * hi)).all()
