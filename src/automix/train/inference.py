"""Rebuild a trained run from its checkpoint, for ``automix eval`` and ``automix show``.

The checkpoint carries the resolved config, so the same model, method and validation split come
back without the original command line; ``overrides`` can point at another data dir or device. ``automix eval``
scores exactly the split it is asked for, and names its numbers by it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..data import dataset_splits
from . import checkpoint as ckpt
from .build import ModelEma, build_method, build_model, image_side
from .config import Config, from_dict, validate
from .distributed import check_device
from .engine import FORMAT, evaluate
from .loader import eval_batches
from .setup import (
    check_before_data,
    check_classes,
    data_classes,
    describe_eval,
    image_folders,
    load_data,
    require_split,
)


def config_of(state: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    if state.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {state.get('format')!r} is not {FORMAT!r}")
    # Without the conflict checks: a run from before them may hold an option it ignored; evaluating it is fine.
    return validate(from_dict({**state["config"], **(overrides or {})}, source="checkpoint config"), conflicts=False)


def load_trained(path: str, overrides: dict[str, Any] | None = None, device: str = "cpu"):
    """(cfg, eval data, eval indices, method, model_ema or None) restored from checkpoint ``path``: the images the
    run evaluated on (its ``eval_split``)."""
    path = str(ckpt.find(path))
    cfg, _, eval_data, eval_idx, method, model_ema = _restore(ckpt.load(path), overrides, device, path)
    return cfg, eval_data, eval_idx, method, model_ema


def _restore(state: dict[str, Any], overrides: dict[str, Any] | None, device: str, path: str = "checkpoint",
             split: str | None = None):
    """(cfg, train data, eval data, eval indices, method, model_ema or None) of a checkpoint's run.

    ``split`` ("val" / "test"): load that split as the eval data instead of the run's own ``eval_split`` (another
    ``data_dir`` need not have the run's). The data's classes must be the run's (``setup.check_classes``),
    checked before any image is decoded for an image folder.
    """
    cfg = config_of(state, overrides)
    given = (overrides or {}).get("data_dir")
    where = f"--data-dir {given}" if given else f"data_dir {cfg.data_dir}"
    listed = data_classes(cfg)
    if listed is not None:
        check_classes(state, path, listed, where)
    check_before_data(cfg)  # as a run does: the model and method before any image is decoded
    wanted = cfg if split is None else dataclasses.replace(cfg, eval_split=split)
    data, _, eval_data, eval_idx = load_data(wanted, strict=False)  # the run's config as it was, not re-checked
    check_classes(state, path, data.classes, where)
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
    return cfg, data, eval_data, eval_idx, method, model_ema


def check_split(cfg: Config, split: str, path: str) -> None:
    """Refuse ``--split`` ``split`` when the run of checkpoint ``path`` has no such images, saying what it has.

    ``val``: the run's validation images: the ones it evaluated on when it ran with ``eval_split val`` (a held-out
    share of its training images, or a ``val/`` folder), else a ``val/`` folder it did not train on. A run that
    held nothing out has none. ``test``: the dataset's test split. Advice names only a split that exists.

    Raises:
        ValueError: ``split`` is not "val" or "test", or the run's data has no such images (naming ``--split``).
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    folders = image_folders(cfg)
    has_test = "test" in dataset_splits(cfg.dataset, cfg.data_dir, download=cfg.download, cache_dir=cfg.cache_dir)
    has_val = "val" in folders or (cfg.eval_split == "val" and cfg.val_split > 0)
    if split == "test":
        other = "evaluate it on its validation images with --split val" if has_val else \
            "the run held no validation images out either (val_split 0)"
        require_split(cfg, "test", "--split test", other)
    elif not has_val:
        if cfg.eval_split == "test":
            why = "trained on every training image (eval_split 'test' holds none out)"
            if cfg.dataset == "imagefolder":
                why += " and its data_dir has no val/ folder"
        else:
            why = f"held no images out for validation (val_split {cfg.val_split})"
        if has_test:
            other = "evaluate it with --split test"
        elif cfg.dataset == "digits":
            other = "and the digits dataset has no held-out test split: there are no held-out images to evaluate it on"
        else:
            other = f"and {cfg.dataset} at {cfg.data_dir} has no test split either: there are no held-out images to " \
                    "evaluate it on"
        raise ValueError(f"--split val: the run of {path} {why}, so it has no validation images; {other}")


def evaluate_checkpoint(path: str, split: str = "val", data_dir: str | None = None,
                        device: str = "cpu", batch_size: int = 256) -> dict[str, Any]:
    """Top-1 of every network a checkpoint holds, on exactly the ``split`` asked for (``check_split``).

    ``"val"``: the run's validation images (the held-out share or ``val/`` folder it evaluated on; for a run
    trained with ``eval_split test``, a ``val/`` folder beside its ``train/``), read from ``data_dir`` when given
    (which need not hold the split the run evaluated on). ``"test"``: the dataset's test
    split, read at the training images' size. The keys name the split (``val_top1``, ``test_top1_online``, ...),
    and ``evaluates_on`` says which images and how many, as the run header does.

    Raises:
        ValueError: an unknown ``split``, or one the run's data does not have (the message says what it has);
            ``batch_size`` below 1; an unreadable checkpoint; a ``data_dir`` whose classes are not the run's
            (naming ``--data-dir``, the missing and extra class folders, or both class counts; a checkpoint from
            before class names were recorded is checked by its class count).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    overrides = {"data_dir": data_dir} if data_dir else {}
    path = str(ckpt.find(path))  # a run folder: its best.pt, else its last.pt
    dev = check_device(device, option="--device")
    state = ckpt.load(path)
    check_split(config_of(state, overrides), split, path)  # before any image is decoded
    # The split asked for is loaded as the eval data: the run's own eval_split may be missing from another
    # --data-dir, and a split other than the run's is a folder or set of its own (all of it evaluated).
    cfg, train, data, indices, method, model_ema = _restore(state, overrides, str(dev), path, split)
    # Named as in summary.csv (val_top1, val_top1_online, val_top1_ema; test_* for the test split).
    nets: dict[str, nn.Module] = {"": method.eval_model(), "_online": method.model}
    if model_ema is not None:
        nets["_ema"] = model_ema
    results: dict[str, Any] = {"checkpoint": str(path), "split": split,
                               "evaluates_on": describe_eval(dataclasses.replace(cfg, eval_split=split), train, data,
                                                             indices),
                               "images": len(indices), "method": cfg.method, "model": cfg.model,
                               "dataset": cfg.dataset}
    for suffix, net in nets.items():
        top1, loss = evaluate(net, eval_batches(data, indices, batch_size, dev, img_size=cfg.img_size), dev, None)
        results[f"{split}_top1{suffix}"] = top1
        results[f"{split}_loss{suffix}"] = loss
    results["config"] = dataclasses.asdict(cfg)
    return results
