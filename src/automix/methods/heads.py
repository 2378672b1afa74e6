"""A second classifier head on any backbone, switched on by a forward hook.

The AutoMix reference trains two heads on the same backbone features: one on clean images and one
on mixed images (OpenMixup, github.com/Westlake-AI/openmixup @ 37e1372,
``openmixup/models/classifiers/automix.py``). To do that with *any* model, without editing it, we find its
classifier module (``fc``, ``head``, ``classifier``, or a path given by the user) and register a
forward hook that, while a switch is on, replaces the classifier's output by the second head's
output on the same input. One forward pass, no second pass, no change to the model's code.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from ..models.features import resolve_module

_CANDIDATES = ("fc", "head.fc", "head", "classifier", "last_linear")


def find_classifier(model: nn.Module, head_layer: str | None = None) -> str:
    """Module path of the model's final classifier (a ``nn.Linear`` or 1x1 conv producing logits)."""
    if head_layer is not None:
        resolve_module(model, head_layer, "head_layer")
        return head_layer
    for name in _CANDIDATES:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            return name
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    raise ValueError(f"head_layer: could not find the classifier of {type(model).__name__}; pass "
                     "head_layer='<module path of the final Linear>'")


def new_head_like(head: nn.Module) -> nn.Module:
    """A fresh copy of a classifier head, initialised like the reference heads (Normal(0, 0.01), bias 0)."""
    new = copy.deepcopy(head)
    for m in new.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return new


class HeadSwitch:
    """While ``active()`` is entered, ``model``'s classifier returns ``alt_head(its input)``.

    The hook checks the module identity, so deep copies of the model are not affected.
    """

    def __init__(self, model: nn.Module, head_layer: str, alt_head: nn.Module) -> None:
        self.module = resolve_module(model, head_layer)
        self.alt_head = alt_head
        self.on = False
        switch = self

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor | None:
            if switch.on and module is switch.module:
                return switch.alt_head(inputs[0])
            return None

        self._handle = self.module.register_forward_hook(hook)

    @contextmanager
    def active(self) -> Iterator[None]:
        self.on = True
        try:
            yield
        finally:
            self.on = False

    def remove(self) -> None:
        self._handle.remove()


class HeadView(nn.Module):
    """An eval network: ``model`` whose classifier output comes from the switched (mix) head."""

    def __init__(self, model: nn.Module, switch: HeadSwitch) -> None:
        super().__init__()
        self.model = model
        self.head = switch.alt_head
        self._switch = switch

    def forward(self, x: Tensor) -> Tensor:
        with self._switch.active():
            return self.model(x)
