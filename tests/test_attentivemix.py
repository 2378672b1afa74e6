"""AttentiveMix+ (arXiv:2003.13048): the partner's top cells by the extractor's activation are pasted, lam is the
realised share; the extractor pass leaves the trained model alone; the default extractor is an EMA copy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import image_batch, tiny_method

import automix
from automix.context import features
from automix.losses import soft_target_cross_entropy


def tiny(**kw):
    return tiny_method("attentivemix", **kw)


def batch(seed=0):
    return image_batch(seed)


def cells_of(mask, grid):
    """[B, 1, H, W] pixel mask -> [B, grid, grid] cell mask (every cell all in or all out)."""
    cells = F.avg_pool2d(mask.float(), mask.shape[-1] // grid)[:, 0]
    assert ((cells == 0) | (cells == 1)).all(), "the mask is made of whole grid cells"
    return cells.bool()


@pytest.mark.parametrize("mode,top_k", [("batch", None), ("elem", None), ("elem", 3)])
def test_partner_top_cells_are_pasted_and_lam_is_the_realised_share(mode, top_k):
    method = tiny(mode=mode, top_k=top_k, layer="layer3")  # an 8 x 8 grid
    x, y = batch()
    grid_feats = features(method.extractor, x, y, layer="layer3")
    loss, _ = method.training_step(x, y)
    params = method.last_params["mix"]
    cells = cells_of(params.mask, 8)
    torch.testing.assert_close(params.lam, 1.0 - cells.flatten(1).float().mean(1))
    scores = grid_feats.mean(1)[params.index].flatten(1)  # the partner's scores
    k = cells.flatten(1).sum(1)
    assert (k > 0).all() and (k < 64).all()
    if top_k is not None:
        assert (k == top_k).all()
    elif mode == "batch":
        assert (k == k[0]).all(), "batch mode: one lam, so one k"
    for b in range(6):
        chosen, rest = scores[b][cells[b].flatten()], scores[b][~cells[b].flatten()]
        assert chosen.min() >= rest.max(), "exactly the top cells of the partner"
    target = params.lam[:, None] * F.one_hot(y, 4) + (1 - params.lam[:, None]) * F.one_hot(y[params.index], 4)
    logits = method.model(method.apply(x, params))
    torch.testing.assert_close(loss, soft_target_cross_entropy(logits, target.float()))


def test_the_extractor_pass_leaves_the_model_alone_and_the_ema_follows():
    method = tiny()
    x, y = batch()
    bn = [m for m in method.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    counts = [int(m.num_batches_tracked) for m in bn]
    method.context(x, y)
    assert [int(m.num_batches_tracked) for m in bn] == counts, "the model was not run"
    assert all(p.grad is None for p in method.parameters())
    assert all(not p.requires_grad for p in method.extractor.parameters())
    opt = torch.optim.SGD(method.param_groups(), lr=0.5)
    assert {id(p) for g in method.param_groups() for p in g["params"]}.isdisjoint(
        id(p) for p in method.extractor.parameters())
    before = [p.clone() for p in method.extractor.parameters()]
    loss, _ = method.training_step(x, y)
    loss.backward()
    assert all(p.grad is None for p in method.extractor.parameters())
    opt.step()
    method.after_step()
    for old, new, live in zip(before, method.extractor.parameters(), method.model.parameters()):
        torch.testing.assert_close(new, 0.999 * old + 0.001 * live.detach())


def test_a_users_extractor_runs_in_eval_mode_and_is_not_updated():
    extractor = automix.create_model("preact_resnet18", num_classes=4, width=4).train()
    frozen = copy.deepcopy(extractor.state_dict())
    method = tiny(extractor=extractor)
    x, y = batch()
    method.training_step(x, y)
    method.after_step()
    assert extractor.training, "its mode is given back"
    for key, value in extractor.state_dict().items():
        assert torch.equal(value, frozen[key]), f"{key} changed"


def test_bad_options_name_the_option():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match="top_k must be a positive int"):
        automix.create_method("attentivemix", model, num_classes=4, top_k=0)
    with pytest.raises(ValueError, match=r"extractor_ema_decay must be in \[0.0, 1.0\], got 2"):
        automix.create_method("attentivemix", model, num_classes=4, extractor_ema_decay=2)
    with pytest.raises(TypeError, match="option extractor=3 for method 'attentivemix' must be"):
        automix.create_method("attentivemix", model, num_classes=4, extractor=3)
    with pytest.raises(ValueError, match="layer 'layer9' is not a submodule of CifarResNet"):
        automix.create_method("attentivemix", model, num_classes=4, layer="layer9")  # at build
    extractor = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))  # a user's extractor: its modules are the ones named
    automix.create_method("attentivemix", model, num_classes=4, extractor=extractor, layer="0")
    with pytest.raises(ValueError, match="layer 'layer1' is not a submodule of Sequential"):
        automix.create_method("attentivemix", model, num_classes=4, extractor=extractor, layer="layer1")
    with pytest.raises(ValueError, match=r"top_k=20 exceeds the 16 cells of the feature grid \(4, 4\)"):
        automix.create_method("attentivemix", model, num_classes=4, top_k=20).training_step(*batch())


def test_a_given_lam_sets_the_pasted_cells():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("attentivemix", model, num_classes=4, seed=0, lam=0.25, mode="elem")
    method.training_step(*batch())
    params = method.last_params["mix"]
    cells = 16  # the 4 x 4 grid of a 32px input at the last stage
    k = round(0.75 * cells)
    torch.testing.assert_close(params.lam, torch.full((6,), 1 - k / cells))
    with pytest.raises(ValueError, match=r"top_k=3 fixes the pasted cells, but lam=0.25 is given"):
        automix.create_method("attentivemix", model, num_classes=4, lam=0.25, top_k=3)
