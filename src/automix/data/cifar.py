"""CIFAR-10 / CIFAR-100 from the official python-pickle release, an ImageFolder copy, or a download.

Where ``data_dir`` points, in this order: (a) the pickle folder itself or a folder containing
``cifar-10-batches-py`` / ``cifar-100-python``; (b) a folder with ``<split>/<class>/`` images;
(c) for split "train", an ImageFolder ``<class>/<images>`` itself (decoded once and cached);
(d) with ``download=True`` the official tarball is fetched into ``data_dir`` and (a) is used.
The images are read and cached at their native 32 x 32 (a CIFAR cache is about 150 MB); an ``img_size``
other than 32 resizes them in memory afterwards (``resize_images``: 50,000 images at 224 px take 7.5 GB, which
is why the trainer asks for the native size and resizes each batch on the device instead).
The pickles are read with an unpickler that only admits numpy array reconstruction, so a
tampered file cannot run code.
"""

from __future__ import annotations

import importlib
import os
import pickle

import torch

from . import fetch
from .base import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DatasetNotFoundError, ImageData
from .folder import load_image_folder
from .transforms import resize_images

NATIVE_SIZE = 32  # the side CIFAR images are held and cached at, whatever img_size
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"

# name -> (pickle folder, train files, test files, meta file, meta key, label key, num classes)
_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta", "label_names", "labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels", 100),
}
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR pickle")
        if module.startswith("numpy.core"):  # numpy >= 2 moved numpy.core to numpy._core
            try:
                return getattr(importlib.import_module("numpy._core" + module[len("numpy.core"):]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def _read_pickle(path: str) -> dict:
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"CIFAR file {path} does not exist")
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:
        raise ValueError(f"cannot read CIFAR pickle {path}: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR pickle {path} holds a {type(obj).__name__}, expected a dict")
    # The official files were written by Python 2: keys are bytes. Accept str keys too.
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _pickle_dir(name: str, data_dir: str) -> str | None:
    folder, train_files = _LAYOUT[name][0], _LAYOUT[name][1]
    for d in (data_dir, os.path.join(data_dir, folder)):
        if os.path.isfile(os.path.join(d, train_files[0])):
            return d
    return None


def load_cifar_pickle(name: str, folder: str, split: str) -> ImageData:
    """Read the official python-pickle release in ``folder`` (e.g. ``.../cifar-10-batches-py``)."""
    _, train_files, test_files, meta_file, meta_key, label_key, num_classes = _LAYOUT[name]
    meta = _read_pickle(os.path.join(folder, meta_file))
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(meta_key, [])]
    if len(classes) != num_classes:
        raise ValueError(f"{os.path.join(folder, meta_file)}: expected {num_classes} names under "
                         f"{meta_key!r}, got {len(classes)}")
    images, labels = [], []
    for fname in train_files if split == "train" else test_files:
        path = os.path.join(folder, fname)
        batch = _read_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"CIFAR pickle {path} lacks 'data' or {label_key!r}")
        data = torch.as_tensor(batch["data"])
        if data.dtype != torch.uint8 or data.dim() != 2 or data.shape[1] != 3072:
            raise ValueError(f"CIFAR pickle {path}: 'data' must be uint8 [N, 3072], got {data.dtype} "
                             f"{list(data.shape)}")
        lab = torch.as_tensor(list(batch[label_key]), dtype=torch.int64)
        if lab.shape[0] != data.shape[0] or (lab.numel() and (lab.min() < 0 or lab.max() >= num_classes)):
            raise ValueError(f"CIFAR pickle {path}: {label_key!r} must hold {data.shape[0]} labels in "
                             f"[0, {num_classes})")
        images.append(data.view(-1, 3, 32, 32))  # rows are R plane, G plane, B plane, each row-major
        labels.append(lab)
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    return ImageData(torch.cat(images).contiguous(), torch.cat(labels), classes, mean, std)


def load_cifar(name: str, data_dir: str, split: str, *, download: bool, cache_dir: str | None,
               img_size: int | None, skip_bad: bool = False) -> ImageData:
    folder = _pickle_dir(name, data_dir) if os.path.isdir(data_dir) else None
    if folder is None and os.path.isdir(os.path.join(data_dir, split)):
        return _from_folder(name, os.path.join(data_dir, split), cache_dir, img_size, skip_bad)
    if folder is None and not download and os.path.isdir(data_dir) and _looks_like_image_folder(data_dir):
        if split != "train":
            raise ValueError(f"data_dir {data_dir} is a single ImageFolder, used as the train split; for "
                             f"split={split!r} give a folder holding {split}/<class>/ or the pickle release")
        return _from_folder(name, data_dir, cache_dir, img_size, skip_bad)
    if folder is None:
        if not download and not os.path.exists(data_dir):
            raise DatasetNotFoundError(f"data_dir {data_dir} does not exist; pass download=True to fetch {name}")
        if not download:
            raise DatasetNotFoundError(
                f"no {name} found in data_dir {data_dir}: expected {_LAYOUT[name][0]}/ (python pickles), "
                f"<split>/<class>/<images> or <class>/<images>; pass download=True to fetch it")
        url, md5 = (CIFAR10_URL, CIFAR10_MD5) if name == "cifar10" else (CIFAR100_URL, CIFAR100_MD5)
        fetch.download_and_extract(url, md5, data_dir)
        folder = _pickle_dir(name, data_dir)
        if folder is None:
            raise ValueError(f"the archive from {url} did not contain {_LAYOUT[name][0]}/ in {data_dir}")
    data = load_cifar_pickle(name, folder, split)
    if img_size is not None:
        data.images = resize_images(data.images, img_size)  # no op at the native 32 px
    return data


def cifar_splits(name: str, data_dir: str, download: bool = False) -> tuple[str, ...]:
    """The splits ``load_cifar`` serves from ``data_dir``, without reading an image: ``("train",)`` for a single
    ImageFolder copy of the training images, else ``("train", "test")`` (the pickle release, ``train/`` beside
    ``test/``, or what ``download=True`` fetches; a folder holding none of these fails to load either split)."""
    if not os.path.isdir(data_dir) or download or _pickle_dir(name, data_dir) is not None:
        return ("train", "test")
    if os.path.isdir(os.path.join(data_dir, "test")):
        return ("train", "test")
    if _looks_like_image_folder(data_dir) and not os.path.isdir(os.path.join(data_dir, "train")):
        return ("train",)
    return ("train", "test")


def _looks_like_image_folder(path: str) -> bool:
    return any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(path))


def _from_folder(name: str, root: str, cache_dir: str | None, img_size: int | None,
                 skip_bad: bool = False) -> ImageData:
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)
    # Decoded and cached at the native size, then resized as the pickles are: one cache file and the same pixels
    # at every img_size.
    return load_image_folder(root, img_size=img_size, cache_dir=cache_dir, mean=mean, std=std, prefix=name,
                             in_memory_size=NATIVE_SIZE, num_classes=_LAYOUT[name][6], skip_bad=skip_bad)
