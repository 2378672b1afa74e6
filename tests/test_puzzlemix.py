"""PuzzleMix: the exact graph cut (checked by brute force), transport as a permutation, mask vs lam, the saliency
pass (no parameter gradients, BN statistics untouched), options named in errors."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

import automix
from automix.context import input_saliency
from automix.mixers._graphcut import grid_energy, solve_grid
from automix.mixers.puzzlemix import PuzzleMix, permute_cells, transport_plan

BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(importlib.util.find_spec(m) is None, reason=f"{m} missing"))
            for b, m in (("maxflow", "maxflow"), ("scipy", "scipy"))]


def brute_force(unary, w_down, w_right):
    rows, cols, levels = unary.shape[1:]
    every = torch.tensor(list(itertools.product(range(levels), repeat=rows * cols))).view(-1, rows, cols)
    n = every.shape[0]
    energy = grid_energy(every, unary.expand(n, -1, -1, -1), w_down.expand(n, -1, -1), w_right.expand(n, -1, -1))
    return energy.min()


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_cut_is_the_minimum_on_hand_made_problems(backend):
    # 2 x 2, two labels: the left column prefers label 0, the right label 1; a weak vertical-edge grid keeps that,
    # strong horizontal edges force one label (the cheaper in total: label 1).
    unary = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.5, 0.0]]]], dtype=torch.float64)
    weak, strong = torch.full((1, 1, 2), 0.1, dtype=torch.float64), torch.full((1, 2, 1), 10.0, dtype=torch.float64)
    assert solve_grid(unary, weak, torch.full((1, 2, 1), 0.1, dtype=torch.float64), backend=backend).tolist() == \
        [[[0, 1], [0, 1]]]
    assert solve_grid(unary, weak, strong, backend=backend).tolist() == [[[1, 1], [1, 1]]]
    # 3 x 3, three labels: a centre that wants label 2 among pixels that want 0; the middle label is a compromise
    # whose energy only a multi-label move finds (0 -> 2 costs w each side, 0 -> 1 costs w / 4).
    unary = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    unary[..., 1:] = torch.tensor([0.3, 0.6], dtype=torch.float64)  # every pixel: label 0 cheapest
    unary[0, 1, 1] = torch.tensor([2.0, 0.5, 0.0], dtype=torch.float64)  # the centre: label 2 cheapest
    w_down, w_right = torch.ones(1, 2, 3, dtype=torch.float64), torch.ones(1, 3, 2, dtype=torch.float64)
    labels = solve_grid(unary, w_down, w_right, backend=backend)
    expected = torch.zeros(1, 3, 3, dtype=torch.long)
    expected[0, 1, 1] = 1
    assert torch.equal(labels, expected)
    assert torch.isclose(grid_energy(labels, unary, w_down, w_right)[0], brute_force(unary, w_down, w_right))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("levels", [2, 3, 4])
@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (2, 3)])
def test_graph_cut_matches_brute_force(backend, levels, shape):
    gen = torch.Generator().manual_seed(levels * 10 + shape[1])
    batch = 8
    unary = torch.rand(batch, *shape, levels, generator=gen, dtype=torch.float64)
    w_down = torch.rand(batch, shape[0] - 1, shape[1], generator=gen, dtype=torch.float64) * 2
    w_right = torch.rand(batch, shape[0], shape[1] - 1, generator=gen, dtype=torch.float64) * 2
    labels = solve_grid(unary, w_down, w_right, backend=backend)  # the whole batch in one graph
    energy = grid_energy(labels, unary, w_down, w_right)
    for b in range(batch):
        best = brute_force(unary[b:b + 1], w_down[b:b + 1], w_right[b:b + 1])
        assert float(energy[b]) == pytest.approx(float(best), abs=1e-6), f"sample {b}"


def test_backends_agree_and_a_bad_backend_is_named():
    with pytest.raises(ValueError, match="backend must be one of"):
        solve_grid(torch.rand(1, 2, 2, 2), torch.rand(1, 1, 2), torch.rand(1, 2, 1), backend="gco")
    with pytest.raises(ValueError, match="backend"):
        PuzzleMix(backend="gco")


def test_transport_is_a_permutation_and_keeps_each_samples_pixels():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 32, 32, generator=gen)
    sal = torch.rand(5, 64, generator=gen) ** 8
    sal = sal / sal.sum(1, keepdim=True)
    shown = (torch.rand(5, 64, generator=gen) < 0.5).float()
    source = transport_plan(sal, shown, (8, 8), eps=0.01)
    assert torch.equal(source.sort(1).values, torch.arange(64).expand(5, 64)), "each cell lands exactly once"
    moved = permute_cells(x, source, (8, 8))
    assert torch.equal(moved.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(moved, x)


def test_transport_moves_salient_cells_to_where_the_image_shows():
    sal = torch.zeros(1, 16)
    sal[0, 0] = 1.0  # all saliency in the top-left cell of a 4 x 4 grid
    shown = torch.zeros(1, 16)
    shown[0, 5] = 1.0  # the image is visible only in cell (1, 1)
    source = transport_plan(sal, shown, (4, 4), eps=0.1)
    assert int(source[0, 5]) == 0, "the salient cell moves into the visible one"
    far = transport_plan(sal, shown, (4, 4), eps=100.0)  # moving costs more than it gains: stay
    assert torch.equal(far, torch.arange(16).view(1, 16))


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("transport", [True, False])
def test_mask_agrees_with_the_lambda_of_the_targets(mode, transport):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(6, 3, 32, 32, generator=gen), torch.randint(0, 4, (6,), generator=gen)
    sal = torch.rand(6, 32, 32, generator=gen) ** 4
    mixer = PuzzleMix(num_classes=4, mode=mode, transport=transport)
    for seed in range(4):
        out = mixer(x, y, torch.Generator().manual_seed(seed), context=sal)
        mask = out.params.mask
        torch.testing.assert_close(out.lam, 1 - mask.mean((1, 2, 3)))
        onehot = torch.nn.functional.one_hot(y, 4).float()
        torch.testing.assert_close(out.y, out.lam[:, None] * onehot + (1 - out.lam[:, None]) * onehot[out.index])
        levels = (mask * (mixer.n_labels - 1)).round() / (mixer.n_labels - 1)
        assert torch.equal(mask, levels), "partner weights are k / (n_labels - 1)"
        # What each pixel shows: a sample-id probe mixed with the draw gives the partner's weight back.
        probe = torch.eye(6).view(6, 6, 1, 1).expand(6, 6, 32, 32)
        seen = mixer.apply(probe, out.params)[torch.arange(6), out.index]
        partner_share = torch.where(out.index == torch.arange(6), torch.ones(6), seen.mean((1, 2)))
        torch.testing.assert_close(partner_share[out.index != torch.arange(6)],
                                   (1 - out.lam)[out.index != torch.arange(6)])


def test_mask_follows_saliency_and_lambda():
    """Each image keeps its salient half when lam is 1/2: the graph cut reads the saliency."""
    x = torch.rand(2, 3, 16, 16)
    sal = torch.zeros(2, 16, 16)
    sal[0, :, :8] = 1.0  # sample 0: left half salient
    sal[1, :, 8:] = 1.0  # sample 1: right half salient
    mixer = PuzzleMix(block_num=4, n_labels=2, transport=False, pairing="flip", num_classes=2)
    region = mixer._sample(x, torch.tensor([0.5]), torch.Generator(), index=torch.tensor([1, 0]), context=sal)
    mask = region.mask[:, 0]
    assert torch.equal(mask[0], (torch.arange(16) >= 8).float().expand(16, 16)), "sample 0 shows its left half"
    assert torch.equal(mask[1], (torch.arange(16) < 8).float().expand(16, 16))


def test_block_grid_is_drawn_from_the_sides_that_fit():
    mixer = PuzzleMix(num_classes=2, transport=False, n_labels=2)
    x, sal = torch.rand(4, 3, 8, 8), torch.rand(4, 8, 8) ** 4
    for seed in range(8):  # 16 does not divide 8: only 2, 4 and 8
        mixer(x, torch.zeros(4).long(), torch.Generator().manual_seed(seed), context=sal)
    with pytest.raises(ValueError, match=r"block_num=16 has no side that divides 8x8"):  # given, it must fit
        PuzzleMix(block_num=16, num_classes=2)(x, torch.zeros(4).long(), context=sal)
    odd = PuzzleMix(num_classes=2)(torch.rand(3, 3, 5, 7), torch.zeros(3).long(), context=torch.rand(3, 5, 7))
    torch.testing.assert_close(odd.lam, 1 - odd.params.mask.mean((1, 2, 3)))
    with pytest.raises(ValueError, match="context must be a saliency map"):
        mixer(x, torch.zeros(4).long(), context=torch.rand(4, 3, 8, 8))


@pytest.mark.parametrize("option, value", [("block_num", 0), ("block_num", (2, "4")), ("n_labels", 1), ("beta", -1.0),
                                           ("gamma", -0.5), ("eta", float("nan")), ("neigh_size", 0),
                                           ("t_eps", 0.0), ("t_size", 0), ("transport", 1)])
def test_bad_options_are_named(option, value):
    with pytest.raises((ValueError, TypeError), match=option):
        PuzzleMix(**{option: value})


def test_saliency_pass_leaves_no_gradients_and_no_bn_statistics():
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    model.train()
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 4, (6,))
    sal = input_saliency(model, x, y, reduce="l2")
    assert sal.shape == (6, 32, 32) and (sal >= 0).all() and sal.sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items()), "BN statistics moved"
    assert all(m.training for m in model.modules()), "train mode is restored"
    in_train = input_saliency(model, x, y, reduce="l2", eval_mode=False)  # the switch: train mode moves BN
    assert not torch.equal(in_train, sal)
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in stats.items())


def test_method_step_mixes_with_the_models_saliency():
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("puzzlemix", model, num_classes=4, seed=0, mode="elem")
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 4, (6,))
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    loss, _ = method.training_step(x, y)
    params = method.last_params["mix"]
    torch.testing.assert_close(params.lam, 1 - params.mask.mean((1, 2, 3)))
    assert "transport" in params.extra
    # One training forward moves BN statistics once: the saliency pass did not.
    fresh = automix.create_model("preact_resnet18", num_classes=4, width=4)
    fresh.load_state_dict({**model.state_dict(), **stats})
    fresh.train()(method.apply(x, params))
    assert all(torch.equal(fresh.state_dict()[k], model.state_dict()[k]) for k in stats)
