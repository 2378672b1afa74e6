"""Run setup: seeds, the dataset and its train/val split, and the checks before a resume.

Kept apart from the engine so each piece can be tested alone.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch
from torch import Tensor

from ..data import ImageData, load_dataset, split_folders, split_indices
from ..data.base import as_path
from ..data.lazy import DEFAULT_SIZE
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

    With ``eval_split="val"`` the images are evaluated on a ``val/`` folder when an image folder
    ``data_dir`` has one beside ``train/`` (all of ``train/`` trains), else a seeded share of the training
    images is held out (the same images on every machine and run with the same ``split_seed``); with
    ``"test"`` the dataset's test split (an image folder's ``test/``) is used and all training images train.
    ``subset`` then keeps a fixed random subset for training. Errors name the flags to change.
    """
    kwargs = _load_kwargs(cfg)
    data = load_dataset(cfg.dataset, cfg.data_dir, **kwargs)
    if len(data) == 0:
        raise ValueError(f"dataset {cfg.dataset!r} at {cfg.data_dir} holds no images")
    folders = _image_folders(cfg)
    if cfg.eval_split == "test" or "val" in folders:
        eval_data = load_eval_split(cfg, cfg.eval_split, data)
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


def _load_kwargs(cfg: Config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"download": cfg.download, "cache_dir": cfg.cache_dir, "img_size": cfg.img_size}
    if cfg.skip_bad_images:
        kwargs["skip_bad_images"] = True
    return kwargs


def _image_folders(cfg: Config) -> dict[str, str]:
    """The split folders of an ``imagefolder`` data_dir (``data.split_folders``); {} for other datasets."""
    if cfg.dataset != "imagefolder" or cfg.data_dir is None:
        return {}
    return split_folders(as_path("data_dir", cfg.data_dir))


def load_eval_split(cfg: Config, split: str, train: ImageData) -> ImageData:
    """The ``split`` ("val" or "test") folder or set of ``cfg``'s dataset, read like ``train``.

    For an image folder the split must be a folder beside ``train/`` with the same class folders, and it is
    decoded at the training images' size (in memory at their side, or lazily when they are lazy), so the
    network is evaluated at the resolution it trains at.

    Raises:
        ValueError: naming ``--eval-split`` / ``--val-split`` / ``--data-dir`` when the layout has no such
            split, when ``--val-split`` is given but a ``val/`` folder is used instead, or when the class
            folders differ (naming the missing and extra ones).
    """
    kwargs = _load_kwargs(cfg)
    folders = _image_folders(cfg)
    if folders:
        root = as_path("data_dir", cfg.data_dir)
        if split not in folders:
            if folders["train"] == root:
                raise ValueError(f"eval_split {split!r}: data_dir {root} holds class folders, one set with no "
                                 f"{split}/ folder; evaluate on a share of it held out by --val-split with "
                                 f"--eval-split val, or arrange {root}/train/<class> beside {root}/{split}/<class>")
            have = ", ".join(f + "/" for f in folders)
            other = " (give --eval-split val)" if "val" in folders else ""
            raise ValueError(f"eval_split {split!r}: data_dir {root} has no {split}/ folder (it has {have}){other}")
        if split == "val" and cfg.val_split != Config.val_split:
            raise ValueError(f"val_split {cfg.val_split!r}: data_dir {root} has a val/ folder, which --eval-split "
                             f"val evaluates on (nothing is held out of train/); drop --val-split, or give "
                             f"--data-dir {folders['train']} to hold a share of train/ out instead")
        # The eval images at the training images' size: in memory at their side, or lazily at the crop size.
        if cfg.img_size is None:
            kwargs["img_size"] = train.images.shape[-1] if train.images is not None else DEFAULT_SIZE
        kwargs["classes"] = train.classes
    data = load_dataset(cfg.dataset, cfg.data_dir, split=split, **kwargs)
    if len(data) == 0:
        raise ValueError(f"eval_split {split!r}: the {split} split of {cfg.data_dir} holds no images")
    return data


def describe_eval(cfg: Config, data: ImageData, eval_data: ImageData, eval_idx: Tensor) -> str:
    """What a run evaluates on, for its header: the folder or split, and how many images.

    Example:
        >>> import torch
        >>> d = ImageData(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"],
        ...               (0.5,), (0.2,), root="/data/pets/train")
        >>> describe_eval(Config(dataset="imagefolder"), d, d, torch.tensor([3]))
        '1 image held out of /data/pets/train (val_split 0.2, split_seed 0)'
    """
    n = f"{len(eval_idx)} image{'' if len(eval_idx) == 1 else 's'}"
    if eval_data is data:
        where = data.root or f"the {cfg.dataset} training images"
        return f"{n} held out of {where} (val_split {cfg.val_split}, split_seed {cfg.split_seed})"
    where = eval_data.root or f"the {cfg.dataset} {cfg.eval_split} split"
    return f"{where} ({n})"


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
