"""Run setup: seeds, the dataset and its train/val split, and the config of a resumed run.

Kept apart from the engine so each piece can be tested alone.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any

import torch
from torch import Tensor

from ..data import ImageData, dataset_splits, load_dataset, native_size, split_folders, split_indices
from ..data.base import as_path
from ..data.digits import DEFAULT_SIZE as DIGITS_SIZE
from ..data.folder import class_mismatch
from ..data.lazy import DEFAULT_SIZE
from .build import check_model_and_method
from .config import (
    COMMAND_LINE,
    Config,
    flag_name,
    from_dict,
    given_keys,
    option_name,
    set_sources,
    setting,
    validate,
)


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


def load_data(cfg: Config, strict: bool = True) -> tuple[ImageData, Tensor, ImageData, Tensor]:
    """(train data, train indices, eval data, eval indices).

    With ``eval_split="val"`` the images are evaluated on a ``val/`` folder when an image folder
    ``data_dir`` has one beside ``train/`` (all of ``train/`` trains), else a seeded share of the training
    images is held out (the same images on every machine and run with the same ``split_seed``); with
    ``"test"`` the dataset's test split (an image folder's ``test/``) is used and all training images train.
    ``subset`` then keeps a fixed random subset for training. Errors name the flags to change (and the config
    file an option came from).

    CIFAR and Tiny-ImageNet come back at their native size (32 / 64 px, ``data.native_size``) whatever
    ``img_size``: ``train.loader`` resizes each batch to ``img_size`` (``batch_side``); other in-memory sets are
    decoded at ``img_size``.

    ``strict`` (training) also refuses a given ``val_split`` or ``split_seed`` that this layout leaves unused
    (``check_split_options``); ``automix eval`` and ``show`` read a finished run's config as it was.

    Raises:
        ValueError: the dataset has no such split (``require_split``), an unused split option, no images, a given
            ``pad`` for images loaded lazily (``strict`` only: they take RandomResizedCrop, which has no padding).
    """
    folders = image_folders(cfg)
    if strict:
        check_split_options(cfg, folders)
    if cfg.eval_split != "val":
        require_split(cfg, cfg.eval_split, setting(cfg, "eval_split"), _eval_split_advice(cfg, folders))
    kwargs = _load_kwargs(cfg)
    data = load_dataset(cfg.dataset, cfg.data_dir, **kwargs)
    if len(data) == 0:
        raise ValueError(f"dataset {cfg.dataset!r} at {cfg.data_dir} holds no images")
    if strict and data.images is None and cfg.pad != 0 and "pad" in given_keys(cfg):
        # large images are loaded lazily with RandomResizedCrop, which has no padding: a given pad would be ignored
        raise ValueError(f"{setting(cfg, 'pad')} pad-crops in-memory images (img_size <= 96); these images "
                         f"(img_size {cfg.img_size}) are loaded lazily with RandomResizedCrop, which takes no padding; "
                         f"drop {option_name(cfg, 'pad')}")
    if not holds_out(cfg, folders):
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


def data_shape(cfg: Config) -> tuple[int, int, int] | None:
    """(classes, channels, side) of the batches a run of ``cfg`` trains on, found without reading an image: CIFAR
    (10 / 100 classes, 3 channels, ``img_size`` else 32), digits (10, 1, ``img_size`` else 16), Tiny-ImageNet (its
    ``wnids.txt`` or class folders, 3, ``img_size`` else 64), an image folder given an ``img_size`` (its class
    folders, 3, ``img_size``). None where only the images tell (an image folder without ``img_size``, whose side is
    its images'), or where the data is missing (``load_data`` reports that)."""
    side = cfg.img_size
    if cfg.dataset in ("cifar10", "cifar100"):
        return (10 if cfg.dataset == "cifar10" else 100), 3, side or native_size(cfg.dataset)
    if cfg.dataset == "digits":
        return 10, 1, side or DIGITS_SIZE
    if cfg.dataset == "tiny-imagenet" and cfg.data_dir is not None:
        root = as_path("data_dir", cfg.data_dir)
        wnids, train = os.path.join(root, "wnids.txt"), os.path.join(root, "train")
        if os.path.isfile(wnids):
            with open(wnids) as f:
                classes = {line.strip() for line in f if line.strip()}
        elif os.path.isdir(train):
            classes = {e.name for e in os.scandir(train) if e.is_dir()}
        else:
            return None
        return (len(classes), 3, side or native_size(cfg.dataset)) if classes else None
    if cfg.dataset == "imagefolder" and side is not None:
        classes = data_classes(cfg) if cfg.data_dir is not None and os.path.isdir(cfg.data_dir) else None
        return (len(classes), 3, side) if classes else None
    return None


def check_before_data(cfg: Config) -> None:
    """Check what ``cfg``'s arguments alone decide, before any image is read or cached: the model and its options
    against the image side (a ViT's ``patch_size`` must tile ``img_size``), the method's options against the model,
    the batch size and the image side (``build.check_model_and_method``, on the meta device, in a fraction of a
    second). Skipped where the data's shape needs the images (``data_shape`` is None); the run checks the same
    when it builds them.

    Raises:
        ValueError / TypeError: the message the run itself would raise, naming the flag or option.
    """
    shape = data_shape(cfg)
    if shape is not None:
        check_model_and_method(cfg, *shape)


def holds_out(cfg: Config, folders: dict[str, str] | None = None) -> bool:
    """Whether ``cfg``'s run evaluates on a share held out of its training images (``val_split``, seeded by
    ``split_seed``) rather than on a split of its own (a ``val/`` folder, or ``eval_split="test"``)."""
    folders = image_folders(cfg) if folders is None else folders
    return cfg.eval_split == "val" and "val" not in folders


def check_split_options(cfg: Config, folders: dict[str, str] | None = None) -> None:
    """Refuse ``val_split`` / ``split_seed`` given for a run that holds nothing out of its training images.

    With a ``val/`` folder (or ``eval_split="test"``) the run evaluates on a split of its own, so a share to hold
    out (``val_split`` above 0) and the seed of that split (``split_seed``, unless ``subset`` uses it) would be
    recorded in args.yaml but do nothing. ``val_split: 0`` (hold nothing out, as the fine-grained recipes say) is
    what happens anyway, so it is accepted. An option counts as given when it is a flag, or set to another value
    than its default in a config file: a whole config written out (an ``args.yaml``, ``automix bench``'s
    ``bench.yaml``) lists the defaults too. The error names the option and where it was given (flag or config file).

    Raises:
        ValueError: naming the option, its value and source, and what to do instead.
    """
    folders = image_folders(cfg) if folders is None else folders
    if holds_out(cfg, folders):
        return
    given = given_keys(cfg)
    if "val" in folders and cfg.eval_split == "val":
        where = (f"data_dir {cfg.data_dir} has a val/ folder, which eval_split 'val' evaluates on (nothing is held "
                 "out of train/)")
        instead = f", or give --data-dir {folders['train']} to hold a share of train/ out instead"
    else:
        where = f"eval_split 'test' evaluates on the {cfg.dataset} test split and trains on every training image"
        instead = ""
    default = Config()

    def chosen(key: str) -> bool:
        return given.get(key) == COMMAND_LINE or (key in given and getattr(cfg, key) != getattr(default, key))

    if chosen("val_split") and cfg.val_split > 0:
        raise ValueError(f"{setting(cfg, 'val_split')}: {where}; {_drop(cfg, 'val_split', given)}{instead}")
    if chosen("split_seed") and cfg.subset is None:
        raise ValueError(f"{setting(cfg, 'split_seed')} is not used: {where}, so there is no split to seed; "
                         f"{_drop(cfg, 'split_seed', given)}{instead}")


def _drop(cfg: Config, key: str, given: dict[str, str]) -> str:
    """How to stop giving option ``key``, by where it was given."""
    source = given.get(key, "")
    if source.startswith("config file "):
        return f"remove {key} from {source[len('config file '):]}"
    return f"drop {flag_name(key)}" if source == COMMAND_LINE else f"leave {key} at its default"


def _load_kwargs(cfg: Config) -> dict[str, Any]:
    # A set of a fixed native size (CIFAR, Tiny-ImageNet) stays at it in memory: the loader resizes each batch to
    # img_size on the device (train.loader), where a set resized at load would take N x 3 x img_size^2 bytes.
    size = None if native_size(cfg.dataset) is not None else cfg.img_size
    kwargs: dict[str, Any] = {"download": cfg.download, "cache_dir": cfg.cache_dir, "img_size": size}
    if cfg.skip_bad_images:
        kwargs["skip_bad_images"] = True
    return kwargs


def image_folders(cfg: Config) -> dict[str, str]:
    """The split folders of an ``imagefolder`` data_dir (``data.split_folders``); {} for other datasets."""
    if cfg.dataset != "imagefolder" or cfg.data_dir is None:
        return {}
    return split_folders(as_path("data_dir", cfg.data_dir))


def _eval_split_advice(cfg: Config, folders: dict[str, str]) -> str:
    """What to evaluate on instead of a missing test split, in ``automix train``'s flags."""
    if "val" in folders:
        return f"give --eval-split val to evaluate on {folders['val']}"
    text = "evaluate on a share held out of the training images with --eval-split val (--val-split sets the share)"
    if folders and folders["train"] == as_path("data_dir", cfg.data_dir):
        root = folders["train"]
        text += f", or arrange {root}/train/<class> beside {root}/test/<class>"
    return text


def require_split(cfg: Config, split: str, asked: str, advice: str) -> None:
    """Raise a ``ValueError`` when ``cfg``'s dataset has no ``split`` of its own (``data.dataset_splits``).

    ``asked`` names the option that asked for it (``"--eval-split test"``, ``"--split test"``, with its config
    file when it came from one); ``advice`` says what to do instead. Nothing is decoded.

    Raises:
        ValueError: ``"{asked}: {what the data has}; {advice}"``.
    """
    splits = dataset_splits(cfg.dataset, cfg.data_dir, download=cfg.download, cache_dir=cfg.cache_dir)
    if split in splits:
        return
    if cfg.dataset == "digits":
        what = f"the digits dataset has no held-out {split} split (its 1,797 images are one set)"
    elif cfg.dataset == "imagefolder":
        root = as_path("data_dir", cfg.data_dir)
        if splits == ("train",):
            what = f"data_dir {root} holds class folders, one set with no {split}/ folder"
        else:
            what = f"data_dir {root} has no {split}/ folder (it has {', '.join(f + '/' for f in splits)})"
    elif cfg.dataset in ("cifar10", "cifar100"):
        what = f"data_dir {cfg.data_dir} is one image folder of the {cfg.dataset} training images, with no {split} " \
               f"split (give the pickle release, or a folder holding train/ and {split}/)"
    else:
        what = f"dataset {cfg.dataset!r} has no {split} split"
    raise ValueError(f"{asked}: {what}; {advice}")


def load_eval_split(cfg: Config, split: str, train: ImageData) -> ImageData:
    """The ``split`` ("val" or "test") folder or set of ``cfg``'s dataset, read like ``train``.

    For an image folder the split must be a folder beside ``train/`` with the same class folders, and it is
    decoded at the training images' size (in memory at their side, or lazily when they are lazy), so the
    network is evaluated at the resolution it trains at. Check first that the dataset has the split
    (``require_split``, whose message names the flag that asked for it); this raises the loader's error.

    Raises:
        ValueError: the class folders differ (naming the missing and extra ones), or the split is empty.
    """
    kwargs = _load_kwargs(cfg)
    if image_folders(cfg):
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


# Options a resumed run may change: how it runs, not what it computes. They are applied and recorded (args.yaml,
# and the checkpoint's "resumes" list). epochs is one of them: the run goes on to the new count, and every per-step
# schedule (the learning rate, the EMA momenta, the method's own) spans the new length from there, as timm's do.
RESUME_MAY_CHANGE = ("epochs", "eval_batch_size", "eval_interval", "checkpoint_interval", "log_interval",
                     "save_images", "tensorboard", "progress", "on_nan", "device", "threads", "dist_timeout",
                     "sync_debug", "download", "cache_dir", "workers", "compile", "channels_last", "deterministic")
# Options of what the run does from an epoch on: they may change when the run has not reached that epoch yet, so
# args.yaml stays true of every epoch already trained.
RESUME_FROM_HERE = ("mixup_off_epoch",)
# This invocation's own: where it writes and what it continues, never taken from the checkpoint.
RESUME_OWN = ("output", "resume")
_PATHS = ("data_dir", "initial_checkpoint", "cache_dir")


# What an unset (None) option means, for messages that show the run's value: "None" says nothing.
UNSET_MEANS = {"alpha": "the method's default", "mixup_lam": "lambda drawn from Beta(alpha, alpha)",
               "img_size": "the dataset's own size", "data_dir": "none", "initial_checkpoint": "none",
               "width": "the model's default", "widen": "the model's default", "subset": "all training images",
               "cutmix_minmax": "unset", "mixup": "unset (not used)", "cutmix": "unset (not used)",
               "mixup_switch_prob": "unset (not used)", "clip_grad": "no clipping", "mix_block_lr": "--lr",
               "mix_block_min_lr": "--min-lr", "mix_block_momentum": "--momentum", "amp": "off",
               "model_ema_end_decay": "a constant decay"}


def shown(key: str, value: Any) -> str:
    """Option ``key``'s ``value`` as a message shows a run's value: ``'mixup'``, or for None what it means.

    Example:
        >>> shown("alpha", None), shown("alpha", 0.5)
        ("the method's default", '0.5')
    """
    if value is None:
        return UNSET_MEANS.get(key, "unset")
    return repr(value)


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key in _PATHS and a is not None and b is not None:  # one folder, written two ways
        return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))
    return False


