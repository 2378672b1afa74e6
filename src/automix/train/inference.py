"""Rebuild a trained run from its checkpoint, for ``automix eval`` and ``automix show``.

The checkpoint carries the resolved config, so the same model, method and validation split come
back without the original command line; ``overrides`` can point at another data dir or device.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..data import load_dataset
from . import checkpoint as ckpt
from .build import ModelEma, build_method, build_model, image_side
from .config import Config, from_dict, validate
from .distributed import check_device
from .engine import FORMAT, evaluate
from .loader import eval_batches
from .setup import load_data, load_eval_split


def config_of(state: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r} is not {FORMAT!r}")
    # Without the conflict checks: a run from before them may hold an option it ignored; evaluating it is fine.
    return validate(from_dict({**state["config"], **(overrides or {})}, source="checkpoint config"), conflicts=False)


def load_trained(path: str, overrides: dict[str, Any] | None = None, device: str = "cpu"):
    """(cfg, eval data, eval indices, method, model_ema or None) restored from checkpoint ``path``."""
    state = ckpt.load(ckpt.find(path))
    cfg = config_of(state, overrides)
    data, _, val_data, val_idx = load_data(cfg)
    in_chans = data.images.shape[1] if data.images is not None else 3
    model = build_model(cfg, state["num_classes"], in_chans, image_side(data, cfg))
    method = build_method(cfg, model, state["num_classes"], total_steps=1, seed=0)
    method.load_state_dict(state["method"])
    method.to(device).eval()
    model_ema = None
    if state.get("model_ema") is not None:
        model_ema = ModelEma(method.model, cfg.model_ema_decay)
        model_ema.load_state_dict(state["model_ema"])
        model_ema.to(device)
    return cfg, val_data, val_idx, method, model_ema


def evaluate_checkpoint(path: str, split: str = "val", data_dir: str | None = None,
                        device: str = "cpu", batch_size: int = 256) -> dict[str, Any]:
    """Top-1 of every network a checkpoint holds, on the run's validation split or a test split."""
    overrides = {"data_dir": data_dir} if data_dir else {}
    path = str(ckpt.find(path))  # a run folder: its best.pt, else its last.pt
    dev = check_device(device, option="--device")
    device = str(dev)
    cfg, data, val_idx, method, model_ema = load_trained(path, overrides, device)
    if split == "test":
        if cfg.eval_split != "test":  # the run evaluated on val: read its test split as it reads its train split
            train = load_dataset(cfg.dataset, cfg.data_dir, cache_dir=cfg.cache_dir, img_size=cfg.img_size)
            data = load_eval_split(cfg, "test", train)
        indices = torch.arange(len(data))
    elif split == "val":
        indices = val_idx
        if not len(indices):
            raise ValueError(f"split: the run of {path} has no validation images (val_split {cfg.val_split}); "
                             "evaluate it with --split test")
    else:
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    # Named as in summary.csv (val_top1, val_top1_online, val_top1_ema; test_* for the test split).
    nets: dict[str, nn.Module] = {"": method.eval_model(), "_online": method.model}
    if model_ema is not None:
        nets["_ema"] = model_ema
    results: dict[str, Any] = {"checkpoint": str(path), "split": split, "images": len(indices),
                               "method": cfg.method, "model": cfg.model, "dataset": cfg.dataset}
    for suffix, net in nets.items():
        top1, loss = evaluate(net, eval_batches(data, indices, batch_size, dev, img_size=cfg.img_size), dev, None)
        results[f"{split}_top1{suffix}"] = top1
        results[f"{split}_loss{suffix}"] = loss
    results["config"] = dataclasses.asdict(cfg)
    return results
