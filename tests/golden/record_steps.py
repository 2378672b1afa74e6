"""Record (or recompute) the golden training steps that guard refactors of the methods.

Usage, from the repository root::

    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/golden/record_steps.py          # rewrite steps.txt
    OMP_NUM_THREADS=1 PYTHONPATH=src python tests/golden/record_steps.py --check  # compare, exit 1 on a change

What it records: for each case in ``CASES`` (AutoMix, AutoMix with the reference's settings, SAMix, mixup,
cutmix; AdAutoMix with 3 images and with 2), the first ``STEPS`` optimiser steps on a fixed tiny network,
batch and seed, on the CPU with one thread: the loss and every logged term of each step, then the sum of the
evaluated network's weights after the last step (which covers the EMA encoder). Every number is written as the
float64 ``repr`` of its value, so equality of the text is equality of the bits. ``tests/test_golden.py``
recomputes the steps and compares them with ``steps.txt`` line by line.

A refactor must leave the file unchanged. A deliberate change of behaviour re-records it with this script,
and the commit says which numbers changed and why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import automix

GOLDEN = Path(__file__).with_name("steps.txt")
STEPS = 20
# name -> (method name, options): the four methods the refactor must keep, plus the reference's AutoMix (free
# mask, fixed momenta), whose mask loss and lam_margin fallback the fitted default does not exercise.
CASES = {
    "automix": ("automix", {}),
    "automix_reference": ("automix", {"reference": True}),
    "samix": ("samix", {}),
    "mixup": ("mixup", {}),
    "cutmix": ("cutmix", {}),
    # AdAutoMix with upstream's CIFAR settings (3 images), and its ImageNet generator (2 images, lam channel, BN on
    # query and key, beta 0.1); fan-in init so that its masks vary from the first step.
    "adautomix": ("adautomix", {}),
    "adautomix_k2": ("adautomix", {"mix_samples": 2, "lam_concat": True, "att_norm": True, "beta_radio": 0.1,
                                   "init_std": None}),
}


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of 8 images 3x32x32 with 4 classes; a class signal in channel 0 so the loss moves."""
    gen = torch.Generator().manual_seed(1000 + step)
    y = torch.randint(0, 4, (8,), generator=gen)
    x = torch.randn(8, 3, 32, 32, generator=gen) * 0.5
    x[:, 0] += y.view(-1, 1, 1).float() - 1.5
    return x, y


def run_case(case: str) -> list[str]:
    """The golden lines of one case: ``case step key value`` per logged term, then the weight sum."""
    name, options = CASES[case]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions split over threads may round differently
    try:
        torch.manual_seed(0)
        model = automix.create_model("preact_resnet18", num_classes=4, width=4)
        method = automix.create_method(name, model, num_classes=4, total_steps=STEPS, seed=0, **options)
        opt = torch.optim.SGD(method.param_groups(), lr=0.05, momentum=0.9)
        lines = []
        for step in range(STEPS):
            x, y = batch(step)
            loss, logs = method.training_step(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            method.after_step()
            for key in sorted(logs):
                lines.append(f"{case} {step} {key} {float(logs[key])!r}")
        total = sum(float(p.detach().double().sum()) for p in method.eval_model().parameters())
        lines.append(f"{case} end eval_param_sum {total!r}")
        return lines
    finally:
        torch.set_num_threads(threads)


def record() -> list[str]:
    return [line for case in CASES for line in run_case(case)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the golden file instead of writing it")
    args = parser.parse_args(argv)
    lines = record()
    if args.check:
        old = GOLDEN.read_text().splitlines()
        changed = [(a, b) for a, b in zip(old, lines) if a != b]
        for a, b in changed[:20]:
            print(f"- {a}\n+ {b}")
        if changed or len(old) != len(lines):
            print(f"{len(changed)} lines differ; {len(old)} golden lines, {len(lines)} now")
            return 1
        print(f"{len(lines)} lines match {GOLDEN}")
        return 0
    GOLDEN.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
