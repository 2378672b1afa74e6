"""Run setup: seeds, the dataset and its train/val split, and the checks before a resume.

Kept apart from the engine so each piece can be tested alone.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch
from torch import Tensor

from ..data import ImageData, load_dataset, split_indices
from . import checkpoint as ckpt
from .config import Config

# Settings a checkpoint must share with the run that resumes it: the weights would not fit otherwise.
MUST_MATCH = ("model", "width", "widen", "method", "dataset")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (CPU and CUDA); optionally force deterministic kernels."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def load_data(cfg: Config) -> tuple[ImageData, Tensor, ImageData, Tensor]:
    """(train data, train indices, eval data, eval indices).

    With ``eval_split="val"`` a seeded share of the training images is held out (the same images on
    every machine and run with the same ``split_seed``); with ``"test"`` the dataset's test split is
    used and all training images train. ``subset`` then keeps a fixed random subset for training.
    """
    kwargs: dict[str, Any] = {"download": cfg.download, "cache_dir": cfg.cache_dir, "img_size": cfg.img_size}
    if cfg.skip_bad_images:
        kwargs["skip_bad_images"] = True
    data = load_dataset(cfg.dataset, cfg.data_dir, **kwargs)
    if len(data) == 0:
        raise ValueError(f"dataset {cfg.dataset!r} at {cfg.data_dir} holds no images")
    if cfg.eval_split == "test":
        eval_data = load_dataset(cfg.dataset, cfg.data_dir, split="test", **kwargs)
        train_idx, eval_idx = torch.arange(len(data)), torch.arange(len(eval_data))
    else:
        eval_data = data
        train_idx, eval_idx = split_indices(len(data), cfg.val_split, cfg.split_seed, data.labels)
    if cfg.subset is not None:
        if cfg.subset > len(train_idx):
            raise ValueError(f"subset must be at most the {len(train_idx)} training images, got {cfg.subset}")
        pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.split_seed + 1))
        train_idx = train_idx[pick[: cfg.subset]].sort().values
    return data, train_idx, eval_data, eval_idx


def resume_state(path: str, cfg: Config, num_classes: int) -> dict[str, Any]:
    """Load a checkpoint (a run folder: its last.pt) and refuse one from another model, class count, method
    or dataset."""
    path = str(ckpt.find(path, ("last.pt",)))
    state = ckpt.load(path)
    old = state.get("config", {})
    differ = [f"{k}: checkpoint {old.get(k)!r}, this run {getattr(cfg, k)!r}" for k in MUST_MATCH
              if old.get(k) != getattr(cfg, k)]
    if state.get("num_classes") != num_classes:
        differ.append(f"num_classes: checkpoint {state.get('num_classes')}, this run {num_classes}")
    if differ:
        raise ValueError(f"resume: checkpoint {path} does not match this run: " + "; ".join(differ))
    return state
