"""A classifier trained in your own loop with an automix mixer (here CutMix / Mixup switching).

Usage:
    python examples/classifier_loop.py [--steps 60]

Synthetic 3x32x32 images (offline); the automix part is the few lines marked ``# automix``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import automix  # automix
from automix.losses import soft_target_cross_entropy  # automix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mixer = automix.create_mixer("mixup_cutmix", mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=10)  # automix
    for step in range(args.steps):
        x = torch.randn(32, 3, 32, 32)
        y = torch.randint(0, 10, (32,))
        x = x + y.view(-1, 1, 1, 1) * 0.1  # make the labels learnable
        out = mixer(x, y)  # automix: out.x mixed images, out.y soft targets, out.lam, out.index
        loss = soft_target_cross_entropy(model(out.x), out.y)  # automix
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
