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
  included it, about 1.5%).

Nothing is written; paste the table with this command above it. Checkpoints are not committed; they are
re-created by the run's ``automix bench`` / ``automix train`` command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

try:
    import automix  # noqa: F401
except ImportError:  # run without PYTHONPATH=src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from automix.methods.mixblock import whole_image_share  # noqa: E402
from automix.train.inference import load_trained  # noqa: E402
from automix.train.loader import eval_batches  # noqa: E402


def mask_stats(path: str, images: int, passes: int, seed: int) -> dict[str, float]:
    ckpt = Path(path) / "last.pt" if Path(path).is_dir() else Path(path)
    cfg, data, idx, method, _ = load_trained(str(ckpt))
    if not hasattr(method, "mix_block"):
        raise ValueError(f"{path}: method {cfg.method!r} has no Mix Block (only AutoMix / SAMix runs)")
    method.train()  # as in training: the EMA encoder's features come from train-mode BN
    method.generator.manual_seed(seed)
    std = gap = whole = n = 0.0
    with torch.no_grad():
        for _ in range(passes):
            for x, y in eval_batches(data, idx[:images], 100, torch.device("cpu"), img_size=cfg.img_size):
                method.compute_losses(x, y)
                mask = method.last_mix["mask_mb"].flatten(1)
                mean = mask.mean(1)
                std += float(mask.std(1).sum())
                gap += float((mean - (1.0 - method.last_mix["lam_mb"])).abs().sum())
                whole += float(whole_image_share(mask, lam=method.last_mix["lam_mb"])) * x.shape[0]
                n += x.shape[0]
    return {"std": std / n, "gap": gap / n, "whole": whole / n, "n": int(n)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run dirs (their last.pt) or checkpoint files")
    p.add_argument("--images", type=int, default=1000, help="validation images to mix (default 1000)")
    p.add_argument("--passes", type=int, default=5, help="passes over the images with fresh draws (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the lam / pairing draws")
    args = p.parse_args(argv)
    if args.images < 2 or args.passes < 1:
        raise SystemExit(f"--images must be >= 2 and --passes >= 1, got {args.images} and {args.passes}")
    print("| run | samples mixed | mask spatial std | mean abs(mask mean - (1 - lam)) | whole-image choices |")
    print("|---|---:|---:|---:|---:|")
    for run in args.runs:
        s = mask_stats(run, args.images, args.passes, args.seed)
        print(f"| {run} | {s['n']} | {s['std']:.3f} | {s['gap']:.3f} | {100 * s['whole']:.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
