"""``LazyImageDataset``: per-sample decode + crop for large-image folders (too big to hold in memory).

Train mode is RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3)) + horizontal flip, the
ImageNet recipe, written with Pillow: the crop box is handed to ``Image.resize(box=...)`` so the
crop and the resize are one bilinear (antialiased) resample. Eval mode resizes the shorter side to
``size / 0.875`` and takes the centre ``size x size``, also as one resample of the matching box.
Random draws come from a ``torch.Generator`` per process, seeded from the DataLoader worker seed
(``get_worker_info().seed``, which differs per worker and per epoch and follows the loader's own
seeding), or from ``torch.initial_seed()`` without workers.
"""

from __future__ import annotations

import math
import os

import torch
from PIL import Image
from torch.utils.data import Dataset, get_worker_info

from .base import ImageData
from .decode import open_rgb

SCALE = (0.08, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
EVAL_CROP = 0.875
DEFAULT_SIZE = 224  # the side a large-image folder is cropped to when no img_size is given (ImageNet's)


class LazyImageDataset(Dataset):
    """Decode ``data.files`` on demand: ``ds[i] -> (uint8 tensor [3, size, size], int label)``.

    Args:
        data: an ``ImageData`` with ``files`` (as ``load_dataset`` returns for large images).
        size: output side in pixels.
        train: random-resized-crop + flip (True) or resize + centre crop (False).
    """

    def __init__(self, data: ImageData, size: int, train: bool) -> None:
        if not isinstance(data, ImageData):
            raise TypeError(f"data must be an ImageData, got {type(data).__name__}")
        if data.files is None:
            raise ValueError("data has no files (its images are in memory); LazyImageDataset needs "
                             "an ImageData with files")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool, got {type(train).__name__} {train!r}")
        self.files = list(data.files)
        self.labels = data.labels.tolist()
        self.size, self.train = size, train
        self._gen: torch.Generator | None = None
        self._gen_key: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def _generator(self) -> torch.Generator:
        info = get_worker_info()
        seed = info.seed if info is not None else torch.initial_seed()
        key = (os.getpid(), seed)
        if self._gen is None or self._gen_key != key:  # new worker (or new epoch's workers)
            self._gen = torch.Generator().manual_seed(seed % (1 << 63))
            self._gen_key = key
        return self._gen

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        im = open_rgb(self.files[i])
        s = self.size
        if self.train:
            g = self._generator()
            box = random_resized_box(im.size, g)
            im = im.resize((s, s), Image.BILINEAR, box=box)
            if torch.rand(1, generator=g).item() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            im = im.resize((s, s), Image.BILINEAR, box=center_box(im.size))
        x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(s, s, 3)
        return x.permute(2, 0, 1).contiguous(), self.labels[i]


def random_resized_box(wh: tuple[int, int], g: torch.Generator, scale=SCALE, ratio=RATIO,
                       attempts: int = 10) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop covering ``scale`` of the area with aspect ``ratio``;
    after ``attempts`` misses, the centre crop of the largest box with the ratio clamped."""
    w, h = wh
    area = w * h
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    draws = torch.rand(attempts, 4, generator=g, dtype=torch.float64).tolist()
    for u_area, u_ratio, u_top, u_left in draws:
        target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        r = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
        if 0 < cw <= w and 0 < ch <= h:
            top = min(int(u_top * (h - ch + 1)), h - ch)
            left = min(int(u_left * (w - cw + 1)), w - cw)
            return left, top, left + cw, top + ch
    r = w / h
    if r < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif r > ratio[1]:
        cw, ch = round(h * ratio[1]), h
    else:
        cw, ch = w, h
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def center_box(wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """The square box of the original that becomes the centre ``size`` crop once the shorter side
    is resized to ``size / EVAL_CROP`` (whatever ``size`` is)."""
    w, h = wh
    side = min(w, h) * EVAL_CROP  # size px out of size/0.875 of the shorter side
    left, top = (w - side) / 2, (h - side) / 2
    return left, top, left + side, top + side
