"""One contract test matrix over every registered method: static mixers, model-aware mixers (through a fake
context mixer and a fake label re-weighting mixer defined here), learned methods and vanilla training.

For each: a finite loss; gradients on exactly the parameters the method trains; an exact state round trip;
replay of the step's draws (``last_params``) on the batch the model saw and on a segmentation map; a preview;
bad options refused with the option and the method named.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import MIXER_KWARGS, reads_attention, tiny_vit

import automix
from automix.methods import method_spec
from automix.mixers import BaseMixer, CutMix
from automix.mixers.base import Region, lam_from_mask
from automix.mixers.registry import _MIXERS


class FakeSaliencyMix(BaseMixer):
    """A model-aware mixer as PuzzleMix-like ones will be: the partner shows where its saliency is high."""

    name = "fake_saliencymix"
    needs = "saliency"

    def _sample(self, x, lam, gen, *, index, context):
        sal = context[index[: lam.numel()].to(context.device)]  # [n, H, W]: the partner's saliency
        mask = (sal >= sal.flatten(1).median(1).values.view(-1, 1, 1)).unsqueeze(1)
        return Region(mask=mask, lam=lam_from_mask(mask))


class FakeReweightMix(CutMix):
    """CutMix whose label weight is set after the forward pass from what a layer saw (TransMix's seam)."""

    name = "fake_reweightmix"
    reweights = "features"

    def __init__(self, alpha: float = 1.0, *, layer: str = "layer1", **kwargs) -> None:
        super().__init__(alpha, **kwargs)
        self.layer = layer

    def context_options(self):
        return {"layer": self.layer}

    def reweight(self, params, context):
        lam = torch.sigmoid(context.float().flatten(1).mean(1))
        return dataclasses.replace(params, lam=lam)


FAKES = {"fake_saliencymix": FakeSaliencyMix, "fake_reweightmix": FakeReweightMix}


@pytest.fixture
def fakes():
    """Register the fake model-aware mixers for one test only (other modules list the real methods)."""
    _MIXERS.update(FAKES)
    try:
        yield
    finally:
        for name in FAKES:
            _MIXERS.pop(name, None)


NAMES = automix.list_methods() + sorted(FAKES)


def tiny_model(name=None):
    """The method's model: a 2-block ViT for the methods that read attention (TransMix), else a PreAct-ResNet."""
    if name is not None and reads_attention(name):
        return tiny_vit()
    torch.manual_seed(0)
    return automix.create_model("preact_resnet18", num_classes=4, width=4)


def build(name, seed=0, **kw):
    opts = {**MIXER_KWARGS.get(name, {}), **kw}
    return automix.create_method(name, tiny_model(name), num_classes=4, total_steps=10, seed=seed, **opts)


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(6, 3, 32, 32, generator=gen), torch.randint(0, 4, (6,), generator=gen)


def sgd_step(method, x, y):
    opt = torch.optim.SGD(method.param_groups(), lr=0.05, momentum=0.9)
    loss, logs = method.training_step(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    method.after_step()
    return opt


def test_every_method_is_registered_once_with_a_kind():
    names = automix.list_methods()
    assert len(names) == len(set(names))
    assert set(automix.list_mixers()) <= set(names), "every mixer is a method of the same name"
    assert automix.list_methods("learned") == ["adautomix", "automix", "samix"]
    assert automix.list_methods("vanilla") == ["none"]
    for name in names:
        assert method_spec(name).kind in automix.methods.KINDS
    with pytest.raises(ValueError, match="already registered"):
        automix.register_method("cutmix")(lambda model, **kw: None)
    with pytest.raises(ValueError, match="kind"):
        automix.register_method("x", kind="magic")


def test_fake_context_mixers_are_model_aware(fakes):
    assert method_spec("fake_saliencymix").kind == "model-aware"
    assert "fake_saliencymix" in automix.list_methods("model-aware")
    # Called directly, a model-aware mixer asks for its context by name.
    with pytest.raises(ValueError, match="context must be given for fake_saliencymix.*saliency"):
        automix.create_mixer("fake_saliencymix", num_classes=4)(*batch())


@pytest.mark.parametrize("name", NAMES)
def test_finite_loss_and_gradients_reach_what_the_method_trains(name, fakes):
    method = build(name)
    x, y = batch()
    loss, logs = method.training_step(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(logs["loss"])
    loss.backward()
    trained = set()
    for group in method.param_groups():
        grads = [p.grad for p in group["params"]]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), f"{group['name']}: a missing grad"
        assert any(g.abs().sum() > 0 for g in grads), f"{group['name']} gets no gradient"
        trained |= {id(p) for p in group["params"]}
    others = [n for n, p in method.named_parameters() if id(p) not in trained and p.grad is not None]
    assert not others, f"parameters outside the optimiser's groups got gradients: {others[:3]}"


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trip_continues_exactly(name, fakes):
    method = build(name)
    sgd_step(method, *batch(0))
    state = copy.deepcopy(method.state_dict())
    again = build(name, seed=123)
    again.load_state_dict(state)
    x, y = batch(1)
    a, logs_a = method.training_step(x, y)
    b, logs_b = again.training_step(x, y)
    assert torch.equal(a, b) and logs_a.keys() == logs_b.keys()
    assert all(torch.equal(torch.as_tensor(logs_a[k]), torch.as_tensor(logs_b[k])) for k in logs_a)


@pytest.mark.parametrize("name", NAMES)
def test_replay_of_the_steps_draws(name, fakes):
    method = build(name)
    x, y = batch()
    seen, clean = [], {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
             for m in method.children() if isinstance(m, torch.nn.Module)]
    # A draw made at a hidden layer (ManifoldMix: params.extra["layer"]) is replayed on that layer's clean output
    # (hooks registered first see it before the method's own hook mixes it) and must be what the next module saw.
    for name, m in method.model.named_modules():
        hooks.append(m.register_forward_pre_hook(
            lambda mod, args: seen.append(args[0].detach().clone()) if args and torch.is_tensor(args[0]) else None))
        hooks.append(m.register_forward_hook(
            lambda mod, args, out, name=name: None if not torch.is_tensor(out) or name in clean
            else clean.update({name: out.detach().clone()})))
    method.training_step(x, y)
    for h in hooks:
        h.remove()
    if not method.mixes:
        assert method.last_params == {}
        with pytest.raises(ValueError, match="mixes nothing"):
            method.mix_preview(x)
        return
    assert method.last_params, "a mixing method records its draws"
    for key, params in method.last_params.items():
        assert isinstance(params, automix.MixParams)
        assert params.lam.dtype == torch.float32 and params.lam.shape == (6,) and params.index.shape == (6,)
        layer = params.extra.get("layer", "input")
        source = x if layer == "input" else clean[layer]
        replayed = method.apply(source, params)
        assert any(t.shape == source.shape and torch.equal(t, replayed) for t in seen), f"{key}: replay differs"
        onehot = torch.nn.functional.one_hot(torch.randint(0, 3, (6, 32, 32)), 3).permute(0, 3, 1, 2).float()
        mixed = method.apply_seg(onehot, params, x)
        assert mixed.shape == onehot.shape and torch.allclose(mixed.sum(1), torch.ones(6, 32, 32))


@pytest.mark.parametrize("name", NAMES)
def test_preview(name, fakes):
    method = build(name)
    x, y = batch()
    if not method.mixes:
        return
    parts = method.mix_preview(x, y, torch.Generator().manual_seed(0))
    assert parts["mask"].shape == (6, 1, 32, 32) and parts["mixed"].shape == x.shape
    assert float(parts["mask"].min()) >= 0 and float(parts["mask"].max()) <= 1
    assert parts["lam"].shape == (6,)


@pytest.mark.parametrize("name", NAMES)
def test_bad_options_are_named(name, fakes):
    with pytest.raises(ValueError, match=rf"unknown option\(s\) \['bogus_key'\] for method '{name}'"):
        build(name, bogus_key=1)
    typed = next(k for k, o in method_spec(name).options.items() if o.type_text() != "any value")
    with pytest.raises(TypeError, match=rf"option {typed}=.* for method '{name}' must be"):
        build(name, **{typed: object()})


@pytest.mark.parametrize("name", automix.list_methods())
def test_method_opt_flag_is_checked_from_the_declaration(name):
    from automix.train.build import build_method
    from automix.train.config import from_dict, validate

    extra = {"mixup": 0.8} if name == "mixup_cutmix" else {"method_opts": MIXER_KWARGS.get(name, {})}
    cfg = validate(from_dict({"method": name, **extra}))
    cfg.method_opts = {**cfg.method_opts, "bogus_key": 1}
    with pytest.raises(ValueError, match=rf"bogus_key.*'{name}'"):
        build_method(cfg, tiny_model(name), 4, 10, 0)


def test_model_aware_mixer_reads_the_models_saliency(fakes):
    method = build("fake_saliencymix", mode="elem")
    x, y = batch()
    sal = automix.context.input_saliency(method.model, x, y)
    method.training_step(x, y)
    params = method.last_params["mix"]
    partner = sal[params.index]
    expected = partner >= partner.flatten(1).median(1).values.view(-1, 1, 1)
    assert torch.equal(params.mask[:, 0], expected), "the mask comes from the model's input saliency"
    assert all(p.grad is None for p in method.model.parameters()), "the context leaves no parameter gradients"


def test_label_weight_is_set_after_the_forward_pass(fakes):
    method = build("fake_reweightmix")
    x, y = batch()
    seen = {}
    method.model.layer1.register_forward_hook(lambda m, i, o: seen.setdefault("f", o.detach()))
    loss, _ = method.training_step(x, y)
    params = method.last_params["mix"]
    lam = torch.sigmoid(seen["f"].flatten(1).mean(1))
    assert torch.equal(params.lam, lam), "lam comes from the mixed batch's own forward pass"
    target = lam[:, None] * torch.nn.functional.one_hot(y, 4) + (1 - lam[:, None]) * torch.nn.functional.one_hot(
        y[params.index], 4)
    logits = method.model(method.apply(x, params))
    expected = automix.losses.target_loss("ce", logits, target.float())
    torch.testing.assert_close(loss, expected)


def test_old_option_names_still_reach_the_renamed_ones():
    """Configs and cached benchmark runs say momentum / end_momentum / mask_loss: create_method renames them."""
    old = build("automix", momentum=0.9, end_momentum=0.99, momentum_warmup=0.2, mask_loss=0.3)
    new = build("automix", model_ema_decay=0.9, model_ema_end_decay=0.99, model_ema_warmup=0.2, mask_loss_weight=0.3)
    for method in (old, new):
        assert (method.model_ema_decay, method.model_ema_end_decay, method.model_ema_warmup) == (0.9, 0.99, 0.2)
        assert method.mask_loss_weight == 0.3
    with pytest.raises(ValueError, match="'momentum' and 'model_ema_decay' of method 'samix' set the same thing"):
        build("samix", momentum=0.9, model_ema_decay=0.9)
    with pytest.raises(TypeError, match="option model_ema_decay='high' for method 'automix'"):
        build("automix", momentum="high")


# ---------------------------------------------------------------- found by trying to break the new methods


def test_a_switch_refuses_model_aware_mixers():
    """A switch computes no context: a model-aware child would fail only when the draw picks it."""
    with pytest.raises(ValueError, match="mixers: 'snapmix' reads the model's 'cam' context"):
        automix.create_mixer("mix_choice", mixers=["snapmix", "cutmix"], num_classes=4)
    with pytest.raises(ValueError, match="mixers: 'guidedmix'"):
        automix.create_mixer("mix_choice", mixers=[("guidedmix", {}), "mixup"], num_classes=4)
    automix.create_mixer("mix_choice", mixers=[("guidedmix", {"guide": "spectral"}), "mixup"], num_classes=4)


def test_decouple_eta_must_be_finite():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match="decouple_eta"):
        automix.create_method("cutmix", model, num_classes=4, loss="decouplemix", decouple_eta=float("inf"))


def test_snapmix_runs_on_a_bf16_model():
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4).to(torch.bfloat16)
    method = automix.create_method("snapmix", model, num_classes=4)
    loss, _ = method.training_step(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    assert torch.isfinite(loss)


def test_saliency_of_a_model_returning_a_tuple_is_refused_by_name():
    from automix.context import input_saliency

    class TupleOut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 4)

        def forward(self, x):
            return self.fc(x.flatten(1)), x

    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        input_saliency(TupleOut(), torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
