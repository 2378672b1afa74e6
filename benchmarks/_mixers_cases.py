"""What ``mixers.py`` times: the shapes, the options of every mixer, and one callable per timed case.

Part of the mixer-throughput benchmark (run ``PYTHONPATH=src python benchmarks/mixers.py``), not a module to use
on its own. timm and the ``mixup`` package are optional: when either is absent its loader returns None, no case is
built for it, and the report leaves its columns empty ("–").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import automix  # _common finds src/ when PYTHONPATH=src is missing

NUM_CLASSES = 1000
SHAPES = {"32px": (128, 3, 32, 32), "224px": (64, 3, 224, 224)}
MODES = ("batch", "elem")

# Options per automix mixer (num_classes and mode are added to all).
MIXER_KWARGS = {"mix_choice": {"mixers": ["mixup", "cutmix"]},
                "mixup_cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}}
SWITCHES = {"mix_choice", "mixup_cutmix"}  # one of two mixers per call: report a trimmed mean, not the median

# timm's Mixup options for the automix mixers it has an equivalent of (both modes).
TIMM_KWARGS = {"mixup": {"mixup_alpha": 1.0, "cutmix_alpha": 0.0},
               "cutmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
               "mixup_cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5},
               "mix_choice": {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "switch_prob": 0.5}}


def load_timm_mixup():
    """timm's ``Mixup`` class from ``timm/data/mixup.py`` alone (importing ``timm`` pulls in torchvision)."""
    spec = importlib.util.find_spec("timm")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mixup.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("_bench_timm_mixup", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.Mixup


def load_mixup_package():
    """The ``mixup`` PyPI package (a torch mixup library: VanillaMixUp, CutMix, ResizeMix, FMix, ...), or None."""
    try:
        import mixup as pkg
    except ImportError:
        return None
    needed = ("VanillaMixUp", "CutMix", "ResizeMix", "FMix", "SaliencyMix", "MixupPipeline")
    return pkg if all(hasattr(pkg, n) for n in needed) else None


def mixup_package_cases(pkg) -> dict[tuple[str, str], tuple[object, str]]:
    """(automix name, mode) -> (the `mixup` package's equivalent, note). It has batch-level methods only."""
    if pkg is None:
        return {}
    return {
        ("mixup", "batch"): (pkg.VanillaMixUp(alpha=1.0), ""),
        ("cutmix", "batch"): (pkg.CutMix(alpha=1.0), ""),
        ("fmix", "batch"): (pkg.FMix(alpha=1.0, decay_power=3.0), ""),
        ("resizemix", "batch"): (pkg.ResizeMix(alpha=1.0), "box side sqrt(1-lam), lam~Beta(1,1); ours tau~U(0.1,0.8)"),
        # One lam per batch but a per-sample box centred on each partner's saliency peak (a Python loop):
        # per-sample work like our elem mode, so it is compared there.
        ("saliencymix", "elem"): (pkg.SaliencyMix(alpha=1.0, mode="heuristic"),
                                  "one lam, per-sample boxes: compared with our elem mode"),
        ("mix_choice", "batch"): (pkg.MixupPipeline([pkg.VanillaMixUp(alpha=1.0), pkg.CutMix(alpha=1.0)]), ""),
        ("mixup_cutmix", "batch"): (pkg.MixupPipeline([pkg.VanillaMixUp(alpha=0.8), pkg.CutMix(alpha=1.0)]), ""),
    }


def build_cases(names: list[str], timm_mixup, pkg_cases: dict, shapes: list[str] | None = None) -> list[dict]:
    """Every timed case: kind, method, mode, shape, fn, setup (run untimed before each call), note.

    ``timm_mixup`` None or ``pkg_cases`` empty (the package is not installed) simply means no such cases.
    """
    cases = []
    for shape, dims in SHAPES.items():
        if shapes and shape not in shapes:
            continue
        gen = torch.Generator().manual_seed(1234)
        x = torch.rand(dims, generator=gen)
        y = torch.randint(0, NUM_CLASSES, (dims[0],), generator=gen)
        perm = torch.randperm(dims[0], generator=gen)
        buf = torch.empty_like(x)

        def add(kind, method, mode, fn, setup=None, note="", shape=shape):
            cases.append({"kind": kind, "method": method, "mode": mode, "shape": shape, "fn": fn, "setup": setup,
                          "note": note})

        add("floor", "lerp floor", "-", lambda _, x=x, perm=perm: torch.lerp(x, x[perm], 0.3))
        add("clone", "x.clone()", "-", lambda _, x=x: x.clone())
        add("copy", "buf.copy_(x)", "-", lambda _, x=x, buf=buf: buf.copy_(x))
        for name in names:
            for mode in MODES:
                mixer = automix.create_mixer(name, mode=mode, num_classes=NUM_CLASSES, **MIXER_KWARGS.get(name, {}))
                g = torch.Generator().manual_seed(0)
                add("automix", name, mode, lambda _, m=mixer, g=g, x=x, y=y: m(x, y, g))
                if timm_mixup is not None and name in TIMM_KWARGS:
                    tm = timm_mixup(mode=mode, label_smoothing=0.0, num_classes=NUM_CLASSES, **TIMM_KWARGS[name])
                    # timm mixes in place: a fresh clone per call, made outside the timed region.
                    add("timm", name, mode, lambda xc, m=tm, y=y: m(xc, y), x.clone,
                        "fresh x.clone() per call, outside the timed region")
                if (name, mode) in pkg_cases:
                    pm, note = pkg_cases[(name, mode)]
                    add("mixup", name, mode, lambda _, m=pm, x=x, y=y: m(x, F.one_hot(y, NUM_CLASSES).float()),
                        note=note)
    return cases
