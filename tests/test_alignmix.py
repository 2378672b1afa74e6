"""AlignMix (arXiv:2103.15375): Sinkhorn plans, the alignment, and the draw that mixes the last-stage features and
the targets alike."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import automix
from automix.losses import soft_target_cross_entropy
from automix.methods.alignmix import align, feature_cost, last_stage, sinkhorn_plan


def tiny_model():
    torch.manual_seed(0)
    return automix.create_model("preact_resnet18", num_classes=4, width=4)


def tiny(**kw):
    return automix.create_method("alignmix", tiny_model(), num_classes=4, seed=0, **kw)


def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 32, 32, generator=gen), torch.randint(0, 4, (6,), generator=gen)


def permuted_copy(a, gen):
    """``a`` [B, C, h, w] with each sample's positions shuffled, and the permutations [B, n] (b_q = a_perm[q])."""
    b, c, h, w = a.shape
    perms = torch.stack([torch.randperm(h * w, generator=gen) for _ in range(b)])
    flat = a.flatten(2)
    return torch.stack([flat[i][:, perms[i]] for i in range(b)]).view_as(a), perms


# ---------------------------------------------------------------------------------------------------- Sinkhorn
@pytest.mark.parametrize("n, m", [(5, 5), (4, 7)])
def test_sinkhorn_plan_has_uniform_marginals_and_converges(n, m):
    cost = torch.rand(3, n, m, generator=torch.Generator().manual_seed(0))
    errors = []
    for iters in (1, 5, 20, 100):
        plan = sinkhorn_plan(cost, eps=0.1, max_iter=iters)
        assert plan.shape == (3, n, m) and plan.dtype == torch.float32 and bool((plan >= 0).all())
        torch.testing.assert_close(plan.sum(-2), torch.full((3, m), 1 / m))  # columns: exact after each iteration
        errors.append(float((plan.sum(-1) - 1 / n).abs().max()))
    assert errors[-1] < 1e-5, errors
    assert errors == sorted(errors, reverse=True), f"the row error shrinks with the iterations: {errors}"


def test_sinkhorn_plan_is_the_entropic_optimum():
    """At convergence the plan is the minimiser of <P, M> - eps H(P): any move that keeps the marginals (a cycle
    +d on (0,0), (1,1), -d on (0,1), (1,0)) does not lower the objective."""
    cost = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = 0.5
    plan = sinkhorn_plan(cost, eps=eps, max_iter=500).double()

    def objective(p):
        return float((p * cost).sum() + eps * (p * p.log()).sum())

    best = objective(plan)
    for d in (1e-3, -1e-3):
        moved = plan.clone()
        moved[0, 0, 0] += d
        moved[0, 1, 1] += d
        moved[0, 0, 1] -= d
        moved[0, 1, 0] -= d
        assert objective(moved) > best


def test_small_eps_recovers_a_permutation():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 8, 3, 3, generator=gen)
    b, perms = permuted_copy(a, gen)
    plan = sinkhorn_plan(feature_cost(a, b), eps=0.01, max_iter=100)
    for i in range(4):  # a_p sits at b's position q with perms[i][q] = p
        expected = torch.zeros(9, 9)
        expected[perms[i], torch.arange(9)] = 1 / 9
        torch.testing.assert_close(plan[i], expected, atol=1e-5, rtol=0)
    # the partner moved onto the sample's layout is the sample; the sample moved onto the partner's, the partner
    torch.testing.assert_close(align(b, plan, (3, 3), "sample"), a, atol=1e-4, rtol=0)
    torch.testing.assert_close(align(a, plan, (3, 3), "partner"), b, atol=1e-4, rtol=0)


def test_feature_cost_is_the_squared_distance():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 2, 3, generator=gen), torch.randn(2, 5, 2, 3, generator=gen)
    direct = (a.flatten(2).unsqueeze(3) - b.flatten(2).unsqueeze(2)).pow(2).sum(1)
    torch.testing.assert_close(feature_cost(a, b), direct, atol=1e-4, rtol=1e-5)


def test_align_moves_whole_cells_of_a_larger_map():
    """A plan on a 2x2 grid moves 4x4 pixel cells of an 8x8 image (and one-hot maps stay one-hot)."""
    image = torch.arange(64.0).view(1, 1, 8, 8)
    swap = torch.tensor([1, 0, 3, 2])  # the cell at q of the output is the input's cell swap[q] (left <-> right)
    plan = torch.zeros(1, 4, 4)
    plan[0, torch.arange(4), swap] = 0.25  # sample's position p takes the partner's position swap[p]
    moved = align(image, plan, (2, 2), "sample")
    torch.testing.assert_close(moved, torch.cat([image[..., 4:], image[..., :4]], dim=3))
    with pytest.raises(ValueError, match=r"multiples of \(2, 2\), got shape \(1, 1, 7, 8\)"):
        align(torch.rand(1, 1, 7, 8), plan, (2, 2), "sample")


