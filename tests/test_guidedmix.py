"""GuidedMixup: the greedy pairing (one cycle, most distant first), the saliency-ratio mask and its lam, the spectral
guide without a model, options named in errors."""

from __future__ import annotations

import pytest
import torch

import automix
from automix.mixers.guidedmix import GuidedMix, gaussian_blur, greedy_cycle, greedy_pairs, spectral_residual


def test_greedy_cycle_visits_everyone_once_and_takes_the_farthest_free_sample():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(9, 4, generator=gen)
    dist = torch.cdist(points, points)
    index = greedy_cycle(dist)
    assert sorted(index.tolist()) == list(range(9)) and (index != torch.arange(9)).all()
    order, seen = [], set()
    i, j = divmod(int((dist - torch.eye(9) * 1e9).argmax()), 9)
    start = i
    assert int(index[i]) == j, "the most distant pair starts the cycle"
    node = start
    for _ in range(9):  # one cycle through all nine
        order.append(node)
        seen.add(node)
        nxt = int(index[node])
        if nxt != start:
            free = [k for k in range(9) if k not in seen and k != node]
            assert nxt == max(free, key=lambda k: float(dist[node, k])), "each step takes the farthest free sample"
        node = nxt
    assert node == start and len(set(order)) == 9


def test_greedy_pairs_are_symmetric():
    points = torch.rand(7, 3, generator=torch.Generator().manual_seed(1))
    index = greedy_pairs(torch.cdist(points, points))
    assert torch.equal(index[index], torch.arange(7))
    assert int((index == torch.arange(7)).sum()) == 1, "odd batch: one sample left with itself"


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mask_is_the_saliency_ratio_and_lam_its_mean(mode):
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(6, 3, 16, 16, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    sal = torch.rand(6, 16, 16, generator=gen) ** 3
    mixer = GuidedMix(num_classes=3, mode=mode, blur_size=1, prob=1.0)
    out = mixer(x, y, context=sal)
    s = sal / sal.sum((1, 2), keepdim=True)
    expected = s[out.index] / (s + s[out.index])
    torch.testing.assert_close(out.params.mask[:, 0], expected)
    torch.testing.assert_close(out.lam, 1 - expected.mean((1, 2)))
    torch.testing.assert_close(out.x, (1 - expected[:, None]) * x + expected[:, None] * x[out.index])
    assert torch.equal(out.index, greedy_cycle(torch.cdist(s.flatten(1), s.flatten(1))))


def test_random_pairing_is_still_available():
    x, sal = torch.rand(8, 3, 8, 8), torch.rand(8, 8, 8)
    a = GuidedMix(num_classes=2, pairing="perm")(x, torch.zeros(8).long(), torch.Generator().manual_seed(0),
                                                  context=sal)
    b = GuidedMix(num_classes=2, pairing="perm")(x, torch.zeros(8).long(), torch.Generator().manual_seed(1),
                                                 context=sal)
    assert not torch.equal(a.index, b.index)


def test_spectral_guide_needs_no_model():
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("guidedmix", model, num_classes=4, guide="spectral", seed=0)
    assert method.mixer.needs is None and method.context(torch.rand(2, 3, 8, 8), torch.zeros(2).long()) is None
    loss, _ = method.training_step(torch.rand(6, 3, 32, 32), torch.randint(0, 4, (6,)))
    assert torch.isfinite(loss)
    # A bright square on a faint textured background is where the spectral residual peaks.
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.1
    img[..., 10:14, 20:24] = 1.0
    sal = gaussian_blur(spectral_residual(img), 5, 2.0)[0]
    r, c = divmod(int(sal.argmax()), 32)
    assert 8 <= r <= 15 and 18 <= c <= 25


def test_gradient_guide_reads_the_models_saliency_without_gradients():
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("guidedmix", model, num_classes=4, seed=0, mode="elem")
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 4, (6,))
    sal = automix.context.input_saliency(model, x, y, reduce="l2")  # before the step moves BN's statistics
    method.training_step(x, y)
    params = method.last_params["mix"]
    assert all(p.grad is None for p in model.parameters())
    s = gaussian_blur(sal, 7, 3.0)
    s = s / s.sum((1, 2), keepdim=True)
    torch.testing.assert_close(params.mask[:, 0], s[params.index] / (s + s[params.index]))


@pytest.mark.parametrize("option, value", [("guide", "attention"), ("pairing", "best"), ("blur_size", 4),
                                           ("blur_size", 0), ("blur_sigma", 0.0)])
def test_bad_options_are_named(option, value):
    with pytest.raises((ValueError, TypeError), match=option):
        GuidedMix(**{option: value})


def test_mix_probability_defaults_to_the_authors_per_guide():
    assert GuidedMix(num_classes=4).prob == 0.8  # Guided-AP (input-gradient saliency)
    assert GuidedMix(num_classes=4, guide="spectral").prob == 0.5  # Guided-SR
    assert GuidedMix(num_classes=4, prob=1.0).prob == 1.0
    with pytest.raises(ValueError, match="guide"):
        GuidedMix(num_classes=4, guide="saliency")
