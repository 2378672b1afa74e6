"""Batched tensor transforms for in-memory image sets: uint8 -> normalised float, pad-and-crop +
flip, and a uint8 resize (the trainer's loader resizes each batch on the device with it).

They work on whole batches on whatever device the batch lives on (no Python loop over samples),
which is what makes keeping small datasets as one uint8 tensor fast (the airbench approach).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_generator, check_tensor, check_type


def normalize(x_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` (any device) -> ``(x / 255 - mean) / std`` as ``dtype``.

    The memory format (e.g. channels_last) is kept. Arithmetic runs in float32 at least, so
    low-precision outputs are rounded once.

    Example:
        >>> import torch
        >>> x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2)
        >>> normalize(x, (0.5,), (0.5,)).flatten().tolist()
        [-1.0, 1.0]
    """
    check_tensor("x_uint8", x_uint8)
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4:
        raise TypeError(f"x_uint8 must be a uint8 tensor [B, C, H, W], got {x_uint8.dtype} "
                        f"of shape {list(x_uint8.shape)}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    c = x_uint8.shape[1]
    mean_v, std_v = _per_channel("mean", mean, c), _per_channel("std", std, c)
    if any(v <= 0 for v in std_v):
        raise ValueError(f"std must be > 0 for every channel, got {tuple(std)}")
    work = dtype if torch.finfo(dtype).bits >= 32 else torch.float32
    shift, scale = _affine(mean_v, std_v, x_uint8.device, work)
    # One fused pass: (x - 255 mean) * 1 / (255 std).
    return ((x_uint8.to(work) - shift) * scale).to(dtype)


def _per_channel(name: str, values: Sequence[float], c: int) -> tuple[float, ...]:
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if not isinstance(values, Sequence) or len(values) != c:
        raise ValueError(f"{name} must have one value per channel ({c}), got {values!r}")
    return tuple(float(v) for v in values)


@functools.lru_cache(maxsize=64)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``255 mean`` and ``1 / (255 std)`` as ``[1, C, 1, 1]`` on ``device``, built once per set of values: built per
    batch they were two host-to-device copies, each a synchronisation on a GPU (the GPU check counted them)."""
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return (m * 255).to(device=device, dtype=dtype), (1.0 / (s * 255)).to(device=device, dtype=dtype)


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Pad each image by ``pad`` zeros, crop a random ``H x W`` window, and flip half horizontally.

    The padding is zeros in the units of ``x``: black for [0, 1] images, the mean colour for
    normalised ones (torchvision's ``RandomCrop(padding=4)`` pads with zeros too). Offsets and
    flips are drawn on the CPU from ``generator`` (the global RNG when ``None``) in the order:
    vertical offsets [B], horizontal offsets [B], then flip coins [B] (only when ``flip``), and are
    moved to ``x.device``, so a seeded generator gives the same result on any device. A new tensor
    is returned in the input's memory format (contiguous or channels_last); ``x`` is not changed.

    Args:
        x: ``[B, C, H, W]`` batch of any dtype, on any device.
        pad: padding in pixels (0 disables the crop).
        flip: also flip each image left-right with probability 0.5.
        generator: CPU ``torch.Generator`` for the draws.

    Example:
        >>> import torch
        >>> x = torch.arange(16.).view(1, 1, 4, 4)
        >>> y = random_crop_flip(x, pad=1, flip=False, generator=torch.Generator().manual_seed(0))
        >>> y.shape
        torch.Size([1, 1, 4, 4])
    """
    check_tensor("x", x)
    if x.dim() != 4:
        raise ValueError(f"x must be a batch [B, C, H, W], got shape {list(x.shape)}")
    check_type("pad", pad, int, "an int >= 0")
    if pad < 0:
        raise ValueError(f"pad must be an int >= 0, got {pad!r}")
    check_type("flip", flip, bool, "a bool")
    check_generator("generator", generator)
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator, got one on {generator.device}")
    b, _, h, w = x.shape
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if b == 0 or (pad == 0 and not flip):
        return x.clone(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    # Not blocking on CUDA only: MPS has given wrong values for such copies of freed temporaries (pytorch#139550).
    dy, dx, flips = (t.to(x.device, non_blocking=x.device.type == "cuda") for t in (dy, dx, flips))
    src = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    rows = dy[:, None] + torch.arange(h, device=x.device)           # [B, H] rows of the padded image
    cols = dx[:, None] + torch.arange(w, device=x.device)           # [B, W]
    cols = torch.where(flips[:, None], cols.flip(1), cols)          # a flip reads the window backwards
    batch = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: the result is [B, H, W, C], and its
    # permute is an NCHW view with channels_last strides.
    out = src[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return out if channels_last else out.contiguous()


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize a uint8 ``[N, C, H, W]`` set or batch to ``size x size`` on its own device.

    Bilinear (``align_corners=False``), antialiased only when shrinking (``size`` below the longer side),
    computed in float32, then rounded and clamped back to uint8. Each image is resized on its own, so a
    batch gives exactly the pixels its images have in a resized set (on one device): the trainer's loader
    resizes each batch with this function (``train.loader``) rather than holding an upsampled set in memory.
    Images already ``size x size`` are returned as they are (no copy). Large sets go in chunks of
    ``chunk`` images, so the float copy stays small.

    Args:
        images: uint8 ``[N, C, H, W]``, on any device.
        size: the output side in pixels, an int > 0.
        chunk: images per float32 chunk.

    Returns:
        uint8 ``[N, C, size, size]`` on ``images.device``.

    Raises:
        TypeError: ``images`` is not a uint8 4-D tensor.
        ValueError: ``size`` or ``chunk`` is not a positive int.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0, 255]], dtype=torch.uint8).view(1, 1, 1, 2)
        >>> resize_images(x, 2)[0, 0].tolist()
        [[0, 255], [0, 255]]
    """
    check_tensor("images", images)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"images must be a uint8 tensor [N, C, H, W], got {images.dtype} of shape "
                        f"{list(images.shape)}")
    for name, value in (("size", size), ("chunk", chunk)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if images.shape[-2:] == (size, size):
        return images
    if images.shape[0] == 0:
        return images.new_empty(0, images.shape[1], size, size)
    antialias = size < max(images.shape[-2:])
    if images.shape[0] <= chunk:
        return _resize_chunk(images, size, antialias)
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8, device=images.device)
    for i in range(0, images.shape[0], chunk):
        out[i:i + chunk] = _resize_chunk(images[i:i + chunk], size, antialias)
    return out


def _resize_chunk(part: torch.Tensor, size: int, antialias: bool) -> torch.Tensor:
    x = F.interpolate(part.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    return x.round_().clamp_(0, 255).to(torch.uint8)