def resume_config(cfg: Config, state: dict[str, Any], path: str) -> tuple[Config, list[str]]:
    """The config a run resumed from checkpoint ``state`` (read from ``path``) continues with, and what changed.

    Every option not given (``config.given_keys``: no flag and not in the ``--config`` file) is the run's own, as
    its args.yaml says: a fine-tuning run started with ``--head-lr-scale 10`` resumes with it. An option given
    with the run's value is fine; one given with another value is applied and recorded when it only says how the
    run runs (``RESUME_MAY_CHANGE``: ``--epochs``, ``--device``, ``--workers``, ...) or what it does from an epoch
    it has not started (``--mixup-off-epoch``, when the epochs done mix as the new value says), and refused
    otherwise: the data, the model and its starting weights, the method, the optimiser and its schedule, the batch
    size and seed define what the checkpoint is the middle of, and a resumed run that took another value would
    write it to args.yaml without having run it. ``output`` and ``resume`` are this invocation's.

    Returns:
        (the config, ``["epochs 1 -> 3", ...]`` for the options changed).

    Raises:
        ValueError: naming each refused option (flag or config file), the run's value and the given one; or
            ``--epochs`` below the epochs the run has already finished.
    """
    names = [f.name for f in dataclasses.fields(Config)]
    stored = state.get("config")
    if not isinstance(stored, dict):
        raise ValueError(f"resume: checkpoint {path} holds no config of its run")
    try:  # options a later version dropped are left out; ones it added keep their defaults
        old = validate(from_dict({k: v for k, v in stored.items() if k in names},
                                 source=f"the config in checkpoint {path}"), conflicts=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"resume: checkpoint {path}: {exc}") from None
    given = given_keys(cfg)
    started = int(state.get("epoch", 0)) + (1 if state.get("step_in_epoch", 0) else 0)  # epochs trained, in part too
    values: dict[str, Any] = {}
    refused: list[str] = []
    changed: list[str] = []
    for key in names:
        mine, theirs = getattr(cfg, key), getattr(old, key)
        if key in RESUME_OWN or (key in given and _same(key, mine, theirs)):
            values[key] = mine
        elif key not in given:
            values[key] = theirs
        elif key in RESUME_MAY_CHANGE or (key in RESUME_FROM_HERE and _mixes(mine, started) == _mixes(theirs, started)):
            values[key] = mine
            changed.append(f"{key} {theirs!r} -> {mine!r}")
        elif key in RESUME_FROM_HERE:
            refused.append(f"{setting(cfg, key)} (the run's: {shown(key, theirs)}, which the {started} epoch(s) it "
                           "has trained followed)")
        else:
            refused.append(f"{setting(cfg, key)} (the run's: {shown(key, theirs)})")
    if refused:
        raise ValueError(f"resume: {path} continues a run with its own settings, and these differ from them: "
                         f"{'; '.join(refused)}. Drop them to continue the run as it was, or start a new run "
                         "(another --output)")
    new = Config(**values)
    set_sources(validate(new, conflicts=False), {k: v for k, v in given.items() if k in RESUME_MAY_CHANGE})
    if new.epochs < started:
        raise ValueError(f"resume: {setting(cfg, 'epochs')}: the run in {path} is already at epoch "
                         f"{state.get('epoch')}, step {state.get('step_in_epoch', 0)}; give --epochs {started} or more")
    if new.mixup_off_epoch and new.mixup_off_epoch >= new.epochs:
        raise ValueError(f"resume: {setting(cfg, 'epochs')}: the run stops mixing from epoch {new.mixup_off_epoch} "
                         f"(mixup_off_epoch), which must be below epochs; give --epochs {new.mixup_off_epoch + 1} "
                         "or more")
    return new, changed


