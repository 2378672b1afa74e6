"""What the Mix Block of trained AutoMix / SAMix runs does: mask statistics on held-out images.

A diagnostic, not a test. Exact command (from the repository root), for any run dirs or checkpoints:

    PYTHONPATH=src python benchmarks/mask_stats.py benchmarks/results/accuracy/cifar10-cpu/automix/seed0 ...

For each checkpoint (``last.pt`` of a run dir) it runs the method's own training computation
(``compute_losses``: EMA encoder features, the Mix Block, the mixing) without gradients on the first
``--images`` images of the run's validation split, in batches of 100, ``--passes`` times with fresh draws (lam,
pairing; seeded by ``--seed``), so the averages cover many lam, and prints one markdown row per run:

* spatial std: the std of a sample's mask over its pixels, averaged over samples (0 = the same weight
  everywhere, i.e. a mixup-like or whole-image mask; about 0.5 = a sharp cut);
* |mean - (1 - lam)|: how far a sample's mask mean (the partner's share of the pixels) is from the share
  its label gives the partner, averaged over samples (0 = pixels and labels agree);
* whole-image choices: the share of samples whose mask mean is below 0.05 or above 0.95, i.e. that show
  one of the two images almost alone while the label mixes them (a sample whose lam is itself below 0.05
  or above 0.95 is not counted: its mask agrees with its label; the count used before the fitted mask
  included it, about 1.5%);
* the sharpness floor's scale k (``mixblock.fit_sharp_mask``, AutoMix's default): the median over the Mix
  Block's own masks, and the share of maps at the cap (``sharpness_scale``'s ``max_scale``), whose logits are
  so nearly tied that the floor is reached by amplifying differences of 1e-4 of their spread ("–" for a
  run without the floor).

Nothing is written; paste the table with this command above it. Checkpoints are not committed; they are
re-created by the run's ``automix bench`` / ``automix train`` command.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import torch

try:
    import automix  # noqa: F401
except ImportError:  # run without PYTHONPATH=src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from automix.methods.mixblock import sharpness_scale, whole_image_share  # noqa: E402

MAX_SCALE = inspect.signature(sharpness_scale).parameters["max_scale"].default
from automix.train.inference import load_trained  # noqa: E402
from automix.train.loader import eval_batches  # noqa: E402


def mask_stats(path: str, images: int, passes: int, seed: int) -> dict[str, float]:
    ckpt = Path(path) / "last.pt" if Path(path).is_dir() else Path(path)
    cfg, data, idx, method, _ = load_trained(str(ckpt))
    if not hasattr(method, "mix_block") or cfg.method not in ("automix", "samix"):
        what = "K-way masks (its summary.csv has their statistics)" if cfg.method == "adautomix" else "no Mix Block"
        raise ValueError(f"{path}: method {cfg.method!r} has {what} (only AutoMix / SAMix runs)")
    method.train()  # as in training: the EMA encoder's features come from train-mode BN
    method.generator.manual_seed(seed)
    std = gap = whole = n = 0.0
    calls: list[torch.Tensor | None] = []  # the sharpness floor's k of each Mix Block call
    method.mix_block.register_forward_hook(lambda block, args, out: calls.append(getattr(block, "last_scale", None)))
    scales: list[torch.Tensor] = []
    with torch.no_grad():
        for _ in range(passes):
            for x, y in eval_batches(data, idx[:images], 100, torch.device("cpu"), img_size=cfg.img_size):
                calls.clear()
                method.compute_losses(x, y)
                if calls and calls[0] is not None:  # the first call makes the Mix Block's own mask (mask_mb)
                    scales.append(calls[0])
                mask = method.last_mix["mask_mb"].flatten(1)
                mean = mask.mean(1)
                std += float(mask.std(1).sum())
                gap += float((mean - (1.0 - method.last_mix["lam_mb"])).abs().sum())
                whole += float(whole_image_share(mask, lam=method.last_mix["lam_mb"])) * x.shape[0]
                n += x.shape[0]
    k = torch.cat(scales) if scales else None
    return {"std": std / n, "gap": gap / n, "whole": whole / n, "n": int(n),
            "k": float(k.median()) if k is not None else float("nan"),
            "capped": float((k >= MAX_SCALE * 0.999).float().mean()) if k is not None else float("nan")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run dirs (their last.pt) or checkpoint files")
    p.add_argument("--images", type=int, default=1000, help="validation images to mix (default 1000)")
    p.add_argument("--passes", type=int, default=5, help="passes over the images with fresh draws (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the lam / pairing draws")
    args = p.parse_args(argv)
    if args.images < 2 or args.passes < 1:
        raise SystemExit(f"--images must be >= 2 and --passes >= 1, got {args.images} and {args.passes}")
    print("| run | samples mixed | mask spatial std | mean abs(mask mean - (1 - lam)) | whole-image choices "
          "| floor's scale k, median | maps at the scale cap |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        s = mask_stats(run, args.images, args.passes, args.seed)
        k = "–" if s["k"] != s["k"] else f"{s['k']:.3g}"
        capped = "–" if s["capped"] != s["capped"] else f"{100 * s['capped']:.0f}%"
        print(f"| {run} | {s['n']} | {s['std']:.3f} | {s['gap']:.3f} | {100 * s['whole']:.0f}% | {k} | {capped} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
