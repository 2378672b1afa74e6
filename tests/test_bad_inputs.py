"""Bad input raises ValueError/TypeError whose message names the offending argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import automix
from automix import losses

X = torch.rand(4, 3, 8, 8)
Y = torch.tensor([0, 1, 2, 0])

CONSTRUCTION = [
    (ValueError, "name", lambda: automix.create_mixer("nope")),
    (ValueError, "alpha", lambda: automix.create_mixer("mixup", alpha=0)),
    (ValueError, "alpha", lambda: automix.create_mixer("cutmix", alpha=-1.0)),
    (ValueError, "alpha", lambda: automix.create_mixer("mixup", alpha=float("nan"))),
    (ValueError, "alpha", lambda: automix.create_mixer("mixup", alpha=float("inf"))),
    (TypeError, "alpha", lambda: automix.create_mixer("mixup", alpha="1")),
    (ValueError, "prob", lambda: automix.create_mixer("mixup", prob=1.5)),
    (ValueError, "prob", lambda: automix.create_mixer("cutmix", prob=-0.1)),
    (ValueError, "mode", lambda: automix.create_mixer("mixup", mode="sample")),
    (ValueError, "pairing", lambda: automix.create_mixer("mixup", pairing="roll")),
    (ValueError, "label_smoothing", lambda: automix.create_mixer("mixup", label_smoothing=1.0)),
    (ValueError, "num_classes", lambda: automix.create_mixer("mixup", num_classes=0)),
    (TypeError, "num_classes", lambda: automix.create_mixer("mixup", num_classes=2.5)),
    (TypeError, "generator", lambda: automix.create_mixer("mixup", generator=np.random.default_rng())),
    (ValueError, "cutmix_minmax", lambda: automix.create_mixer("cutmix", cutmix_minmax=(0.5, 0.2))),
    (TypeError, "cutmix_minmax", lambda: automix.create_mixer("cutmix", cutmix_minmax=(0.5,))),
    (ValueError, "cutmix_minmax", lambda: automix.create_mixer("cutmix", cutmix_minmax=(0.2, 1.5))),
    (TypeError, "correct_lam", lambda: automix.create_mixer("cutmix", correct_lam="yes")),
    (ValueError, "decay_power", lambda: automix.create_mixer("fmix", decay_power=0)),
    (ValueError, "max_soft", lambda: automix.create_mixer("fmix", max_soft=0.7)),
    (ValueError, "scope", lambda: automix.create_mixer("resizemix", scope=(0.9, 0.1))),
    (ValueError, "interpolation", lambda: automix.create_mixer("resizemix", interpolation="cubic")),
    (TypeError, "n_holes", lambda: automix.create_mixer("gridmix", n_holes=2.5)),
    (ValueError, "sigma_range", lambda: automix.create_mixer("smoothmix", sigma_range=(0.5, 0.1))),
    (ValueError, "probs", lambda: automix.create_mixer("mix_choice", mixers=["mixup", "cutmix"], probs=[1.0])),
    (ValueError, "probs", lambda: automix.create_mixer("mix_choice", mixers=["mixup"], probs=[-1.0])),
    (ValueError, "mixers", lambda: automix.create_mixer("mix_choice", mixers=[])),
    (ValueError, "name", lambda: automix.create_mixer("mix_choice", mixers=["nope"])),
    (TypeError, "alpha", lambda: automix.create_mixer("mix_choice", mixers=["mixup"], alpha=1.0)),
    (ValueError, "mixup_alpha", lambda: automix.create_mixer("mixup_cutmix", mixup_alpha=0.0, cutmix_alpha=0.0)),
    (ValueError, "switch_prob", lambda: automix.create_mixer("mixup_cutmix", switch_prob=2.0)),
    (TypeError, "unexpected keyword", lambda: automix.create_mixer("mixup", alhpa=1.0)),
]


@pytest.mark.parametrize("error,word,call", CONSTRUCTION, ids=[f"{i}-{c[1]}" for i, c in enumerate(CONSTRUCTION)])
def test_bad_construction(error, word, call):
    with pytest.raises(error, match=word):
        call()


def _cutmix(**kw):
    return automix.create_mixer("cutmix", num_classes=3, **kw)


CALLS = [
    (ValueError, "x", lambda: _cutmix()(torch.rand(4, 8), Y)),  # no spatial dims
    (ValueError, "x", lambda: _cutmix()(torch.rand(4, 3, 2, 2, 2, 2), Y)),  # 4 spatial dims
    (ValueError, "x", lambda: automix.create_mixer("gridmix", num_classes=3)(torch.rand(4, 3, 8), Y)),
    (ValueError, "x", lambda: automix.create_mixer("mixup", num_classes=3)(torch.rand(4), Y)),
    (TypeError, "x", lambda: _cutmix()(torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), Y)),
    (TypeError, "x", lambda: _cutmix()(X.numpy(), Y)),
    (TypeError, "y", lambda: _cutmix()(X, [0, 1, 2, 0])),
    (ValueError, "y", lambda: _cutmix()(X, torch.tensor([0, 1, 2]))),
    (ValueError, "y", lambda: _cutmix()(X, torch.tensor(1))),
    (ValueError, "num_classes", lambda: automix.create_mixer("cutmix")(X, Y)),
    (ValueError, "y", lambda: _cutmix()(X, torch.zeros(4, 3, dtype=torch.long))),
    (ValueError, "y", lambda: _cutmix()(X, torch.tensor([0, 1, 3, 0]))),
    (ValueError, "y", lambda: _cutmix()(X, torch.tensor([0, -1, 2, 0]))),
    (TypeError, "y", lambda: _cutmix()(X, torch.ones(4, 3, dtype=torch.bool))),
    (ValueError, "label_smoothing", lambda: _cutmix(label_smoothing=0.1)(X, torch.rand(4, 3, 2))),
    (TypeError, "generator", lambda: _cutmix()(X, Y, 42)),
    (TypeError, "params", lambda: _cutmix()(X, Y, params={"lam": 0.5})),
    (ValueError, "t", lambda: _cutmix().apply(torch.rand(4, 3, 16, 16), _cutmix().sample(X))),
    (ValueError, "t", lambda: _cutmix().apply(torch.rand(2, 3, 8, 8), _cutmix().sample(X))),
    (TypeError, "seg", lambda: automix.create_mixer("mixup", num_classes=3)(X, Y, seg=torch.zeros(4, 8, 8).long())),
    (ValueError, "seg", lambda: _cutmix()(X, Y, seg=torch.zeros(4, 6, 6).long())),
    (TypeError, "seg", lambda: automix.create_mixer("smoothmix", num_classes=3)(X, Y, seg=torch.zeros(4, 8, 8).long())),
    # losses
    (ValueError, "target", lambda: losses.soft_target_cross_entropy(torch.rand(4, 3), torch.rand(4, 2))),
    (ValueError, "reduction", lambda: losses.soft_target_cross_entropy(torch.rand(4, 3), torch.rand(4, 3), "avg")),
    (TypeError, "y", lambda: losses.mixed_cross_entropy(torch.rand(4, 3), torch.rand(4), Y, 0.5)),
    (ValueError, "index", lambda: losses.mixed_cross_entropy(torch.rand(4, 3), Y, Y[:3], 0.5)),
    (ValueError, "target", lambda: losses.mixed_mse(torch.rand(4, 1), torch.rand(4))),
    (ValueError, "loss_fn", lambda: losses.interpolate_loss(lambda p, t: (p - t).pow(2).mean(), torch.rand(4),
                                                             torch.rand(4), Y, 0.5)),
]


@pytest.mark.parametrize("error,word,call", CALLS, ids=[f"{i}-{c[1]}" for i, c in enumerate(CALLS)])
def test_bad_call(error, word, call):
    with pytest.raises(error, match=word):
        call()
