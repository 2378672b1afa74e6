"""scikit-learn's 8x8 handwritten digits (1,797 grey images, 10 classes): the offline default.

The 0..16 values are scaled to 0..255 and upscaled once, at load, to ``img_size`` (default 16)
with bilinear interpolation (align_corners=False; antialiased if shrinking), so the usual
pad-and-crop augmentation has room to move. There is no separate test split: carve a validation
split with ``split_indices``. Mean/std are measured on the loaded images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ImageData

DEFAULT_SIZE = 16


def load_digits(split: str = "train", img_size: int | None = None) -> ImageData:
    if split != "train":
        raise ValueError(f"split={split!r}: the digits dataset has no separate test split; load "
                         "split='train' and carve a validation split with split_indices")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise ImportError('the "digits" dataset needs scikit-learn: pip install "automix[train]"') from e
    raw = _sk_load_digits()
    x = torch.as_tensor(raw.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)  # [N, 1, 8, 8]
    size = DEFAULT_SIZE if img_size is None else img_size
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 8)
    images = x.round_().clamp_(0, 255).to(torch.uint8)
    labels = torch.as_tensor(raw.target, dtype=torch.int64)
    scaled = images.float() / 255.0
    mean, std = (float(scaled.mean()),), (float(scaled.std()),)
    return ImageData(images.contiguous(), labels, [str(i) for i in range(10)], mean, std)
