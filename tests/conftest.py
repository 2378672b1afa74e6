"""Shared fixtures: a mixer factory per registered name, and target builders per label kind."""

from __future__ import annotations

import pytest
import torch

import automix
from automix.mixers.registry import mixer_factory

NUM_CLASSES = 5

# Options that make each registered name a working mixer in the tests.
MIXER_KWARGS = {
    "mix_choice": {"mixers": ["mixup", "cutmix"]},
    "mixup_cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0},
    # SMMix and MixPro switch with mixup per batch: the generic tests run their own draws (the switch has its tests)
    "smmix": {"switch_prob": 1.0},
    "mixpro": {"switch_prob": 1.0},
}

LABEL_KINDS = ("index", "onehot", "soft", "multilabel", "regression")

# The mixers that need nothing from a model. The model-aware ones (BaseMixer.needs: SnapMix's CAM, ...) run in
# the method contract matrix (tests/test_method_contract.py) with a real tiny model, and in their own tests.
STATIC_MIXERS = [n for n in automix.list_mixers() if getattr(mixer_factory(n), "needs", None) is None
                 and getattr(mixer_factory(n), "reweights", None) is None]


def build_mixer(name: str, **kwargs) -> automix.BaseMixer:
    """The mixer ``name``; a model-aware one is fed a stand-in context (``fake_context``) when called without one,
    so the generic mixer tests run over it as over the static mixers."""
    mixer = automix.create_mixer(name, num_classes=NUM_CLASSES, **{**MIXER_KWARGS.get(name, {}), **kwargs})
    if mixer.needs is not None:
        mixer.__class__ = _fed_class(type(mixer))
    return mixer


def fake_context(needs: str, x: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for the model's context of a batch ``x`` (no model): for ``"saliency"`` a smooth
    positive map [B, H, W] from the image itself."""
    if needs == "saliency":
        grey = x.detach().float().mean(1, keepdim=True)
        return torch.nn.functional.avg_pool2d(grey, 3, stride=1, padding=1)[:, 0].abs() + 1e-3
    if needs == "cam":  # class activation maps [B, h, w] at a quarter of the image size
        grey = x.detach().float().mean(1, keepdim=True)
        return torch.nn.functional.adaptive_avg_pool2d(grey, [max(s // 4, 1) for s in x.shape[2:]])[:, 0]
    raise NotImplementedError(f"no fake context for {needs!r}: add one to conftest.fake_context")


_FED: dict[type, type] = {}


def _fed_class(cls: type) -> type:
    if cls not in _FED:
        def sample(self, x, generator=None, *, context=None):
            context = fake_context(self.needs, x) if context is None else context
            return cls.sample(self, x, generator, context=context)

        _FED[cls] = type(cls.__name__, (cls,), {"sample": sample})
    return _FED[cls]


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


@pytest.fixture(params=STATIC_MIXERS)
def mixer_name(request) -> str:
    return request.param


def spawn_ddp_ranks(argv: list[str], prelude: str, world: int = 2) -> list:
    """Start ``world`` ``automix`` processes as one DDP job on 127.0.0.1 (torchrun's environment, one thread each).

    Each runs ``prelude`` (code that patches the engine, e.g. to die or to be signalled at a step) and then
    ``automix.cli.main(argv)``; stdout and stderr are pipes. Returns the ``Popen`` objects, rank order.
    """
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = prelude + f"\nfrom automix.cli import main\nimport sys\nsys.exit(main({argv!r}))\n"
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": f"{root / 'src'}:{root / 'tests'}"}
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def write_tiny_protocol(path, cache_dir, subset: int = 64, epochs: int = 1):
    """A one-cell ``automix bench`` protocol (CutMix on a digits subset at 8 px, width 4) written to ``path``."""
    import yaml

    path.write_text(yaml.safe_dump({
        "name": "tiny", "base": {"dataset": "digits", "subset": subset, "epochs": epochs, "img_size": 8, "width": 4,
                                 "batch_size": 16, "progress": False, "save_images": False,
                                 "cache_dir": str(cache_dir)},
        "methods": {"cutmix": {"method": "cutmix"}}, "seeds": [0]}))
    return path


def tiny_method(name: str, **kw):
    """Method ``name`` on a width-4 PreAct-ResNet-18 with 4 classes, seeded (the model-aware methods' tests)."""
    torch.manual_seed(0)
    model = automix.create_model("preact_resnet18", num_classes=4, width=4)
    return automix.create_method(name, model, num_classes=4, seed=0, **kw)


# Methods for vision transformers registered as methods, not mixers (they read the model's patch size, and SMMix,
# MixPro and TL-Align its attention): TokenMix, SMMix, MixPro, TL-Align.
VIT_METHODS = ("tokenmix", "smmix", "mixpro", "tla")


def reads_attention(name: str) -> bool:
    """Whether method ``name`` needs a transformer (it reads attention: its mixer ``needs`` or ``reweights`` it; or
    it is in ``VIT_METHODS``): such a method runs on a ViT in the tests (``tiny_vit``), the others on a
    PreAct-ResNet."""
    if name in VIT_METHODS:
        return True
    try:
        factory = mixer_factory(name)
    except ValueError:  # a learned method or vanilla
        return False
    return "attention" in (getattr(factory, "needs", None), getattr(factory, "reweights", None))


def tiny_vit(num_classes: int = 4, depth: int = 2, **kw):
    """A 2-block ``vit_tiny`` for 32x32 images (patch 4: 8 x 8 tokens + the class token), seeded."""
    torch.manual_seed(0)
    return automix.create_model("vit_tiny", num_classes=num_classes, depth=depth, **kw)


def image_batch(seed: int = 0, n: int = 6):
    """``n`` random 32x32 RGB images and class ids in [0, 4)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=gen), torch.randint(0, 4, (n,), generator=gen)

