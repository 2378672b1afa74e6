"""Datasets and tensor transforms: ``load_dataset(name, data_dir)`` -> ``ImageData``.

Small-image datasets come back as one uint8 tensor in memory, to be batched, moved to the device
and augmented there (``normalize``, ``random_crop_flip``); large-image folders come back as a file
list for ``LazyImageDataset`` and a DataLoader. Folders of image files are decoded once and
cached as a uint8 tensor file (``cache_dir``, else ``$AUTOMIX_CACHE``, else ``~/.cache/automix``).

Usage::

    data = load_dataset("cifar10", "/data/cifar10/train")          # ImageFolder copy, cached
    train_idx, val_idx = split_indices(len(data), 0.1, seed=0, labels=data.labels)
    x = normalize(data.images[train_idx[:128]], data.mean, data.std)
    x = random_crop_flip(x, pad=4, flip=True, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import os

from .base import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    TINY_IMAGENET_MEAN,
    TINY_IMAGENET_STD,
    DatasetNotFoundError,
    ImageData,
    as_path,
)
from .cache import cache_root
from .cifar import CIFAR10_MD5, CIFAR10_URL, CIFAR100_MD5, CIFAR100_URL, cifar_splits, load_cifar
from .cifar import NATIVE_SIZE as CIFAR_SIZE
from .digits import load_digits
from .fetch import download, download_and_extract
from .folder import TINY_IMAGENET_SIZE, load_image_folder, load_tiny_imagenet, split_folders
from .lazy import LazyImageDataset
from .splits import split_indices
from .transforms import normalize, random_crop_flip, resize_images

_DATASETS = ("cifar10", "cifar100", "digits", "imagefolder", "tiny-imagenet")


_NATIVE_SIZES = {"cifar10": CIFAR_SIZE, "cifar100": CIFAR_SIZE, "tiny-imagenet": TINY_IMAGENET_SIZE}


def native_size(name: str) -> int | None:
    """The side (px) dataset ``name``'s images all have, which it is held and cached at whatever ``img_size``
    (CIFAR 32, Tiny-ImageNet 64); None for datasets decoded straight to ``img_size`` (``digits``, ``imagefolder``).

    Example:
        >>> native_size("cifar100"), native_size("imagefolder")
        (32, None)
    """
    return _NATIVE_SIZES.get(name)


def list_datasets() -> list[str]:
    """Names ``load_dataset`` accepts.

    Example:
        >>> list_datasets()
        ['cifar10', 'cifar100', 'digits', 'imagefolder', 'tiny-imagenet']
    """
    return list(_DATASETS)


def dataset_splits(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False,
                   cache_dir: str | os.PathLike | None = None) -> tuple[str, ...]:
    """The splits ``load_dataset(name, data_dir, split=...)`` serves, found without reading an image.

    ``digits``: ``("train",)`` (one set: hold a share out for validation). ``imagefolder``: the folders
    ``split_folders`` finds (``("train",)`` for a root of class folders). CIFAR: ``("train", "test")``, but
    ``("train",)`` for a single ImageFolder copy of the training images. Tiny-ImageNet: ``("train", "test")``.
    A ``data_dir`` that holds no such dataset is reported by ``load_dataset``, not here.

    Example:
        >>> dataset_splits("digits")
        ('train',)
    """
    if name == "digits":
        return ("train",)
    if name == "tiny-imagenet":
        return ("train", "test")
    if name in ("cifar10", "cifar100"):
        root = os.path.join(cache_root(cache_dir), "datasets") if data_dir is None else os.fspath(data_dir)
        return cifar_splits(name, root, download)
    if name == "imagefolder" and data_dir is not None and os.path.isdir(data_dir):
        return tuple(split_folders(os.fspath(data_dir)))
    return ("train",)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, split: str = "train",
                 download: bool = False, cache_dir: str | os.PathLike | None = None,
                 img_size: int | None = None, skip_bad_images: bool = False,
                 classes: list[str] | None = None) -> ImageData:
    """Load a dataset split as an ``ImageData``.

    Args:
        name: one of ``list_datasets()``.
        data_dir: where the data is. ``digits`` needs none; ``cifar10``/``cifar100`` default to
            ``<cache>/datasets`` (where ``download=True`` puts them); the others require it.
        split: "train", "val" or "test". An ``imagefolder`` ``data_dir`` holding ``train/`` serves the
            splits it has folders for (``train/``, ``val/``, ``test/``); one holding class folders directly
            serves "train" only. Tiny-ImageNet's "test" is its labelled val set; CIFAR has "train" and "test"
            (a CIFAR ImageFolder copy given directly only "train"); digits only "train".
        download: fetch CIFAR from the official URL when the pickle files are missing.
        cache_dir: where decoded folders are cached (default ``$AUTOMIX_CACHE`` or ``~/.cache/automix``).
        img_size: the square side of the in-memory images returned (digits default 16, CIFAR 32,
            Tiny-ImageNet 64); for ``imagefolder`` a value > 96 means lazy loading. CIFAR and Tiny-ImageNet are
            decoded and cached at their native size (``native_size``) whatever ``img_size``, and another
            ``img_size`` resizes the whole set in memory once (``resize_images``: N x 3 x img_size^2 bytes, e.g.
            7.5 GB for CIFAR's 50,000 at 224 px). The trainer loads them at their native size and resizes each
            batch on the device instead (``automix.train.loader``), with the same pixels.
        skip_bad_images: leave out unreadable image files (listed in ``ImageData.skipped``)
            instead of raising ValueError naming the first one.
        classes: for ``imagefolder``, the class folders the split must have (the training split's
            ``classes``): labels are positions in that list, so another set is a ValueError naming the
            missing and extra folders.

    Raises:
        ValueError: unknown ``name`` or ``split``, bad layout or an unreadable image (naming it).
        DatasetNotFoundError: ``data_dir`` missing (a FileNotFoundError and a ValueError).
        TypeError: an argument of the wrong type.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__} {name!r}")
    if name not in _DATASETS:
        raise ValueError(f"name={name!r} is not a known dataset; available: {', '.join(_DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if split == "val" and name != "imagefolder":
        raise ValueError(f"split 'val': dataset {name!r} has no val split of its own; hold a share of its "
                         "train split out (split_indices)")
    if not isinstance(download, bool):
        raise TypeError(f"download must be a bool, got {type(download).__name__} {download!r}")
    if img_size is not None and (not isinstance(img_size, int) or isinstance(img_size, bool) or img_size <= 0):
        raise ValueError(f"img_size must be a positive int or None, got {img_size!r}")
    if classes is not None and name != "imagefolder":
        raise ValueError(f"classes applies to dataset 'imagefolder', not to {name!r}")
    if cache_dir is not None:
        cache_dir = cache_root(cache_dir)
    if name == "digits":
        return load_digits(split, img_size)
    if data_dir is None:
        if name not in ("cifar10", "cifar100"):
            raise ValueError(f"data_dir is required for dataset {name!r}")
        data_dir = os.path.join(cache_root(cache_dir), "datasets")
    root = as_path("data_dir", data_dir)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root, split, download=download, cache_dir=cache_dir, img_size=img_size,
                          skip_bad=skip_bad_images)
    if download:
        raise ValueError(f"download=True is only supported for cifar10/cifar100, not {name!r}")
    if name == "tiny-imagenet":
        return load_tiny_imagenet(root, split, img_size=img_size, cache_dir=cache_dir,
                                  mean=TINY_IMAGENET_MEAN, std=TINY_IMAGENET_STD, skip_bad=skip_bad_images)
    folders = split_folders(root)
    if split not in folders:
        if folders["train"] == root:
            raise ValueError(f"data_dir {root} holds class folders, one set that serves split 'train' only; "
                             f"for a {split} split arrange {root}/train/<class> beside {root}/{split}/<class>, "
                             "or hold a share of the train split out (split_indices)")
        raise ValueError(f"data_dir {root} has no {split}/ folder beside train/ "
                         f"(it has {', '.join(s + '/' for s in folders)})")
    what = "data_dir" if folders[split] == root else f"{split} folder"
    return load_image_folder(folders[split], img_size=img_size, cache_dir=cache_dir, mean=IMAGENET_MEAN,
                             std=IMAGENET_STD, skip_bad=skip_bad_images, classes=classes, what=what)


__all__ = ["ImageData", "DatasetNotFoundError", "list_datasets", "load_dataset", "dataset_splits", "split_indices",
           "random_crop_flip", "normalize", "resize_images", "LazyImageDataset", "download",
           "download_and_extract", "cache_root", "native_size", "split_folders", "CIFAR10_URL", "CIFAR10_MD5",
           "CIFAR100_URL", "CIFAR100_MD5", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
           "TINY_IMAGENET_MEAN", "TINY_IMAGENET_STD", "IMAGENET_MEAN", "IMAGENET_STD"]
