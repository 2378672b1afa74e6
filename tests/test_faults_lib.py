"""Library faults of issue 13 (items 1-6), each with the inputs the issue reported.

Each test names the row of docs/reliability.md it proves.
"""

from __future__ import annotations

import pytest
import torch

import automix
from conftest import MIXER_KWARGS


def tiny_model(num_classes: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return automix.create_model("preact_resnet18", num_classes=num_classes, width=4)


def build_method(name: str, model: torch.nn.Module, **kw) -> automix.Method:
    opts = {**MIXER_KWARGS.get(name, {}), **kw}
    if name in ("automix", "samix"):
        opts.setdefault("feature_layer", "layer3")
    return automix.create_method(name, model, num_classes=4, seed=0, **opts)


# ---------------------------------------------------------------- item 6: one input check everywhere
UINT8 = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
LABELS = torch.tensor([0, 1, 2, 3])


def test_automix_uint8_input_gets_the_mixers_type_error():
    """Issue 13.6: AutoMix raised "expected scalar type Byte but found Float" from inside a convolution."""
    method = automix.AutoMix(tiny_model(10), feature_layer="layer3", num_classes=10)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor for AutoMix.*uint8"):
        method.training_step(UINT8, LABELS)
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor for cutmix.*uint8"):
        automix.create_mixer("cutmix", num_classes=10)(UINT8, LABELS)


@pytest.mark.parametrize("name", automix.list_methods())
def test_every_method_checks_its_batch_like_the_mixers(name):
    method = build_method(name, tiny_model())
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor .*got dtype torch.uint8"):
        method.training_step(UINT8, LABELS)
    x = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match=r"y holds class ids outside \[0, num_classes=4\)"):
        method.training_step(x, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match=r"y must have the batch size of x \(4\)"):
        method.training_step(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        method.training_step(x.numpy(), LABELS)