# ---------------------------------------------------------------------------------------------------- the method
@pytest.mark.parametrize("direction", ["to_sample", "to_partner"])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_mixed_features_and_targets_use_the_same_draw(direction, mode):
    method = tiny(input_prob=0.0, direction=direction, mode=mode)
    x, y = batch()
    model, got = method.model, {}
    model.layer4.register_forward_hook(lambda m, i, out: got.setdefault("clean", out.detach().clone()))
    model.norm.register_forward_pre_hook(lambda m, args: got.setdefault("mixed", args[0].detach().clone()))
    loss, _ = method.training_step(x, y)
    params = method.last_params["mix"]
    assert params.extra["layer"] == "layer4" and params.extra["align"] == direction
    a, index, lam = got["clean"], params.index, params.lam.view(-1, 1, 1, 1)
    assert not torch.equal(index, torch.arange(6))
    plan = sinkhorn_plan(feature_cost(a, a[index]), 0.1, 100)
    torch.testing.assert_close(params.extra["plan"], plan)
    flat, partner = a.flatten(2), a[index].flatten(2)  # [B, C, n]
    if direction == "to_sample":  # position p of A gets the partner's features weighted by row p of the plan
        moved = torch.einsum("bcq,bpq->bcp", partner, plan / plan.sum(-1, keepdim=True)).view_as(a)
        expected = lam * a + (1 - lam) * moved
    else:  # position q of A' gets A's features weighted by column q
        moved = torch.einsum("bcp,bpq->bcq", flat, plan / plan.sum(-2, keepdim=True)).view_as(a)
        expected = lam * moved + (1 - lam) * a[index]
    torch.testing.assert_close(got["mixed"], expected, atol=1e-5, rtol=1e-5)
    target = params.lam[:, None] * F.one_hot(y, 4) + (1 - params.lam[:, None]) * F.one_hot(y[index], 4)
    logits = model.forward_head(model.norm(got["mixed"]))  # the head continues from the mixed map
    torch.testing.assert_close(loss, soft_target_cross_entropy(logits, target.float()))


def test_input_steps_are_mixup_and_both_directions_are_drawn():
    method = tiny()
    assert (method.layer, method.eps, method.max_iter, method.direction, method.input_prob) == (
        "layer4", 0.1, 100, "both", 0.5)
    assert method.mixer.alpha == 2.0
    x, y = batch()
    drawn = set()
    for _ in range(16):
        method.training_step(x, y)
        extra = method.last_params["mix"].extra
        drawn.add((extra["layer"], extra.get("align")))
    assert drawn == {("input", None), ("layer4", "to_sample"), ("layer4", "to_partner")}
    only_input = tiny(input_prob=1.0)
    seen = []
    only_input.model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    only_input.training_step(x, y)
    params = only_input.last_params["mix"]
    lam = params.lam.view(-1, 1, 1, 1)
    assert params.extra == {"layer": "input"}
    torch.testing.assert_close(seen[0], lam * x + (1 - lam) * x[params.index])


def test_replay_of_last_params_and_a_seeded_rerun():
    x, y = batch()
    runs = []
    for _ in range(2):
        method = tiny(input_prob=0.0)
        got = {}
        method.model.layer4.register_forward_hook(lambda m, i, out, got=got: got.setdefault("a", out.detach()))
        method.model.norm.register_forward_pre_hook(lambda m, args, got=got: got.setdefault("mix", args[0].detach()))
        loss, _ = method.training_step(x, y)
        params = method.last_params["mix"]
        assert torch.equal(method.apply(got["a"], params), got["mix"])
        runs.append((loss, params))
    (loss_a, pa), (loss_b, pb) = runs
    assert torch.equal(loss_a, loss_b) and torch.equal(pa.index, pb.index) and torch.equal(pa.lam, pb.lam)
    assert torch.equal(pa.extra["plan"], pb.extra["plan"])
    # on the images and on a one-hot map: whole 8x8 cells move; the map stays a distribution per pixel
    assert method.apply(x, pa).shape == x.shape
    onehot = F.one_hot(torch.randint(0, 3, (6, 32, 32)), 3).permute(0, 3, 1, 2).float()
    mixed = method.apply_seg(onehot, pa, x)
    torch.testing.assert_close(mixed.sum(1), torch.ones(6, 32, 32))
    with pytest.raises(TypeError, match="soft"):
        method.apply_seg(torch.randint(0, 3, (6, 32, 32)), pa, x)


def test_samples_left_unmixed_by_prob_keep_their_features():
    method = tiny(input_prob=0.0, direction="to_partner", mode="elem", prob=0.5)
    x, y = batch()
    got = {}
    method.model.layer4.register_forward_hook(lambda m, i, out: got.setdefault("clean", out.detach().clone()))
    method.model.norm.register_forward_pre_hook(lambda m, args: got.setdefault("mixed", args[0].detach().clone()))
    method.training_step(x, y)
    lam = method.last_params["mix"].lam
    kept = lam == 1
    assert 0 < int(kept.sum()) < 6, lam
    assert torch.equal(got["mixed"][kept], got["clean"][kept])
    assert not torch.allclose(got["mixed"][~kept], got["clean"][~kept])