def _mixes(mixup_off_epoch: int, epochs: int) -> list[bool]:
    """Which of the first ``epochs`` epochs mix under ``mixup_off_epoch`` (0: all; as ``engine.Run.mixing``)."""
    return [not (mixup_off_epoch and e >= mixup_off_epoch) for e in range(epochs)]


def check_resume(state: dict[str, Any], path: str, classes: list[str], data_dir: str | None) -> None:
    """Refuse a checkpoint whose network was trained on other classes than this run's data.

    The options are checked by ``resume_config``; the classes come from the data, which may have changed under the
    same ``data_dir`` (``check_classes``).

    Raises:
        ValueError: naming the missing and extra class folders, or both class counts.
    """
    check_classes(state, path, classes, f"resume: data_dir {data_dir}")


def data_classes(cfg: Config) -> list[str] | None:
    """The class folders an ``imagefolder`` run of ``cfg`` trains on, listed without reading an image; None for
    other datasets (their classes are known once loaded)."""
    folders = image_folders(cfg)
    if not folders or not os.path.isdir(folders["train"]):
        return None
    return sorted(e.name for e in os.scandir(folders["train"]) if e.is_dir() and not e.name.startswith("."))


def check_classes(state: dict[str, Any], path: str, classes: list[str], where: str) -> None:
    """Refuse data whose classes are not those the run of checkpoint ``state`` (read from ``path``) trained on.

    Labels are positions in the sorted class list, so a folder of other classes (even as many) would be scored
    or trained with the wrong labels. A checkpoint records its run's class names (``"classes"``); one written
    before they were recorded is checked by its class count (``"num_classes"``) only. ``where`` names the data
    in the message (``"--data-dir /data/other"``).

    Raises:
        ValueError: ``"{where}: ..."`` naming the missing and extra classes, or both class counts.
    """
    theirs, count = state.get("classes"), state.get("num_classes")
    differ = ""
    if theirs is not None and list(theirs) != list(classes):
        differ = f" ({class_mismatch(list(classes), list(theirs)) or 'the same names in another order'})"
    if count is not None and count != len(classes):
        raise ValueError(f"{where} has {len(classes)} classes, but the run of {path} was trained on {count} "
                         f"classes{differ}; give a folder with the run's class folders")
    if differ:
        raise ValueError(f"{where}: its classes are not those the run of {path} was trained on{differ}; the "
                         "network's outputs would be read as the wrong classes. Give a folder with the run's class "
                         "folders")
