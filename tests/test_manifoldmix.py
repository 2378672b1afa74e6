"""ManifoldMix (arXiv:1806.05236): the draw mixes the hidden tensor at the drawn layer and the targets alike."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import automix
from automix.losses import soft_target_cross_entropy


def tiny(**kw):
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    return automix.create_method("manifoldmix", model, num_classes=4, seed=0, **kw)


def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.rand(6, 3, 32, 32, generator=gen), torch.randint(0, 4, (6,), generator=gen)


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_same_draw_on_the_hidden_tensor_and_the_targets(mode):
    method = tiny(layers=("layer1",), mode=mode)
    x, y = batch()
    got = {}
    model = method.model
    model.layer1.register_forward_hook(lambda m, i, out: got.setdefault("clean", out.detach().clone()))
    model.layer2.register_forward_pre_hook(lambda m, args: got.setdefault("mixed", args[0].detach().clone()))
    loss, _ = method.training_step(x, y)
    params = method.last_params["mix"]
    assert params.extra["layer"] == "layer1"
    lam, index = params.lam.view(-1, 1, 1, 1), params.index
    assert not torch.equal(index, torch.arange(6))
    torch.testing.assert_close(got["mixed"], lam * got["clean"] + (1 - lam) * got["clean"][index])
    target = params.lam[:, None] * F.one_hot(y, 4) + (1 - params.lam[:, None]) * F.one_hot(y[index], 4)
    # the loss is that of the model run with this mix at layer1 (a second train-mode pass gives the same logits)
    logits = method._forward_mixed_at("layer1", x, params)
    torch.testing.assert_close(loss, soft_target_cross_entropy(logits, target.float()))


def test_layers_are_drawn_from_the_list_and_input_is_mixup():
    method = tiny()
    assert method.layers == ("input", "layer1", "layer2")
    x, y = batch()
    drawn = set()
    for _ in range(12):
        method.training_step(x, y)
        drawn.add(method.last_params["mix"].extra["layer"])
    assert drawn == {"input", "layer1", "layer2"}
    only_input = tiny(layers=["input"])
    seen = []
    only_input.model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    only_input.training_step(x, y)
    params = only_input.last_params["mix"]
    lam = params.lam.view(-1, 1, 1, 1)
    torch.testing.assert_close(seen[0], lam * x + (1 - lam) * x[params.index])


def test_any_backbone_with_named_modules():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    method = automix.create_method("manifoldmix", model, num_classes=3, seed=0, layers=("input", "1", "2"))
    loss, _ = method.training_step(torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="layers must be given for Sequential"):
        automix.create_method("manifoldmix", model, num_classes=3)


def test_bad_options_name_the_option():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match="layers: 'layer9' is neither 'input' nor a module"):
        automix.create_method("manifoldmix", model, num_classes=4, layers=("input", "layer9"))
    with pytest.raises(TypeError, match="option layers='layer1' for method 'manifoldmix' must be"):
        automix.create_method("manifoldmix", model, num_classes=4, layers="layer1")
    with pytest.raises(TypeError, match="layers must be a non-empty sequence"):
        automix.create_method("manifoldmix", model, num_classes=4, layers=())
    with pytest.raises(ValueError, match="alpha must be"):
        automix.create_method("manifoldmix", model, num_classes=4, alpha=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        automix.create_method("manifoldmix", model, num_classes=4, mode="pixel")


def test_a_given_lam_reaches_the_hidden_mix_and_repeated_layers_are_refused():
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("manifoldmix", model, num_classes=4, seed=0, lam=0.3)
    method.training_step(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    assert torch.equal(method.last_params["mix"].lam, torch.full_like(method.last_params["mix"].lam, 0.3))
    with pytest.raises(ValueError, match="layers has repeats"):
        automix.create_method("manifoldmix", model, num_classes=4, layers=["layer1", "layer1"])