def test_fixed_lam_reaches_both_branches():
    x, y = batch()
    for input_prob in (0.0, 1.0):
        method = tiny(lam=0.3, input_prob=input_prob)
        method.training_step(x, y)
        assert torch.equal(method.last_params["mix"].lam, torch.full((6,), 0.3))


def test_gradients_reach_the_model_and_not_the_plan():
    method = tiny(input_prob=0.0)
    x, y = batch()
    loss, _ = method.training_step(x, y)
    assert not method.last_params["mix"].extra["plan"].requires_grad
    loss.backward()
    for name, p in method.model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert method.model.stem[0].weight.grad.abs().sum() > 0, "the gradient flows back through both feature maps"


def test_preview_is_the_aligned_mix_and_touches_nothing():
    method = tiny()
    x, y = batch()
    method.model.train()
    stats = {k: v.clone() for k, v in method.model.state_dict().items()}
    state = method.generator.get_state()
    parts = method.mix_preview(x, y, torch.Generator().manual_seed(0))
    again = method.mix_preview(x, y, torch.Generator().manual_seed(0))
    assert all(torch.equal(v, again[k]) if torch.is_tensor(v) else v == again[k] for k, v in parts.items())
    assert all(torch.equal(v, method.model.state_dict()[k]) for k, v in stats.items()), "BN statistics moved"
    assert torch.equal(method.generator.get_state(), state) and method.model.training
    assert all(p.grad is None for p in method.model.parameters())
    lam = parts["lam"].view(-1, 1, 1, 1)
    torch.testing.assert_close(parts["mixed"], lam * parts["x"] + (1 - lam) * parts["partner"])
    torch.testing.assert_close(parts["mask"], (1 - lam).expand(6, 1, 32, 32))
    assert parts["partner"].shape == x.shape and not torch.equal(parts["partner"], x[torch.arange(6)])


class Stages(nn.Module):
    """A backbone with ``layer4`` but no ``stage_names`` (as torchvision's ResNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer3 = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.layer4(self.layer3(x)).mean((2, 3)))


def test_last_stage_is_found_or_given_by_path():
    assert last_stage(tiny_model()) == "layer4"
    assert last_stage(automix.create_model("wrn28_8", num_classes=4, widen=1)) == "layer3"
    assert last_stage(Stages()) == "layer4"
    seq = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    with pytest.raises(ValueError, match="layer must be given for Sequential"):
        automix.create_method("alignmix", seq, num_classes=3)
    method = automix.create_method("alignmix", seq, num_classes=3, seed=0, layer="2", input_prob=0.0)
    loss, _ = method.training_step(torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert torch.isfinite(loss) and method.last_params["mix"].extra["size"] == (4, 4)
    method = automix.create_method("alignmix", Stages(), num_classes=3, seed=0, input_prob=0.0)
    loss, _ = method.training_step(torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert torch.isfinite(loss) and method.last_params["mix"].extra["size"] == (2, 2)


def test_bad_options_name_the_option():
    model = tiny_model()
    for eps in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"eps must (be a finite number > 0|not be NaN), got {eps!r}"):
            automix.create_method("alignmix", model, num_classes=4, eps=eps)
    with pytest.raises(ValueError, match="max_iter must be a positive int, got 0"):
        automix.create_method("alignmix", model, num_classes=4, max_iter=0)
    with pytest.raises(TypeError, match="option max_iter=2.5 for method 'alignmix' must be"):
        automix.create_method("alignmix", model, num_classes=4, max_iter=2.5)
    with pytest.raises(ValueError, match="layer 'layer9' is not a submodule of"):
        automix.create_method("alignmix", model, num_classes=4, layer="layer9")
    with pytest.raises(ValueError, match=r"direction must be one of \['both', 'to_sample', 'to_partner'\], got 'up'"):
        automix.create_method("alignmix", model, num_classes=4, direction="up")
    with pytest.raises(ValueError, match="input_prob must be"):
        automix.create_method("alignmix", model, num_classes=4, input_prob=1.5)
    with pytest.raises(ValueError, match="lam must be in"):
        automix.create_method("alignmix", model, num_classes=4, lam=1.5)
    with pytest.raises(ValueError, match="alpha must be"):
        automix.create_method("alignmix", model, num_classes=4, alpha=0.0)
    method = automix.create_method("alignmix", model, num_classes=4, layer="fc", input_prob=0.0)
    with pytest.raises(TypeError, match=r"layer: module 'fc' must return a feature map \[B, C, h, w\]"):
        method.training_step(*batch())
