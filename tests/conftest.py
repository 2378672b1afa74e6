"""Shared fixtures: a mixer factory per registered name, and target builders per label kind."""

from __future__ import annotations

import pytest
import torch

import automix

NUM_CLASSES = 5

# Options that make each registered name a working mixer in the tests.
MIXER_KWARGS = {
    "mix_choice": {"mixers": ["mixup", "cutmix"]},
    "mixup_cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0},
}

LABEL_KINDS = ("index", "onehot", "soft", "multilabel", "regression")


def build_mixer(name: str, **kwargs) -> automix.BaseMixer:
    return automix.create_mixer(name, num_classes=NUM_CLASSES, **{**MIXER_KWARGS.get(name, {}), **kwargs})


def make_targets(kind: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "index":
        return torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    if kind == "onehot":
        return torch.nn.functional.one_hot(torch.randint(0, NUM_CLASSES, (batch,), generator=generator),
                                           NUM_CLASSES).float()
    if kind == "soft":
        return torch.rand(batch, NUM_CLASSES, generator=generator).softmax(1)
    if kind == "multilabel":
        return (torch.rand(batch, NUM_CLASSES, generator=generator) > 0.5).float()
    if kind == "regression":
        return torch.randn(batch, 3, 2, generator=generator)
    raise ValueError(kind)


def sample_id_probe(batch: int, height: int, width: int) -> torch.Tensor:
    """[B, B, H, W] probe whose sample i is 1 in channel i: after mixing, channel i of sample i is
    the weight sample i keeps at each pixel, whatever the mixer does with its partner."""
    return torch.eye(batch).view(batch, batch, 1, 1).expand(batch, batch, height, width).contiguous()


@pytest.fixture(params=automix.list_mixers())
def mixer_name(request) -> str:
    return request.param
