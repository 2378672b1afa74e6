"""Regression with mixup: an MLP (10 inputs -> 1 output, MSE) trained with automix's mixup in its loop.

Usage:
    python examples/regression_mixup.py [--steps 400] [--alpha 0.4] [--lam 0.2] [--seed 0]

The data is synthetic (a smooth non-linear function of 10 inputs plus noise, 256 training points),
so it runs offline in seconds. It trains the same network four ways and prints the held-out MSE of
each: no mixing; mixup with lam ~ Beta(alpha, alpha); and the two settings of the write-up this project
started from, which mixes every pair with a given weight: a fixed lam (``auto_mixup(x, y, 0.2)``,
``create_mixer("mixup", lam=0.2)``) and lam = (1 - eps) / (2 (1 + eps)) with eps ~ U(0, 1), a lam in
[0, 1/2] (a callable ``lam=(shape, generator) -> tensor``; in a YAML config ``{eps: [0, 1]}``). Mixing
interpolates inputs *and* targets, which works for any target shape.

Measured here (CPU, default 400 steps), held-out MSE for seeds 0 / 1 / 2: no mixing 0.206 / 0.226 / 0.223,
mixup(alpha=0.4) 0.292 / 0.286 / 0.319, fixed lam=0.2 0.310 / 0.314 / 0.302, lam from eps 0.286 / 0.300 / 0.322.
Mixup *hurts* on this target, and that is the honest lesson of the example: for a non-linear
regression target the mix of two inputs does not have the mix of their targets as its target, so
plain mixup biases the fit toward straight lines between samples. It helps classifiers (where the
soft label is the intended target) far more reliably than regressors. The write-up's two settings do
no better: all three ways of drawing lam are within each other's seed spread, and all lose to no mixing.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from automix import create_mixer
from automix.losses import mixed_mse


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 10, generator=generator)
    y = torch.sin(x[:, :3].sum(1, keepdim=True)) + 0.5 * x[:, 3:4] * x[:, 4:5]
    return x, y + 0.1 * torch.randn(n, 1, generator=generator)


def writeup_lam(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """The write-up's lam = (1 - eps) / (2 (1 + eps)), eps ~ U(0, 1), drawn from the mixer's generator."""
    eps = torch.rand(shape, generator=generator)
    return 0.5 * (1.0 - eps) / (1.0 + eps)


def train(mix: dict | None, steps: int, seed: int) -> float:
    """Held-out MSE after ``steps`` steps, mixing with ``create_mixer("mixup", **mix)`` (None: no mixing)."""
    torch.manual_seed(seed)
    data_gen = torch.Generator().manual_seed(1234)
    x_train, y_train = make_data(256, data_gen)
    x_test, y_test = make_data(2048, data_gen)
    model = nn.Sequential(nn.Linear(10, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    mixer = None if mix is None else create_mixer("mixup", **mix)
    mix_gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 256, (64,))
        x, y = x_train[idx], y_train[idx]
        if mixer is not None:
            out = mixer(x, y, mix_gen)  # regression targets are mixed like the inputs
            x, y = out.x, out.y
        loss = mixed_mse(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(mixed_mse(model(x_test), y_test))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--alpha", type=float, default=0.4)
    parser.add_argument("--lam", type=float, default=0.2, help="the write-up's fixed lam")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = {"no mixing": None, f"mixup(alpha={args.alpha})": {"alpha": args.alpha},
                f"mixup(lam={args.lam})": {"lam": args.lam}, "mixup(lam from eps)": {"lam": writeup_lam}}
    print("held-out MSE")
    for name, mix in settings.items():
        print(f"  {name:<22} {train(mix, args.steps, args.seed):.4f}")


if __name__ == "__main__":
    main()
