"""The ``ImageData`` container every loader returns, the per-dataset normalisation constants,
and the error type for a missing dataset path.

Small images are held in memory as one uint8 tensor (4x smaller than float32, and the batched
tensor transforms turn a batch into floats on the device); large images stay on disk as a file
list that ``LazyImageDataset`` decodes per sample.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

# Per-channel mean/std in [0, 1] units. CIFAR values are the true per-pixel statistics of the
# training split (the widespread 0.2023/0.1994/0.2010 "std" is a per-image quantity, not this).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2770, 0.2691, 0.2821)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SPLITS = ("train", "val", "test")


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset path is missing or has the wrong layout.

    Both a ``FileNotFoundError`` (what it is) and a ``ValueError`` (a bad argument), so callers that
    catch either for user errors get it.
    """


@dataclass
class ImageData:
    """A labelled image set.

    Attributes:
        images: uint8 ``[N, C, H, W]`` when held in memory (small images), else ``None``. CIFAR and Tiny-ImageNet
            are at their native 32 / 64 px when loaded without ``img_size`` (as the trainer loads them), and the
            trainer's loader resizes each batch to ``img_size`` on the device (``train.loader``: N x C x H x W bytes
            in memory, e.g. 150 MB for CIFAR's 50,000, rather than 7.5 GB at 224 px; one interpolation per batch).
        labels: int64 ``[N]`` class indices into ``classes``.
        classes: class names; label ``i`` is ``classes[i]``.
        mean, std: per-channel statistics in [0, 1] units, for ``normalize``.
        files: image paths, for large-image folders decoded lazily (``images`` is ``None`` then).
        skipped: unreadable files left out (only when loaded with ``skip_bad_images=True``).
        root: the folder the images were read from (image folders only), for messages and run headers.

    Example:
        >>> import torch
        >>> d = ImageData(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 1, 0]),
        ...               ["a", "b"], (0.5,), (0.25,))
        >>> len(d), d.num_classes
        (4, 2)
    """

    images: torch.Tensor | None
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: list[str] | None = None
    skipped: list[str] = field(default_factory=list)
    root: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise TypeError(f"labels must be an int64 tensor [N], got {_describe(self.labels)}")
        n = self.labels.shape[0]
        if self.images is None and self.files is None:
            raise ValueError("ImageData needs images (in memory) or files (lazy), got neither")
        if self.images is not None:
            if (not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8
                    or self.images.dim() != 4):
                raise TypeError(f"images must be a uint8 tensor [N, C, H, W], got {_describe(self.images)}")
            if self.images.shape[0] != n:
                raise ValueError(f"images has {self.images.shape[0]} samples but labels has {n}")
            if len(self.mean) != self.images.shape[1] or len(self.std) != self.images.shape[1]:
                raise ValueError(f"mean/std need one value per channel ({self.images.shape[1]}), "
                                 f"got mean={self.mean}, std={self.std}")
        if self.files is not None and len(self.files) != n:
            raise ValueError(f"files has {len(self.files)} entries but labels has {n}")
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__


def as_path(name: str, value: object) -> str:
    """A str / os.PathLike argument as an absolute path string."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__} {value!r}")
    return os.path.abspath(os.path.expanduser(os.fspath(value)))
