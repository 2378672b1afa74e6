"""Per-step learning-rate schedule: linear warm-up, then cosine down to each group's ``min_lr``.

Each optimiser group carries ``base_lr`` and ``min_lr`` (the Mix Block group has its own), so one
schedule serves every group. The state is just the step, stored in checkpoints.
"""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                 warmup_lr: float = 0.0, cosine: bool = True) -> None:
        self.optimizer = optimizer
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.warmup_lr = warmup_lr
        self.cosine = cosine
        self.step_num = 0
        self._apply()

    def lr_at(self, step: int, base: float, low: float) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (base - self.warmup_lr) * step / self.warmup_steps
        if not self.cosine:
            return base
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min(step - self.warmup_steps, span) / span
        return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * t))

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step_num, group["base_lr"], group["min_lr"])

    def step(self) -> None:
        self.step_num += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"step_num": self.step_num}

    def load_state_dict(self, state: dict) -> None:
        self.step_num = int(state["step_num"])
        self._apply()
