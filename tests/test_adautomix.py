"""AdAutoMix: the generator's masks, the fallback rate, gradient isolation, exact resume, learning, options.

Upstream (github.com/JinXins/Adversarial-AutoMixup @ 0990787) is the reference; the module docstring of
``automix/methods/adautomix.py`` says what it does and where this implementation differs.
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import automix
from automix.methods.adautomix import AdaptiveMask, kway_blend, kway_targets

KS = [2, 3]


def make(k=3, width=4, seed=0, **kw):
    torch.manual_seed(seed)
    model = automix.create_model("preact_resnet18", num_classes=4, width=width)
    return automix.AdAutoMix(model, feature_layer="layer3", num_classes=4, mix_samples=k,
                             total_steps=kw.pop("total_steps", 50), seed=seed, **kw)


def batch(n=8, seed=0, size=32):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    x = torch.randn(n, 3, size, size, generator=gen) * 0.5
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


def spy_terms(method):
    """Make ``training_step`` keep the loss terms (with their graphs) that it combined, in the returned dict."""
    seen = {}
    original = method.compute_losses

    def spy(x, y):
        seen.clear()
        seen.update(original(x, y))
        return seen

    method.compute_losses = spy
    return seen


# ---------------------------------------------------------------------------------------------- the generator
@pytest.mark.parametrize("k", KS)
def test_masks_sum_to_one_at_every_pixel(k):
    method = make(k, init_std=None)  # fan-in init: masks that differ between sources and pixels from the start
    x, y = batch()
    for _ in range(3):  # adversarial, cooperative, adversarial
        method.training_step(x, y)
        for key in ("masks_mb", "masks_bb"):
            masks = method.last_mix[key]
            if masks is None:  # the classifier's fallback to K-way mixup
                assert method.last_mix["fallback"]
                continue
            assert masks.shape == (8, k, 32, 32) and masks.dtype == torch.float32
            torch.testing.assert_close(masks.sum(1), torch.ones(8, 32, 32))
            assert float(masks.min()) >= 0
        method.after_step()
    assert method.last_mix["masks_mb"].std(1).mean() > 1e-3, "the sources get different shares"
    parts = method.mix_preview(x)
    torch.testing.assert_close(parts["masks"].sum(1), torch.ones(8, 1, 32, 32))
    torch.testing.assert_close(parts["mixed"], (parts["masks"] * parts["sources"]).sum(1), atol=1e-5, rtol=0)
    assert parts["mask"].shape == (8, 1, 32, 32) and parts["lam"].shape == (8,) and parts["lams"].shape == (8, k)
    assert torch.equal(parts["sources"][:, 0], x), "the preview's first source is the batch itself"
    differ = [(parts["sources"][:, i] != parts["sources"][:, j]).flatten(1).any(1).all()
              for i in range(k) for j in range(i + 1, k)]
    assert all(differ), "every sample's sources are different images"


def test_generator_is_upstreams_attention():
    """s_i = softmax(q_i (sum_{j != i} k_j) / sqrt(d)) v_i, q and k through ReLU, softmax over the K sources."""
    torch.manual_seed(0)
    block = AdaptiveMask(16, init_std=None, upsample="bilinear")
    z = torch.randn(5, 16, 4, 4)
    sources = torch.stack([torch.randperm(5) for _ in range(3)])
    masks = block(z, sources, [0.2, 0.3, 0.5], (16, 16))
    d = 8
    q = [torch.relu(block.query[0](z[s])).flatten(2).transpose(1, 2) for s in sources]  # [N, hw, d]
    kk = [torch.relu(block.key[0](z[s])).flatten(2) for s in sources]  # [N, d, hw]
    v = [block.value(z[s]).flatten(2).transpose(1, 2) for s in sources]  # [N, hw, 1]
    logits = []
    for i in range(3):
        attn = sum(q[i] @ kk[j] for j in range(3) if j != i) / math.sqrt(d)
        logits.append((attn.softmax(-1) @ v[i]).reshape(5, 1, 4, 4))
    up = torch.nn.functional.interpolate(torch.cat(logits, 1), scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(masks, up.softmax(1), atol=1e-6, rtol=1e-5)
    assert block.query[0].bias is not None and len(block.query) == 2, "conv + ReLU without att_norm"
    normed = AdaptiveMask(16, att_norm=True)
    assert normed.query[0].bias is None and isinstance(normed.query[1], torch.nn.BatchNorm2d), "ConvModule('auto')"
    lam_block = AdaptiveMask(16, lam_concat=True)
    assert lam_block.value.in_channels == 17


def test_first_masks_are_nearly_uniform_with_upstreams_init():
    """Normal(0, 0.01) weights: the attention is flat, so the first masks are about 1 / K and flat in space."""
    method = make(3)
    method.training_step(*batch())
    masks = method.last_mix["masks_mb"]
    assert (masks - 1 / 3).abs().max() < 0.1
    assert masks.flatten(2).std(2).max() < 1e-3


# ---------------------------------------------------------------------------------------------- draws
def test_fallback_fires_at_the_rate_of_upstreams_condition():
    """CIFAR settings (K = 3, alpha = 1, lam_margin = 0.03): lam_0 <= 0.03 or lam_0 > 0.97, about 3.1% of steps.

    lam_0 = U_0 / (U_0 + U_1 + U_2) with U_i uniform: P(lam_0 <= t) = c and P(lam_0 > 1 - t) = c^2 / 6 with
    c = t / (1 - t). OpenMixup's port tests ``lam_margin < 1 - lam_0`` instead, true in 99.98% of steps.
    """
    method = make(3)
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    draws = [method.draw(3, gen) for _ in range(n)]  # the smallest batch that K = 3 takes
    rate = sum(d["fallback"] for d in draws) / n
    c = 0.03 / 0.97
    expected = c + c * c / 6
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (rate, expected)
    lam0 = torch.stack([d["lam_bb"][0] for d in draws])
    port = ((0.03 >= lam0) | (0.03 < 1 - lam0)).float().mean()
    assert port > 0.99, "the port's test would fall back almost always on the same draws"
    assert all(torch.equal(d["lam_mb"], d["lam_bb"]) for d in draws[:100]), "K > 2: one lambda vector"
    torch.testing.assert_close(torch.stack([d["lam_bb"] for d in draws]).sum(1), torch.ones(n))
    # K = 2: AutoMix's test on lam_bb, min(lam, 1 - lam) <= 0.03: 6% with Beta(1, 1).
    two = make(2)
    rate2 = sum(two.draw(2, gen)["fallback"] for _ in range(5000)) / 5000
    assert abs(rate2 - 0.06) < 4 * math.sqrt(0.06 * 0.94 / 5000), rate2


@pytest.mark.parametrize(("lams", "falls_back"), [([0.01, 0.5, 0.5], True), ([0.99, 0.01, 0.01], True),
                                                  ([0.5, 0.3, 0.2], False)])
def test_fallback_trains_the_classifier_on_linear_mixup(lams, falls_back):
    method = make(3, lam=lambda shape, gen: torch.tensor(lams))
    x, y = batch()
    _, logs = method.training_step(x, y)
    assert bool(logs["fallback"]) is falls_back
    bb, linear = method.last_params["bb"], method.last_params["linear"]
    if falls_back:
        assert method.last_mix["masks_bb"] is None
        assert torch.equal(method.apply(x, bb), method.apply(x, linear)), "the classifier's sample is the linear mix"
        assert torch.equal(logs["loss_mix"], logs["loss_linear"])
    else:
        assert bb.extra["masks"] is not None and not torch.equal(method.apply(x, bb), method.apply(x, linear))


def test_k_way_targets_and_two_way_draws():
    method = make(3)
    x, y = batch()
    method.training_step(x, y)
    params = method.last_params["mb"]
    target = torch.nn.functional.one_hot(y, 4).float()
    mixed = kway_targets(target, params)
    torch.testing.assert_close(mixed.sum(1), torch.ones(8))
    expected = sum(params.extra["lams"][i] * target[s] for i, s in enumerate(params.extra["sources"]))
    torch.testing.assert_close(mixed, expected)
    # K = 2: the batch itself and one permutation; an ordinary two-way draw (partner mask, lam of the sample).
    two = make(2)
    two.training_step(x, y)
    mb = two.last_params["mb"]
    assert "sources" not in mb.extra and mb.mask.shape == (8, 1, 32, 32)
    torch.testing.assert_close(mb.mask[:, 0], two.last_mix["masks_mb"][:, 1])
    assert torch.equal(two.last_mix["src_mb"][0], torch.arange(8))
    torch.testing.assert_close(kway_blend(x, mb), (1 - mb.mask) * x + mb.mask * x[mb.index], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("k", KS)
def test_gradient_isolation_on_an_adversarial_step(k):
    method = make(k, width=8)
    x, y = batch()
    terms = spy_terms(method)
    assert method.is_adversarial()
    loss, logs = method.training_step(x, y)
    assert logs["adversarial"] == 1
    beta = method.beta_radio
    gen_params = list(method.mix_block.parameters())
    online = [p for g in method.param_groups() if g["name"] == "model" for p in g["params"]]
    own = terms["one"] if k == 2 else (1 - method.mixup_radio) * terms["one"] + method.mixup_radio * terms["linear"]
    own = own + terms["mix"]
    gen_loss = -beta * terms["gen_ce"] + (1 - beta) * terms["cos"]
    torch.testing.assert_close(logs["loss_gen"], gen_loss.detach())
    torch.testing.assert_close(loss, (own + gen_loss).detach())

    g_total = torch.autograd.grad(loss, gen_params, retain_graph=True)
    g_gen = torch.autograd.grad(gen_loss, gen_params, retain_graph=True)
    for a, b in zip(g_total, g_gen):
        torch.testing.assert_close(a, b)
    assert any(g.abs().sum() > 0 for g in g_gen)
    # The classifier's losses give the generator nothing (its masks are detached).
    assert all(g is None or not g.any() for g in torch.autograd.grad(own, gen_params, retain_graph=True,
                                                                     allow_unused=True))
    # The online network gets its own losses only.
    o_total = torch.autograd.grad(loss, online, retain_graph=True)
    o_own = torch.autograd.grad(own, online, retain_graph=True)
    for a, b in zip(o_total, o_own):
        torch.testing.assert_close(a, b)
    assert all(g is None or not g.any() for g in torch.autograd.grad(gen_loss, online, retain_graph=True,
                                                                     allow_unused=True))
    # The EMA encoder gets nothing at all.
    ema = list(method.model_k.parameters()) + list(method.head_mix_k.parameters())
    assert not any(p.requires_grad for p in ema)
    loss.backward()
    assert all(p.grad is None for p in ema)


@pytest.mark.parametrize("k", KS)
def test_adversarial_step_raises_the_ema_models_ce(k):
    """beta = 1: the generator's step is -grad CE_k, so it raises the EMA model's CE on the same draw; a
    cooperative step (+CE_k, as AutoMix) lowers it."""
    for adversarial in (True, False):
        method = make(k, width=8, beta_radio=1.0)
        x, y = batch()
        state = method.generator.get_state()
        terms = method.compute_losses(x, y)
        loss = method.generator_loss(terms, adversarial)
        params = list(method.mix_block.parameters())
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        g_ce = torch.autograd.grad(terms["gen_ce"], params)
        inner = sum(float((a * b).sum()) for a, b in zip(grads, g_ce))
        assert (inner < 0) is adversarial, inner  # -|grad CE|^2 or +|grad CE|^2
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= 0.3 * g
        method.generator.set_state(state)  # the same draw again
        with torch.no_grad():
            after = method.compute_losses(x, y)["gen_ce"]
        assert bool(after > terms["gen_ce"]) is adversarial, (float(terms["gen_ce"]), float(after))


def test_alternation_and_the_cosine_sign():
    method = make(3, adv_interval=3)
    assert [method.is_adversarial(s) for s in range(7)] == [True, False, False, True, False, False, True]
    assert not any(make(3, adv_interval=0).is_adversarial(s) for s in range(4))
    x, y = batch()
    logs = []
    opt = sgd(method)
    for _ in range(4):
        logs.append(step(method, opt, x, y)[1])
    assert [int(lg["adversarial"]) for lg in logs] == [1, 0, 0, 1]
    for lg in logs:
        expected = (-0.3 * lg["loss_gen_ce"] + 0.7 * lg["cos"]) if lg["adversarial"] else lg["loss_gen_ce"]
        torch.testing.assert_close(lg["loss_gen"], expected)
    flipped = make(3, cosine_sign=-1)
    _, lg = flipped.training_step(x, y)
    torch.testing.assert_close(lg["loss_gen"], -0.3 * lg["loss_gen_ce"] - 0.7 * lg["cos"])


# ---------------------------------------------------------------------------------------------- resume, learning
@pytest.mark.parametrize("k", KS)
def test_resume_across_the_adversarial_cooperative_boundary_is_exact(k):
    x, y = batch()
    method = make(k)
    opt = sgd(method)
    step(method, opt, x, y)  # step 0: adversarial
    buf = io.BytesIO()
    torch.save({"method": method.state_dict(), "opt": opt.state_dict()}, buf)
    expected = [step(method, opt, x, y)[1] for _ in range(3)]  # cooperative, adversarial, cooperative
    assert [int(lg["adversarial"]) for lg in expected] == [0, 1, 0]
    final = [p.clone() for p in method.parameters()]

    other = make(k, seed=123)  # other init and generator: everything must come from the file
    other_opt = sgd(other)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other.load_state_dict(state["method"])
    other_opt.load_state_dict(state["opt"])
    got = [step(other, other_opt, x, y)[1] for _ in range(3)]
    for a, b in zip(expected, got):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), (a, b)
    assert all(torch.equal(a, b) for a, b in zip(final, other.parameters()))


def test_thirty_steps_lower_the_classifier_loss():
    method = make(3, total_steps=30)
    opt = sgd(method)
    x, y = batch(16, size=16)
    losses = [step(method, opt, x, y)[1] for _ in range(30)]
    one = [float(lg["loss_one"]) for lg in losses]
    mix = [float(lg["loss_mix"]) for lg in losses]
    assert sum(one[-5:]) / 5 < sum(one[:5]) / 5 - 0.3, one
    assert sum(mix[-5:]) / 5 < sum(mix[:5]) / 5, mix


# ---------------------------------------------------------------------------------------------- options, modes
@pytest.mark.parametrize(("options", "named"), [
    ({"mix_samples": 1}, "mix_samples"), ({"beta_radio": 1.5}, "beta_radio"), ({"mixup_radio": -0.1}, "mixup_radio"),
    ({"lam_margin": 0.5}, "lam_margin"), ({"adv_interval": -1}, "adv_interval"), ({"cosine_sign": 0}, "cosine_sign"),
    ({"upsample": "bicubic"}, "upsample"), ({"scale_factor": 0}, "scale_factor"), ({"alpha": 0.0}, "alpha"),
    ({"loss_weights": {"mb": 1.0}}, "loss_weights"), ({"eval_net": "best"}, "eval_net"),
    ({"model_ema_decay": 1.5}, "model_ema_decay"), ({"lam": 1.5}, "lam"), ({"reduction": 0}, "reduction"),
])
def test_bad_options_are_named(options, named):
    with pytest.raises(ValueError, match=named):
        automix.create_method("adautomix", automix.create_model("preact_resnet18", num_classes=4, width=4),
                              num_classes=4, **options)


def test_bad_option_types_and_keys_are_named():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(TypeError, match="option mix_samples='3' for method 'adautomix'"):
        automix.create_method("adautomix", model, num_classes=4, mix_samples="3")
    with pytest.raises(TypeError, match="option att_norm=1 for method 'adautomix'"):
        automix.create_method("adautomix", model, num_classes=4, att_norm=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['mask_loss_weight'\] for method 'adautomix'"):
        automix.create_method("adautomix", model, num_classes=4, mask_loss_weight=0.1)  # AdAutoMix has no mask loss
    with pytest.raises(ValueError, match=r"loss_weights has unknown keys \['mb'\]; use 'one', 'mix', 'gen'"):
        automix.AdAutoMix(model, num_classes=4, loss_weights={"mb": 1.0})  # AutoMix's term, not AdAutoMix's
    with pytest.raises(ValueError, match=r"loss_weights has unknown keys \['gen'\]; use 'one', 'mix', 'mb'"):
        automix.AutoMix(model, num_classes=4, loss_weights={"gen": 1.0})
    # AutoMix's old EMA names are accepted, as in AutoMix's configs.
    method = automix.create_method("adautomix", model, num_classes=4, momentum=0.9, end_momentum=0.99)
    assert (method.model_ema_decay, method.model_ema_end_decay) == (0.9, 0.99)


def test_scale_factor_is_checked_against_the_images():
    x, y = batch()
    make(3, scale_factor=4).training_step(x, y)  # 8x8 stage-3 features, 32 px images
    with pytest.raises(ValueError, match=r"scale_factor 16 upsamples the \(8, 8\) features .* images are \(32, 32\)"):
        make(3, scale_factor=16).training_step(x, y)


def test_the_method_owns_the_modes_of_its_parts():
    method = make(3)
    x, y = batch()
    net = method.eval_model()
    assert net is method.model_k and not net.training, "the EMA encoder, ready to evaluate"
    method.mix_block.eval()
    method.model.eval()  # the online model's mode is the user's
    method.training_step(x, y)
    assert method.model_k.training and method.mix_block.training and method.head_mix_k.training
    assert not method.model.training
    assert method.eval_model(net="online") is method.model


def test_lam_and_its_normalisation():
    x, y = batch()
    _, logs = make(2, lam=0.3).training_step(x, y)
    assert float(logs["lam_mb"]) == float(logs["lam_bb"]) == float(torch.tensor(0.3))
    draws = [make(3, seed=s, lam={"beta": [2, 5]}).draw(4)["lam_bb"] for s in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    with pytest.raises(ValueError, match=r"lam must be a number or 3 numbers for mix_samples=3, got \[0.5, 0.5\]"):
        make(3).mix_preview(x, lam=[0.5, 0.5])
    parts = make(3).mix_preview(x, lam=[2.0, 1.0, 1.0])
    torch.testing.assert_close(parts["lams"][0], torch.tensor([0.5, 0.25, 0.25]))


@pytest.mark.parametrize("k", [3, 4])
@pytest.mark.parametrize("lam", [0.7, 0.2, {"fold": 0.2}], ids=["0.7", "0.2", "fold"])
def test_a_fixed_lam_with_more_than_two_images_is_the_first_images_weight(k, lam):
    """A fixed lam was drawn K times and normalised, so every number gave 1 / K: the value was ignored. It is now
    the first image's weight (as for K = 2 and every other method), the others sharing 1 - lam equally, in the
    training step (both branches, the targets, the fallback test) and in the preview."""
    value = lam if isinstance(lam, float) else max(lam["fold"], 1 - lam["fold"])
    want = torch.tensor([value] + [(1 - value) / (k - 1)] * (k - 1))
    method = make(k, lam=lam)
    x, y = batch()
    _, logs = method.training_step(x, y)
    for key in ("lam_mb", "lam_bb"):
        torch.testing.assert_close(method.last_mix[key], want)
    assert float(logs["lam_mb"]) == pytest.approx(value) and not bool(logs["fallback"])
    target = torch.nn.functional.one_hot(y, 4).float()
    torch.testing.assert_close(kway_targets(target, method.last_params["bb"]),
                               sum(want[i] * target[s] for i, s in enumerate(method.last_mix["src_bb"])))
    torch.testing.assert_close(method.mix_preview(x, lam=value)["lams"][0], want)
    # lam_0 at the margin makes the fallback fire on every step, as the upstream test on lam_0 says.
    assert make(k, lam=0.02).draw(8)["fallback"] and make(k, lam=0.98).draw(8)["fallback"]


@pytest.mark.parametrize(("k", "n"), [(3, 2), (5, 4), (2, 1)])
def test_a_batch_smaller_than_mix_samples_is_refused_at_the_first_step(k, n):
    """mix_samples larger than the batch was accepted: every mix then took one image more than once."""
    method = make(k)
    x, y = batch(n)
    with pytest.raises(ValueError, match=rf"mix_samples={k} needs a batch of at least {k} images .* got a batch of "
                                         rf"{n}; lower mix_samples or raise the batch size"):
        method.training_step(x, y)
    assert int(method.step) == 0 and method.last_params == {}
    method.training_step(*batch(k))  # a batch of K images is enough


def test_trainer_names_mix_samples_and_the_batch_size(tmp_path, capsys):
    from automix.cli import main

    code = main(["train", "--method", "adautomix", "--method-opt", "mix_samples=3", "--batch-size", "2",
                 "--subset", "16", "--epochs", "1", "--width", "4", "--output", str(tmp_path / "r")])
    assert code == 2
    assert "mix_samples=3 needs a batch of at least 3 images (each mix takes 3 images of the batch), got a batch of " \
           "2; lower mix_samples or raise the batch size (--batch-size 2, per process)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists(), "refused before the run starts: no run folder left behind"
    make(3).check_batch_size(3)
    with pytest.raises(ValueError, match="mix_samples=4 needs a batch of at least 4"):
        make(4).check_batch_size(3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_works_in_the_dtype_of_its_model(dtype):
    x, y = batch(4)
    torch.manual_seed(0)
    built_on = automix.AdAutoMix(automix.create_model("preact_resnet18", num_classes=4, width=4).to(dtype),
                                 num_classes=4, seed=0)
    moved = make(3).to(dtype)
    for method in (built_on, moved):
        assert {p.dtype for p in method.mix_block.parameters()} == {dtype}
        loss, _ = method.training_step(x, y)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert method.last_mix["masks_mb"].dtype == torch.float32, "the attention and softmax stay float32"
        assert method.last_mix["x_mb"].dtype == dtype
        loss.backward()
        grads = [p.grad for p in method.mix_block.parameters() if p.grad is not None]
        assert grads and all(g.dtype == dtype and torch.isfinite(g).all() for g in grads)


def test_autocast_bf16():
    method = make(3)
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = method.training_step(x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(logs["cos"])
    assert method.last_mix["masks_mb"].dtype == torch.float32
    loss.backward()


def test_imagenet_style_generator_trains():
    """K = 2 with lam_concat and BN on the query and key (upstream's ImageNet config), ImageNet's beta."""
    method = make(2, lam_concat=True, att_norm=True, beta_radio=0.1)
    opt = sgd(method)
    x, y = batch()
    before = [p.detach().clone() for p in method.mix_block.parameters()]
    for _ in range(2):
        loss, logs = step(method, opt, x, y)
        assert torch.isfinite(loss)
    assert all(not torch.equal(a, p) for a, p in zip(before, method.mix_block.parameters()))


# ---------------------------------------------------------------------------------------------- the trainer
def test_trainer_run_logs_its_terms_and_draws_k_way_pictures(tmp_path, capsys):
    import csv

    from PIL import Image

    from automix.cli import main

    out = tmp_path / "run"
    base = ["--dataset", "digits", "--subset", "96", "--model", "preact_resnet18", "--width", "4", "--batch-size",
            "16", "--no-progress", "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", *base, "--epochs", "1", "--method", "adautomix", "--mix-block-lr", "0.05",
                 "--output", str(out)]) == 0
    with (out / "summary.csv").open() as f:
        row = next(csv.DictReader(f))
    for key in ("train_loss_one", "train_loss_linear", "train_loss_mix", "train_loss_gen_ce", "train_loss_gen",
                "train_cos", "train_fallback", "train_adversarial", "train_mask_entropy", "train_mask_gap"):
        assert key in row, key
    assert 0 < float(row["train_adversarial"]) < 1 and 0 <= float(row["train_fallback"]) <= 1
    assert 0 <= float(row["train_mask_entropy"]) <= 1 + 1e-6
    picture = Image.open(out / "mixes" / "epoch000.png")
    assert picture.size[0] >= 7 * 16 * 4, "3 images, 3 masks and the mix, 16 px at scale 4"
    shown = tmp_path / "show.png"
    assert main(["show", *base, "--method", "adautomix", "--method-opt", "mix_samples=2", "--output",
                 str(shown)]) == 0
    assert Image.open(shown).size[0] >= 5 * 16 * 4
    capsys.readouterr()
    assert main(["train", *base, "--epochs", "1", "--method", "adautomix", "--method-opt", "beta_radio=2",
                 "--output", str(tmp_path / "bad")]) != 0
    assert "error: beta_radio must be in [0.0, 1.0], got 2" in capsys.readouterr().err


@pytest.mark.parametrize(("recipe", "size", "classes"), [
    ("cifar100/adautomix_r18.yaml", 32, 100), ("cifar100/adautomix_rx50.yaml", 32, 100),
    ("tiny_imagenet/adautomix_r18.yaml", 64, 200), ("cpu/cifar10_adautomix_w16.yaml", 32, 10),
    ("imagenet/adautomix_r50.yaml", 224, 1000)])
def test_recipes_build_and_step(recipe, size, classes):
    """Every AdAutoMix recipe builds its method; on its image size the upsampling factor it names fits (the
    ImageNet recipe's torchvision ResNet-50 is not built here: the method on a CIFAR ResNet, no step)."""
    from pathlib import Path

    from automix.train.build import build_method
    from automix.train.config import from_dict, load_yaml, validate

    cfg = validate(from_dict(load_yaml(Path(__file__).parents[1] / "configs" / recipe)))
    assert cfg.method == "adautomix"
    torch.manual_seed(0)
    name = cfg.model if not cfg.model.startswith("torchvision:") else "resnet18"
    model = automix.create_model(name, num_classes=classes, **({} if "resnext" in name else {"width": 4}))
    method = build_method(cfg, model, classes, 100, 0)
    assert method.alpha == 1.0 and method.lam_margin == 0.03
    if name == cfg.model:
        k = method.mix_samples  # the smallest batch the recipe's K takes
        loss, _ = method.training_step(torch.rand(k, 3, size, size), torch.randint(0, classes, (k,)))
        assert torch.isfinite(loss)
