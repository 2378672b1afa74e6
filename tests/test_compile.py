"""Methods on a network compiled in place (``model.compile()``, as ``automix train --compile``): the same losses
as eager. Traced with the ``eager`` backend (no code generation: the graph capture, its guards and hooks are
what is under test, in seconds on CPU)."""

from __future__ import annotations

import pytest
import torch

import automix

torch_dynamo = pytest.importorskip("torch._dynamo")


def _losses(name: str, compiled: bool, steps: int = 3, **opts) -> list[float]:
    torch_dynamo.reset()  # graphs traced for another instance of the class must not be reused
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method(name, model, num_classes=4, seed=0, **opts)
    if compiled:
        method.model.compile(backend="eager")
    gen = torch.Generator().manual_seed(1)
    # A plain forward first (as a clean step or the trainer's own passes would): the graph is then traced
    # without the method's hooks, the case where a hook added later was silently skipped.
    method.model(torch.randn(8, 3, 32, 32, generator=gen))
    out = []
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32, generator=gen)
        y = torch.randint(0, 4, (8,), generator=gen)
        loss, _ = method(x, y)
        loss.backward()
        method.after_step()
        out.append(loss.item())
    return out


# ManifoldMix and AlignMix mix inside the forward pass through one-shot hooks, which a compiled graph does not
# call (they failed with "did not run in the model's forward pass"); AutoMix switches heads with a hook and
# SnapMix reads CAMs through hooks in an eval-mode pass.
@pytest.mark.parametrize(("name", "opts"), [("manifoldmix", {"layers": ("layer1", "layer2")}), ("alignmix", {}),
                                            ("automix", {}), ("snapmix", {})])
def test_compiled_network_gives_the_eager_losses(name, opts):
    assert _losses(name, True, **opts) == pytest.approx(_losses(name, False, **opts), rel=1e-5, abs=1e-6)


def test_alignmix_preview_on_a_compiled_network():
    torch_dynamo.reset()
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    method = automix.create_method("alignmix", model, num_classes=4, seed=0)
    method.model.compile(backend="eager")
    x = torch.randn(4, 3, 32, 32)
    method(x, torch.arange(4))  # the training graph first, so the preview's hook comes after a trace
    shown = method.mix_preview(x, generator=torch.Generator().manual_seed(0))
    assert shown["mixed"].shape == x.shape and torch.isfinite(shown["mixed"]).all()
