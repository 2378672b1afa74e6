"""DecoupleMix (arXiv:2203.10761): the decoupled loss, as the reference computes it, through every method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import automix
from automix import losses
from automix.losses import decoupled_cross_entropy, soft_target_cross_entropy


def reference_global_terms(logits, target, eps=1e-3):
    """Per row, per mixed class j: -log softmax over ({j} + classes not in the mix) at j, by explicit selection
    (what openmixup's soft_mix_cross_entropy computes for each lam_k[i]), with a Python loop."""
    out = torch.zeros_like(logits)
    for b in range(logits.shape[0]):
        mixed = (target[b] > target[b].min() + eps).nonzero().flatten().tolist()
        if len(mixed) < 2:
            continue
        rest = [c for c in range(logits.shape[1]) if c not in mixed]
        for j in mixed:
            cols = [j] + rest
            out[b, j] = -F.log_softmax(logits[b, cols], 0)[0]
    return out


def mixed_batch(lam=0.7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, 6, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    index = torch.tensor([1, 2, 3, 4, 5, 0, 6, 6])  # row 6 is paired with itself
    target = lam * F.one_hot(y, 6).float() + (1 - lam) * F.one_hot(y[index], 6).float()
    return logits, target


@pytest.mark.parametrize("mode", ["both", "less", "more"])
def test_matches_the_reference_terms(mode):
    logits, target = mixed_batch(lam=0.7)
    terms = reference_global_terms(logits, target)
    share = target
    pick = {"both": share > 0, "less": (share > 0) & (share < 0.5), "more": share >= 0.5}[mode]
    expected = soft_target_cross_entropy(logits, target, "none") + 0.3 * (terms * pick).sum(1)
    got = decoupled_cross_entropy(logits, target, eta=0.3, mode=mode, reduction="none")
    torch.testing.assert_close(got, expected)
    assert (terms[6] == 0).all(), "a sample mixed with itself has one class: plain cross-entropy"
    assert not torch.allclose(got, soft_target_cross_entropy(logits, target, "none")), "the term must act"


def test_eta_zero_and_unmixed_rows_are_plain_ce():
    logits, target = mixed_batch()
    torch.testing.assert_close(decoupled_cross_entropy(logits, target, eta=0.0),
                               soft_target_cross_entropy(logits, target))
    onehot = F.one_hot(torch.arange(6) % 6, 6).float()
    torch.testing.assert_close(decoupled_cross_entropy(logits[:6], onehot, eta=1.0),
                               soft_target_cross_entropy(logits[:6], onehot))
    # label smoothing raises the floor of every row: the mixed classes are found above it
    smooth = onehot * 0.9 + 0.1 / 6
    torch.testing.assert_close(decoupled_cross_entropy(logits[:6], smooth, eta=1.0),
                               soft_target_cross_entropy(logits[:6], smooth))


def test_gradient_pushes_mixed_classes_against_the_rest():
    logits = torch.zeros(1, 4, requires_grad=True)
    target = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    (decoupled_cross_entropy(logits, target, eta=1.0) - soft_target_cross_entropy(logits, target)).backward()
    g = logits.grad[0]
    assert (g[:2] < 0).all() and (g[2:] > 0).all()


def test_every_method_takes_it():
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    for name in ("cutmix", "mixup", "automix", "none"):
        model = automix.create_model("preact_resnet18", num_classes=4, width=4)
        method = automix.create_method(name, model, num_classes=4, seed=0, loss="decouplemix", decouple_eta=0.5,
                                       decouple_mode="more", decouple_thr=0.4)
        assert method.loss == losses.TargetLoss("decouplemix", (("eta", 0.5), ("mode", "more"), ("thr", 0.4)))
        loss, _ = method.training_step(x, y)
        assert torch.isfinite(loss)
    # the step's loss is the decoupled loss of the step's mix
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("mixup", model, num_classes=4, seed=0, loss="decouplemix", decouple_eta=0.5)
    loss, _ = method.training_step(x, y)
    params = method.last_params["mix"]
    target = method.mixer.mix_targets(y, params)
    logits = model(method.apply(x, params))
    torch.testing.assert_close(loss, decoupled_cross_entropy(logits, target, eta=0.5))


def test_bad_options_are_named():
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    with pytest.raises(ValueError, match=r"\['decouple_eta'\] belong to loss='decouplemix'.*got loss='ce'"):
        automix.create_method("cutmix", model, num_classes=4, decouple_eta=0.1)
    with pytest.raises(ValueError, match="decouple_mode must be one of .* got 'most'"):
        automix.create_method("cutmix", model, num_classes=4, loss="decouplemix", decouple_mode="most")
    with pytest.raises(ValueError, match=r"decouple_eta must be in \[0.0, inf\), got -1"):
        automix.create_method("cutmix", model, num_classes=4, loss="decouplemix", decouple_eta=-1)
    with pytest.raises(ValueError, match=r"decouple_thr must be in \[0.0, 1.0\], got 2"):
        automix.create_method("mixup", model, num_classes=4, loss="decouplemix", decouple_thr=2)
    with pytest.raises(TypeError, match="option decouple_eta='big' for method 'automix' must be float"):
        automix.create_method("automix", model, num_classes=4, loss="decouplemix", decouple_eta="big")
    with pytest.raises(ValueError, match="loss must be one of"):
        automix.create_method("cutmix", model, num_classes=4, loss="decouple")


def test_the_trainer_takes_it_as_method_opts():
    from automix.train.build import build_method
    from automix.train.config import from_dict, validate

    cfg = validate(from_dict({"method": "cutmix", "method_opts": {"loss": "decouplemix", "decouple_eta": 0.01}}))
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = build_method(cfg, model, 4, 10, 0)
    assert method.loss.name == "decouplemix" and dict(method.loss.options)["eta"] == 0.01
