"""Seeded train/validation index splits that are identical on every machine and PyTorch version.

The permutation comes from Python's ``random.Random(seed).random()``, whose sequence for an int
seed Python guarantees not to change across versions (torch's ``randperm`` stream is not promised
to stay the same across releases). The global RNGs are neither read nor advanced.
"""

from __future__ import annotations

import math
import random

import torch

from .._checks import check_type


def split_indices(n: int, val_split: float, seed: int,
                  labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (train, val) index tensors, both int64 and sorted ascending.

    Args:
        n: number of samples.
        val_split: fraction in [0, 1) that goes to validation; ``0`` gives an empty val split.
            The val size is ``round(val_split * n)``.
        seed: int seed; the same seed gives the same split everywhere.
        labels: optional int tensor [n]; when given the split is stratified: each class gives
            ``val_split`` of its samples (largest-remainder rounding so the total is still
            ``round(val_split * n)``), and a class never goes entirely to validation.

    Raises:
        ValueError: ``val_split`` outside [0, 1), or a value that leaves train or a requested val
            split empty; ``labels`` of the wrong shape.

    Example:
        >>> train, val = split_indices(10, 0.2, seed=0)
        >>> len(train), len(val), sorted(train.tolist() + val.tolist()) == list(range(10))
        (8, 2, True)
    """
    check_type("n", n, int, "an int")
    if n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    check_type("val_split", val_split, (int, float), "a number in [0, 1)")
    if not (0.0 <= val_split < 1.0):  # also rejects NaN
        raise ValueError(f"val_split must be in [0, 1), got {val_split!r}")
    check_type("seed", seed, int, "an int")
    rng = random.Random(seed)
    keys = torch.tensor([rng.random() for _ in range(n)], dtype=torch.float64)
    perm = torch.argsort(keys, stable=True)
    n_val_total = math.floor(val_split * n + 0.5)
    if labels is None:
        val_mask = torch.zeros(n, dtype=torch.bool)
        val_mask[perm[:n_val_total]] = True
    else:
        val_mask = _stratified_mask(labels, n, val_split, n_val_total, perm)
    n_val = int(val_mask.sum())
    if val_split > 0 and n_val == 0:
        raise ValueError(f"val_split={val_split!r} gives an empty validation split for n={n} samples; "
                         "use val_split=0 for no validation or a larger value")
    if n_val == n:
        raise ValueError(f"val_split={val_split!r} leaves no training samples for n={n}")
    idx = torch.arange(n)
    return idx[~val_mask], idx[val_mask]


def _stratified_mask(labels: torch.Tensor, n: int, val_split: float, n_val_total: int,
                     perm: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor or None, got {type(labels).__name__}")
    if labels.shape != (n,) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor of shape [{n}] (n={n}), "
                         f"got {labels.dtype} of shape {list(labels.shape)}")
    labels = labels.detach().cpu().long()
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    # Quotas: floor(val_split * n_c), then the leftover seats go to the largest fractional parts
    # (ties by class order); a class keeps at least one training sample.
    exact = [val_split * int(c) for c in counts]
    quota = [math.floor(e) for e in exact]
    order = sorted(range(len(classes)), key=lambda c: (-(exact[c] - quota[c]), c))
    leftover = n_val_total - sum(quota)
    for c in order:
        if leftover <= 0:
            break
        if quota[c] + 1 <= int(counts[c]) - 1:
            quota[c] += 1
            leftover -= 1
    # Group the random permutation by class (stable: random order inside each class) and take
    # the first quota[c] of every class.
    grouped = perm[torch.argsort(inverse[perm], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(n) - starts[inverse[grouped]]
    take = pos < torch.tensor(quota, dtype=torch.int64)[inverse[grouped]]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[grouped[take]] = True
    return mask
