"""AutoMix / SAMix: spec numbers, gradient isolation, exact resume, learning, mixed precision."""

from __future__ import annotations

import io
import math

import pytest
import torch

import automix
from automix.methods.ema import ema_momentum
from automix.methods.mixblock import adjust_mask, mask_loss, rescale_lam

METHODS = [automix.AutoMix, automix.SAMix]


def make(cls=automix.AutoMix, width=8, seed=0, **kw):
    torch.manual_seed(seed)
    model = automix.create_model("preact_resnet18", num_classes=4, width=width)
    return cls(model, feature_layer="layer3", num_classes=4, total_steps=kw.pop("total_steps", 50), seed=seed, **kw)


def batch(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.randn(n, 3, 32, 32, generator=gen) * 0.5
    x[:, 0] += y.view(-1, 1, 1).float() - 1.5  # a learnable signal
    return x, y


def sgd(method):
    return torch.optim.SGD(method.param_groups(), lr=0.05, momentum=0.9)


def step(method, opt, x, y):
    loss, logs = method.training_step(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    method.after_step()
    return loss.detach(), logs


@pytest.mark.parametrize("cls", METHODS)
def test_shapes_and_initial_mask_is_half(cls):
    method = make(cls, reference=True)
    x, y = batch()
    preview = method.mix_preview(x, lam=0.5)
    assert preview["mask"].shape == (8, 1, 32, 32) and preview["mask"].dtype == torch.float32
    assert (preview["mask"] - 0.5).abs().max() < 0.02, "Normal(0, 0.01) init gives masks of about 0.5"
    fitted = make(cls).mix_preview(x, lam=0.3)["mask"]  # the default: fan-in init, the mean fitted to 1 - lam
    assert torch.allclose(fitted.flatten(1).mean(1), torch.full((8,), 0.7), atol=1e-4)
    assert fitted.flatten(1).std(1).mean() > 0.02, "fan-in init: masks vary in space from the first step"
    loss, logs = method.training_step(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert method.last_mix["x_mb"].shape == x.shape and method.last_mix["x_bb"].shape == x.shape
    assert set(logs) >= {"loss", "loss_one", "loss_mix", "loss_mb", "loss_mask", "lam_mb", "lam_bb"}


def test_momentum_schedule_matches_spec():
    total = 1000
    values = {t: ema_momentum(int(t * total), total, 0.999, 0.999999, 0.1) for t in (0, 0.1, 0.25, 0.5, 0.75, 1.0)}
    assert values[0] == 0.999
    assert math.isclose(values[0.1], 0.9990244, abs_tol=1e-7)
    assert math.isclose(values[0.25], 0.99915, abs_tol=5e-6)
    assert math.isclose(values[0.5], 0.99950, abs_tol=5e-6)
    assert math.isclose(values[0.75], 0.99985, abs_tol=5e-6)
    assert math.isclose(values[1.0], 0.999999, abs_tol=1e-9)
    assert ema_momentum(99, total, 0.999, 0.999999, 0.1) == 0.999  # constant before 10%


def test_mask_loss_on_hand_made_masks():
    half = torch.full((2, 1, 4, 4), 0.5)
    assert mask_loss(half, 0.5, 0.1).item() == 0.0  # mean 0.5 = 1 - lam
    assert mask_loss(half, 0.55, 0.1).item() == 0.0  # inside the margin
    torch.testing.assert_close(mask_loss(half, 0.8, 0.1), torch.tensor(0.2))  # |0.2 - 0.5| - 0.1
    two = torch.zeros(2, 1, 4, 4)
    two[0] = 1.0  # batch mean 0.5, variance 0.25
    torch.testing.assert_close(mask_loss(two, 0.8, 0.1, "L1+Variance"), torch.tensor(0.2 - 2 * 0.25))


def test_samix_lam_curve_and_adjust():
    assert rescale_lam(0.0, 0.25) == 0.0 and math.isclose(rescale_lam(0.5, 0.25), 0.5)
    assert math.isclose(rescale_lam(1.0, 0.25), 1.0) and rescale_lam(0.3, -1) == 0.3
    mask = torch.rand(3, 1, 8, 8)
    adjusted = adjust_mask(mask, 0.3)
    torch.testing.assert_close(adjusted.mean(dim=(1, 2, 3)), torch.full((3,), 0.7))
    assert adjusted.min() >= 0 and adjusted.max() <= 1


@pytest.mark.parametrize("cls", METHODS)
def test_gradient_isolation(cls):
    method = make(cls)
    x, y = batch()
    terms = method.compute_losses(x, y)
    mb = list(method.mix_block.parameters())
    online = [p for p in method.model.parameters()] + list(method.head_mix.parameters())
    assert not any(p.requires_grad for p in method.model_k.parameters())
    assert not any(p.requires_grad for p in method.head_mix_k.parameters())
    total = terms["one"] + terms["mix"] + terms["mb"] + terms["mask"]
    g_total_mb = torch.autograd.grad(total, mb, retain_graph=True)
    g_part_mb = torch.autograd.grad(terms["mb"] + terms["mask"], mb, retain_graph=True)
    for a, b in zip(g_total_mb, g_part_mb):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in g_part_mb), "the Mix Block learns from L_mb + L_mask"
    g_total_q = torch.autograd.grad(total, online, retain_graph=True, allow_unused=True)
    g_part_q = torch.autograd.grad(terms["one"] + terms["mix"], online, retain_graph=True, allow_unused=True)
    for a, b in zip(g_total_q, g_part_q):
        torch.testing.assert_close(a, b)
    assert torch.autograd.grad(terms["mb"] + terms["mask"], online, retain_graph=True, allow_unused=True) == \
        tuple([None] * len(online)), "the Mix Block loss never reaches the online network"
    assert all(g is None for g in torch.autograd.grad(terms["one"] + terms["mix"], mb, allow_unused=True))


def test_ema_moves_only_by_the_ema_rule():
    method = make()
    opt = sgd(method)
    x, y = batch()
    before_k = [p.clone() for p in method.model_k.parameters()]
    m = method.current_ema_decay()
    step(method, opt, x, y)
    assert all(p.grad is None for p in method.model_k.parameters())
    for k_old, k_new, q in zip(before_k, method.model_k.parameters(), method.model.parameters()):
        torch.testing.assert_close(k_new, m * k_old + (1 - m) * q, rtol=1e-6, atol=1e-7)


def test_lam_margin_falls_back_to_plain_mixup():
    method = make(lam_margin=0.5)  # min(lam, 1 - lam) <= 0.5 always
    x, y = batch()
    method.training_step(x, y)
    last = method.last_mix
    expected = torch.lerp(x, x[last["perm_bb"]], 1.0 - last["lam_bb"])
    torch.testing.assert_close(last["x_bb"], expected)
    method = make(lam_margin=-1.0)  # off: the Mix Block's mask is used
    method.training_step(x, y)
    assert method.last_mix["mask_bb"].std() > 0


@pytest.mark.parametrize("cls", METHODS)
def test_state_dict_round_trip_is_bit_identical(cls):
    x, y = batch()
    method = make(cls)
    opt = sgd(method)
    for _ in range(3):
        step(method, opt, x, y)
    buf = io.BytesIO()
    torch.save({"method": method.state_dict(), "opt": opt.state_dict()}, buf)
    expected = [step(method, opt, x, y)[0] for _ in range(2)]
    final = [p.clone() for p in method.parameters()]

    other = make(cls, seed=123)  # different init and generator: everything must come from the file
    other_opt = sgd(other)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other.load_state_dict(state["method"])
    other_opt.load_state_dict(state["opt"])
    got = [step(other, other_opt, x, y)[0] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert all(torch.equal(a, b) for a, b in zip(final, other.parameters()))


@pytest.mark.parametrize("cls", METHODS)
def test_thirty_steps_lower_the_loss(cls):
    method = make(cls, width=8, total_steps=30)
    opt = sgd(method)
    x, y = batch(16)
    losses = [step(method, opt, x, y)[1]["loss_one"].item() for _ in range(30)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2, losses


def test_eval_model_choices():
    method = make()
    x, _ = batch(2)
    assert method.eval_model() is method.model_k
    assert method.eval_model(net="online") is method.model
    mix_view = method.eval_model(head="mix")
    torch.testing.assert_close(mix_view(x), method.head_mix_k(method.model_k.forward_head(
        method.model_k.forward_features(x), pre_logits=True)))


def test_autocast_bf16_keeps_attention_float32():
    method = make()
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = method.training_step(x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert method.last_mix["mask_mb"].dtype == torch.float32
    loss.backward()


def test_soft_targets_and_missing_num_classes():
    method = make()
    x, y = batch()
    loss, _ = method.training_step(x, torch.nn.functional.one_hot(y, 4).float())
    assert torch.isfinite(loss)
    method.num_classes = None
    with pytest.raises(ValueError, match="num_classes"):
        method.training_step(x, y)


def test_bad_arguments_name_the_argument():
    model = automix.create_model("preact_resnet18", num_classes=4, width=8)
    for kw, word in [({"alpha": 0}, "alpha"), ({"model_ema_decay": 1.5}, "model_ema_decay"),
                     ({"eval_net": "k"}, "eval_net"),
                     ({"feature_layer": "layer9"}, "feature_layer"), ({"loss_weights": {"foo": 1}}, "loss_weights"),
                     ({"mask_loss_weight": -1}, "mask_loss_weight"), ({"head_layer": "nope"}, "nope")]:
        with pytest.raises((ValueError, TypeError), match=word):
            automix.AutoMix(model, num_classes=4, **kw)
    with pytest.raises(ValueError, match="lam_concat"):
        automix.SAMix(model, num_classes=4, lam_concat=True)


def test_param_groups_separate_the_mix_block():
    method = make()
    groups = method.param_groups()
    assert [g["name"] for g in groups] == ["model", "mix_block"]
    ids = [{id(p) for p in g["params"]} for g in groups]
    assert not ids[0] & ids[1]
    assert ids[1] == {id(p) for p in method.mix_block.parameters()}
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    assert trainable == ids[0] | ids[1], "every trainable parameter is in exactly one group"


def test_create_method_names():
    model = automix.create_model("preact_resnet18", num_classes=4, width=8)
    assert isinstance(automix.create_method("automix", model, num_classes=4), automix.AutoMix)
    assert isinstance(automix.create_method("samix", model, num_classes=4), automix.SAMix)
    wrapped = automix.create_method("cutmix", model, num_classes=4, alpha=0.2)
    assert wrapped.mixer.alpha == 0.2
    x, y = batch()
    loss, logs = wrapped.training_step(x, y)
    assert torch.isfinite(loss) and "loss" in logs
    with pytest.raises(ValueError, match="name"):
        automix.create_method("automixx", model)


class TinyNet(torch.nn.Module):
    """A user's own backbone with its own names: AutoMix needs only a module path."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.classifier = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.classifier(self.pool(self.body(self.stem(x))).flatten(1))


@pytest.mark.parametrize("cls", METHODS)
def test_any_backbone_by_module_path(cls):
    method = cls(TinyNet(), feature_layer="body", num_classes=4, total_steps=5, seed=0)
    assert method.head_layer == "classifier"
    opt = sgd(method)
    x, y = batch(6)
    loss, _ = step(method, opt, x, y)
    assert torch.isfinite(loss) and method.last_mix["mask_mb"].shape == (6, 1, 32, 32)


def test_timm_backbone_if_installed():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", num_classes=4, pretrained=False)
    method = automix.AutoMix(model, feature_layer="layer3", num_classes=4, total_steps=5, input_size=64)
    loss, _ = method.training_step(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss)


def test_torchvision_backbone_if_installed():
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18(num_classes=4)
    method = automix.AutoMix(model, feature_layer="layer3", num_classes=4, total_steps=5, input_size=64)
    loss, _ = method.training_step(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss)


def test_whole_image_share():
    from automix.methods.mixblock import whole_image_share

    masks = torch.stack([torch.full((1, 4, 4), v) for v in (0.01, 0.99, 0.5, 0.3)])
    masks[3, 0, :2] = 1.0  # a cut with mean 0.65: mixed
    assert float(whole_image_share(masks)) == 0.5
    assert float(whole_image_share(masks, edge=0.4)) == 0.75
    # a lopsided mask whose label is as lopsided agrees with it: not a whole-image choice
    assert float(whole_image_share(masks, lam=torch.tensor([0.98, 0.5, 0.5, 0.5]))) == 0.25
    assert float(whole_image_share(masks, lam=0.5)) == 0.5


@pytest.mark.parametrize("cls", METHODS)
def test_saturated_masks_are_reported(cls):  # and collapsed ones
    method = make(cls)
    assert method.check_epoch({"loss": 3.0, "mask_mean": 0.4}) == []
    assert method.check_epoch({"loss": 3.0}) == []
    for saturated in (1e-7, 0.9999):
        (text,) = method.check_epoch({"loss": 3.0, "mask_mean": saturated})
        assert "saturated" in text and f"{saturated:.2g}" in text
    (text,) = method.check_epoch({"loss": 3.0, "mask_mean": 0.5, "mask_whole": 0.8})
    assert "80% of samples" in text and method.check_epoch({"mask_mean": 0.5, "mask_whole": 0.1}) == []
    if cls is automix.AutoMix:  # a Mix Block pushed to saturation by hand: its logged mask mean trips the check
        ref = make(cls, reference=True)
        with torch.no_grad():
            ref.mix_block.value.bias.fill_(-40.0)
        _, logs = ref.training_step(*batch(8))
        assert float(logs["mask_mean"]) < 1e-3 and ref.check_epoch({k: float(v) for k, v in logs.items()}) != []
        assert float(logs["mask_whole"]) == 1.0
        # the same push on the fitted mask (the default) moves nothing: each mask keeps the mean 1 - lam
        with torch.no_grad():
            method.mix_block.value.bias.fill_(-40.0)
        _, logs = method.training_step(*batch(8))
        assert float(logs["mask_mean"]) == pytest.approx(1 - float(logs["lam_mb"]), abs=1e-4)
        assert method.check_epoch({k: float(v) for k, v in logs.items()}) == []
    assert automix.create_method("mixup", automix.create_model("preact_resnet18", num_classes=4, width=4),
                                 num_classes=4).check_epoch({"loss": 1.0}) == []


# ---------------------------------------------------------------- issue 11: the Mix Block keeps mixing
@pytest.mark.parametrize("cls", METHODS)
def test_any_loop_evaluation_does_not_change_training(cls):
    """A user's evaluate() on eval_model() (.eval(), a no_grad forward, no .train() after) every 5 steps
    leaves the training losses bit for bit as in a run that never evaluates."""

    def run(evaluate_every):
        method = make(cls, seed=3, total_steps=20)
        opt = sgd(method)
        gen = torch.Generator().manual_seed(5)
        losses = []
        for i in range(20):
            x, y = batch(8, seed=100 + i)
            method.model.train()  # the user's loop trains its own model only
            losses.append(step(method, opt, x, y)[0])
            if evaluate_every and (i + 1) % evaluate_every == 0:
                net = method.eval_model()
                net.eval()
                with torch.no_grad():
                    net(torch.randn(16, 3, 32, 32, generator=gen) * 2.0)
        return torch.stack(losses)

    assert torch.equal(run(0), run(5))


@pytest.mark.parametrize("cls", METHODS)
def test_eval_model_is_in_eval_mode_and_training_restores_train_mode(cls):
    method = make(cls)
    x, y = batch()
    net = method.eval_model()
    assert not net.training, "an evaluate() that forgets .eval() must not update the encoder's BN statistics"
    before = [b.clone() for b in method.model_k.buffers()]
    with torch.no_grad():
        net(torch.randn(8, 3, 32, 32) * 3)
    assert all(torch.equal(a, b) for a, b in zip(before, method.model_k.buffers()))
    method.training_step(x, y)
    assert method.model_k.training and method.mix_block.training


@pytest.mark.parametrize("cls", METHODS)
@pytest.mark.parametrize("lam", [0.1, 0.35, 0.5, 0.8])
def test_mask_fit_gives_each_mask_the_mean_of_its_label(cls, lam):
    method = make(cls)
    x, _ = batch()
    with torch.no_grad():  # logits far from 0 (a trained, even saturated, block) must still fit
        method.mix_block.value.weight.normal_(0, 3.0) if isinstance(method.mix_block.value, torch.nn.Conv2d) \
            else method.mix_block.value.conv2.weight.normal_(0, 3.0)
    mask = method.mix_preview(x, lam=lam)["mask"]
    means = mask.flatten(1).mean(1)
    assert torch.allclose(means, torch.full_like(means, 1 - lam), atol=1e-4)


def test_mask_fit_gradient_is_the_implicit_one():
    from automix.methods.mixblock import fit_mask_mean
    gen = torch.Generator().manual_seed(0)
    s = (torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: fit_mask_mean(v, t, iters=60), (s,), atol=1e-6)
    # no gradient moves a sample's mean: the mean is fixed whatever the logits
    m = fit_mask_mean(s, t, iters=60)
    g, = torch.autograd.grad(m.flatten(1).mean(1).sum(), s)
    assert g.abs().max() < 1e-9


def _cut_std(t):
    return (t * (1 - t)).sqrt()


@pytest.mark.parametrize("probes", [None, 15])
@pytest.mark.parametrize("shape", ["noise", "shrunk", "spike", "sharp"])
def test_sharp_mask_has_its_mean_and_at_least_the_floor_std(shape, probes, monkeypatch):
    """The escapes a Mix Block found against softer floors (tiny logits, a few extreme pixels) stay sharp;
    also with the GPU's many-probe searches (``probes=15``), forced here on the CPU."""
    from automix.methods import mixblock
    from automix.methods.mixblock import fit_sharp_mask
    if probes:
        monkeypatch.setattr(mixblock, "search_probes", lambda numel, device: probes)
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(5, 1, 8, 8, generator=gen)
    if shape == "shrunk":
        s = s * 1e-3
    elif shape == "spike":
        s = s * 1e-3
        s[:, 0, 0, 0] = 50.0
    elif shape == "sharp":
        s = s * 40
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.95])
    m = fit_sharp_mask(s, t, 0.6).flatten(1)
    assert torch.allclose(m.mean(1), t, atol=1e-4)
    std = m.std(1, unbiased=False)
    assert (std >= 0.6 * _cut_std(t) - 1e-3).all(), std / _cut_std(t)
    if shape == "sharp":  # above the floor already: left as it is (only the mean is fitted)
        from automix.methods.mixblock import fit_mask_mean
        assert torch.allclose(m, fit_mask_mean(s, t).flatten(1), atol=1e-6)
    else:  # the floor binds: the std is the floor's, not more
        assert torch.allclose(std, 0.6 * _cut_std(t), atol=2e-3), std / _cut_std(t)


def _bisect_scale(s, t, min_sharpness, max_scale=1e4, iters=16):
    """Plain bisection on log k, one probe at a time: the search ``sharpness_scale`` must reproduce."""
    import math

    from automix.methods.mixblock import _fit_offset
    flat = s.flatten(1)
    t = t.reshape(-1, 1)
    want = min_sharpness * (t * (1 - t)).sqrt()

    def ok(k):
        u = flat * k
        return torch.sigmoid(u + _fit_offset(u, t, 20, probes=1)).std(1, unbiased=False, keepdim=True) >= want

    lo, hi = torch.zeros_like(t), torch.full_like(t, math.log(max_scale))
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        good = ok(mid.exp())
        lo, hi = torch.where(good, lo, mid), torch.where(good, mid, hi)
    return torch.where(ok(torch.ones_like(t)), torch.ones_like(t), hi.exp())


@pytest.mark.parametrize("probes", [1, 3, 7, 15])
@pytest.mark.parametrize("iters", [16, 9])
def test_many_probe_searches_find_what_bisection_finds(probes, iters):
    """A round of p probes does log2(p + 1) bisection steps at once (on the GPU, where launches are the cost):
    the scale and the offset land in bisection's dyadic cell, or its neighbour where float rounding of the
    probe points flips a near-tie; with one probe the search is bisection, bit for bit."""
    import math

    from automix.methods.mixblock import _fit_offset, sharpness_scale
    gen = torch.Generator().manual_seed(3)
    s = torch.randn(24, 1, 8, 8, generator=gen) * torch.logspace(-3, 0.5, 24)[:, None, None, None]
    s[0] = 0.0  # ties: the cap
    t = torch.rand(24, generator=gen) * 0.9 + 0.05
    want = _bisect_scale(s, t, 0.6, iters=iters)
    k = sharpness_scale(s, t, 0.6, iters=iters, probes=probes)
    assert k.shape == (24, 1) and k[0].item() == pytest.approx(1e4, rel=1e-6)
    cell = math.log(1e4) / 2**iters
    gap = (k.log() - want.log()).abs()
    if probes == 1:
        assert torch.equal(k, want)
    assert gap.max() <= 1.01 * cell, gap.max() / cell
    assert (gap < 1e-6).float().mean() >= 0.75  # mostly the very same cell
    flat, tt = (s[1:] * 3).flatten(1), t[1:, None]
    d1 = _fit_offset(flat, tt, 24, probes=1)
    dp = _fit_offset(flat, tt, 24, probes=probes)
    width = flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values
    assert ((dp - d1).abs() <= 1.01 * width / 2**24 + 1e-7).all()
    assert torch.allclose(torch.sigmoid(flat + dp).mean(1, keepdim=True), tt, atol=1e-5)


@pytest.mark.parametrize("probes", [1, 3, 15])
def test_the_scale_found_passes_the_floor_also_where_the_test_is_ragged(probes):
    """Spiky maps need scales in the thousands, where the search's inner offset fit is coarse and its sharpness
    test is not monotone in k near the boundary: every search, as bisection, returns a scale that passed it
    (or the cap)."""
    from automix.methods.mixblock import _fit_offset, sharpness_scale
    gen = torch.Generator().manual_seed(2)
    rows = []
    for shape in ("spike", "spike2"):
        s = torch.randn(192, 1, 8, 8, generator=gen)
        if shape == "spike":
            s = s * 1e-3
            s[:, :, 0, :2] = 50.0
        else:
            s = s * 1e-2
            s[:, :, 3, 3] = 5.0
        t = torch.rand(192, 1, generator=gen) * 0.9 + 0.05
        k = sharpness_scale(s, t[:, 0], 0.6, probes=probes)
        u = s.flatten(1) * k
        std = torch.sigmoid(u + _fit_offset(u, t, 20, probes=1)).std(1, unbiased=False, keepdim=True)
        rows.append((std >= 0.6 * (t * (1 - t)).sqrt()) | (k >= 1e4 * 0.999))
        assert (k > 100).float().mean() > 0.5  # the regime in question
    assert torch.cat(rows).all()


def test_search_probes_are_one_on_the_cpu_and_bounded_in_memory_on_a_gpu():
    from automix.methods.mixblock import PROBE_BUDGET, search_probes, sharpness_scale
    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    assert search_probes(10**6, torch.device("cpu")) == 1
    assert search_probes(PROBE_BUDGET // 16, cuda) == 15
    assert search_probes(PROBE_BUDGET // 16 + 1, cuda) == 3
    assert search_probes(PROBE_BUDGET // 4 + 1, cuda) == 1
    for bad in (0, 2, 6):
        with pytest.raises(ValueError, match=rf"probes\b.*\b{bad}\b"):
            sharpness_scale(torch.randn(2, 1, 4, 4), 0.5, 0.6, probes=bad)


def test_sharp_mask_of_a_constant_map_is_flat_and_finite():
    from automix.methods.mixblock import fit_sharp_mask
    s = torch.zeros(2, 1, 4, 4, requires_grad=True)
    t = torch.tensor([0.3, 0.0])
    m = fit_sharp_mask(s, t, 0.6)
    assert torch.allclose(m.flatten(1), t[:, None].expand(2, 16))
    g, = torch.autograd.grad((m * torch.randn_like(m)).sum(), s)
    assert torch.isfinite(g).all()


def test_sharp_mask_gradient_is_the_implicit_one_divided_by_the_scale(monkeypatch):
    """The implicit gradient (scale and offset both follow the logits) divided by each map's scale k: exact in
    direction, and the exact gradient where the floor does not bind (k = 1)."""
    import functools

    from automix.methods import mixblock
    # Tight bisections so finite differences see a smooth function.
    monkeypatch.setattr(mixblock, "sharpness_scale", functools.partial(mixblock.sharpness_scale, iters=60))
    fit = mixblock._fit_offset
    monkeypatch.setattr(mixblock, "_fit_offset", lambda flat, t, iters: fit(flat, t, 100))
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(4, 1, 4, 4, generator=gen, dtype=torch.float64) * 0.3
    s[3] *= 30  # this one is already sharp: only the mean binds
    s.requires_grad_(True)
    t = torch.tensor([0.3, 0.5, 0.8, 0.4], dtype=torch.float64)
    w = torch.randn(4, 1, 4, 4, generator=gen, dtype=torch.float64)
    g, = torch.autograd.grad((mixblock.fit_sharp_mask(s, t, 0.6) * w).sum(), s)
    k = mixblock.sharpness_scale(s.detach(), t, 0.6).reshape(4, 1, 1, 1)
    assert (k[:3] > 1).all() and k[3].item() == 1.0
    eps, numeric = 1e-6, torch.zeros_like(s)
    for i in range(s.numel()):
        d = torch.zeros(s.numel(), dtype=s.dtype)
        d[i] = eps
        d = d.view_as(s)
        up = (mixblock.fit_sharp_mask(s.detach() + d, t, 0.6) * w).sum()
        down = (mixblock.fit_sharp_mask(s.detach() - d, t, 0.6) * w).sum()
        numeric.view(-1)[i] = (up - down) / (2 * eps)
    assert torch.allclose(g * k, numeric, atol=1e-5), (g * k - numeric).abs().max()
    m = mixblock.fit_sharp_mask(s, t, 0.6).flatten(1)
    g_mean, = torch.autograd.grad(m.mean(1).sum(), s, retain_graph=True)
    assert g_mean.abs().max() < 1e-9  # no gradient moves a mean
    g_std, = torch.autograd.grad(m[:3].std(1).sum(), s)
    assert g_std[:3].abs().max() < 1e-7  # nor the std where the floor binds


@pytest.mark.parametrize("size", [(32, 32), (30, 30)])
def test_mix_block_fits_at_feature_size_exactly_when_nearest_upsampling_replicates(size):
    from automix.methods.mixblock import TIE_BREAK, PixelMixBlock, fit_sharp_mask, partner_energy
    torch.manual_seed(0)
    block = PixelMixBlock(8, mask_fit=True, init_std=None, min_sharpness=0.6)
    z, perm = torch.randn(6, 8, 8, 8), torch.randperm(6)
    mask = block(z, 0.3, perm, size)
    assert mask.shape == (6, 1) + size
    means = mask.flatten(1).mean(1)
    assert torch.allclose(means, torch.full_like(means, 0.7), atol=1e-5)
    assert (mask.flatten(1).std(1, unbiased=False) >= 0.6 * 0.21**0.5 - 1e-3).all()
    if size == (32, 32):  # 4x4 copies of each logit: the same mask as fitting the upsampled logits
        block.min_sharpness = 0.0
        with torch.no_grad():
            block.mask_fit = False
            raw = torch.logit(block(z, 0.8, perm, (8, 8)).double()).float()  # the block's logits (lam-blind)
        logits = raw + TIE_BREAK * partner_energy(z[perm])
        up = torch.nn.functional.interpolate(logits, size=size)
        assert torch.allclose(mask, fit_sharp_mask(up, 0.7, 0.6), atol=1e-4)


def test_a_block_with_tied_logits_still_cuts_where_the_partner_is_strong():
    """An attention that sends every position the same value gives tied logits: the floor then follows the
    partner's feature energy (the tie-breaker) instead of leaving the mask flat."""
    from automix.methods.mixblock import PixelMixBlock, partner_energy
    torch.manual_seed(0)
    block = PixelMixBlock(8, mask_fit=True, init_std=None, min_sharpness=0.6)
    with torch.no_grad():
        block.value.weight.zero_()  # every logit = the value conv's bias: a constant map
    z, perm = torch.randn(4, 8, 8, 8), torch.tensor([1, 2, 3, 0])
    mask = block(z, 0.5, perm, (8, 8))
    std = mask.flatten(1).std(1, unbiased=False)
    assert (std >= 0.6 * 0.5 - 1e-3).all(), std
    energy = partner_energy(z[perm])
    for i in range(4):  # the partner shows where its features are strongest
        corr = torch.corrcoef(torch.stack([mask[i].flatten(), energy[i].flatten()]))[0, 1]
        assert corr > 0.5, corr
    without = PixelMixBlock(8, mask_fit=True, init_std=None)
    without.load_state_dict(block.state_dict())
    assert without(z, 0.5, perm, (8, 8)).flatten(1).std(1).max() < 1e-6  # the fit alone leaves it flat


def test_mask_min_sharpness_defaults_and_errors():
    assert make(automix.AutoMix).mix_block.min_sharpness == 0.6
    assert make(automix.AutoMix, reference=True).mix_block.min_sharpness == 0.0
    assert make(automix.AutoMix, mask_fit=False).mix_block.min_sharpness == 0.0
    assert make(automix.SAMix).mix_block.min_sharpness == 0.0
    assert make(automix.AutoMix, mask_min_sharpness=0.0).mix_block.min_sharpness == 0.0
    with pytest.raises(ValueError, match="mask_min_sharpness"):
        make(automix.AutoMix, mask_min_sharpness=0.5, mask_fit=False)
    with pytest.raises(ValueError, match="mask_min_sharpness"):
        make(automix.AutoMix, mask_min_sharpness=1.0)


def test_reference_mode_keeps_the_free_mask_and_momenta():
    ref = make(automix.AutoMix, reference=True, total_steps=2000)
    assert not ref.mix_block.mask_fit and (ref.model_ema_decay, ref.model_ema_end_decay) == (0.999, 0.999999)
    ours = make(automix.AutoMix, total_steps=2000)
    assert ours.mix_block.mask_fit
    assert ours.model_ema_decay == pytest.approx(0.9) and ours.model_ema_end_decay == pytest.approx(0.9999)


@pytest.mark.parametrize("total,expected", [(200_000, (0.999, 0.999999)), (2000, (0.9, 0.9999)),
                                            (100, (0.5, 0.998))])
def test_momentum_follows_total_steps(total, expected):
    method = make(automix.AutoMix, total_steps=total)
    assert (method.model_ema_decay, method.model_ema_end_decay) == pytest.approx(expected)
    method.set_total_steps(2 * total)  # the trainer may tell it later; the schedule follows
    assert method.model_ema_end_decay == pytest.approx(1 - (1 - 0.999999) * 200_000 / (2 * total))
    explicit = make(automix.AutoMix, total_steps=total, model_ema_decay=0.99, model_ema_end_decay=0.995)
    assert (explicit.model_ema_decay, explicit.model_ema_end_decay) == (0.99, 0.995)


def test_reference_conflicts_with_the_fitted_mask_are_named():
    with pytest.raises(ValueError, match="mask_fit=True conflicts with reference=True"):
        make(automix.AutoMix, reference=True, mask_fit=True)
    with pytest.raises(ValueError, match="mask_min_sharpness=0.6 conflicts with reference=True"):
        make(automix.AutoMix, reference=True, mask_min_sharpness=0.6)
    with pytest.raises(TypeError, match="mask_fit"):
        make(automix.AutoMix, mask_fit="yes")
    assert make(automix.AutoMix, reference=True, mask_min_sharpness=0.0).mix_block.min_sharpness == 0.0



def test_mask_fits_take_targets_as_a_number_a_list_or_a_tensor():
    import numpy as np

    from automix.methods.mixblock import fit_mask_mean, fit_sharp_mask, whole_image_share
    s = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    want = torch.tensor([0.2, 0.5, 0.7])
    for fit in (fit_mask_mean, lambda x, t: fit_sharp_mask(x, t, 0.6)):
        by_list = fit(s, [0.2, 0.5, 0.7]).flatten(1).mean(1)
        assert torch.allclose(by_list, want, atol=1e-5)
        assert torch.equal(fit(s, np.array([0.2, 0.5, 0.7])), fit(s, want))
        assert torch.equal(fit(s, np.float64(0.3)), fit(s, torch.tensor(0.3)))
        assert torch.equal(fit(s, 0.3), fit(s, torch.full((3,), 0.3)))
    m = fit_mask_mean(s, 0.4)
    assert whole_image_share(m, lam=0.6).item() == whole_image_share(m, lam=torch.full((3,), 0.6)).item() == 0.0
