"""Batches for training and evaluation, with state that makes a resumed epoch identical.

Small images live in memory as uint8 tensors; each batch is gathered, moved to the device, and
augmented there (pad-crop, flip) by vectorised ops. Large-image folders are decoded by DataLoader
workers (random-resized crops) and only flipped and normalised on the device.

Where resizing happens: CIFAR and Tiny-ImageNet are held at their native 32 / 64 px (``data.native_size``), and
a run at another ``img_size`` (DeiT at 224) resizes each uint8 batch on the device just after the transfer,
before normalising and the pad-crop / flip at ``img_size`` (``resize_images``: bilinear, antialiased only when
shrinking, rounded to uint8). The pixels are those of a set resized once at load (bit for bit on the CPU, where
both run; a GPU's interpolation may round a rare pixel one level apart from the CPU's), while
memory holds 150 MB for CIFAR instead of 7.5 GB at 224 px, and the host-to-device copy stays at the native size;
the cost is one interpolation per batch on the device, so each epoch pays what the one-off resize at load paid
for the images it uses (on a GPU a small fraction of a DeiT step). Images already at ``img_size`` (CIFAR at 32, the
in-memory image folders, digits) go through no extra op.

The epoch's order is a function of (seed, epoch) alone, and the augmentation generator's state
is saved, so a checkpoint written mid-epoch resumes on exactly the next batch.
Under DDP each rank takes a strided shard of the same permutation (a DistributedSampler).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..data import ImageData, LazyImageDataset, normalize, random_crop_flip, resize_images
from ..data.lazy import DEFAULT_SIZE


def batch_side(data: ImageData, img_size: int | None) -> tuple[int, int]:
    """(H, W) of the batches ``TrainBatches`` and ``eval_batches`` give for ``data``: ``img_size`` square when
    given, else the in-memory images' own size, else the ``DEFAULT_SIZE`` crop of a large-image folder."""
    if img_size is not None:
        return img_size, img_size
    if data.images is not None:
        return int(data.images.shape[-2]), int(data.images.shape[-1])
    return DEFAULT_SIZE, DEFAULT_SIZE


def _async(device: torch.device) -> bool:
    """Whether a host-to-device copy of a temporary batch may skip blocking: on CUDA (the copy from pageable memory
    is staged before the call returns, and reads are ordered on the stream), where a blocking copy was a host
    synchronisation per step; not on MPS, where such copies of freed temporaries have given wrong values
    (pytorch/pytorch#139550)."""
    return device.type == "cuda"


def _to_device(x_uint8: Tensor, device: torch.device, img_size: int | None, non_blocking: bool) -> Tensor:
    """A uint8 batch on ``device`` at ``img_size`` (resized there when held at another size)."""
    x = x_uint8.to(device, non_blocking=non_blocking and _async(device))
    if img_size is not None and x.shape[-2:] != (img_size, img_size):
        x = resize_images(x, img_size)
    return x


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> Tensor:
    """This rank's sample order for ``epoch``: a seeded permutation, strided over the ranks."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    usable = (n // world) * world  # equal shards: every rank runs the same number of steps
    return perm[:usable][rank::world]


class TrainBatches:
    """Training batches (drop_last) for one rank; ``len()`` is the number of steps per epoch.

    Each batch is float32 ``[batch_size, C, H, W]`` on ``device`` with ``(H, W) = batch_side(data, img_size)``,
    normalised, with int64 labels ``[batch_size]``. In-memory images held at another size than ``img_size`` (CIFAR
    at 224 px) are resized per batch on the device before normalising and the pad-crop / flip (module docstring).
    """

    def __init__(self, data: ImageData, indices: Tensor, batch_size: int, device: torch.device, *, seed: int,
                 pad: int, flip: bool, rank: int = 0, world: int = 1, img_size: int | None = None,
                 workers: int = 0, channels_last: bool = False) -> None:
        self.data, self.indices, self.batch_size, self.device = data, indices, batch_size, device
        self.seed, self.pad, self.flip, self.rank, self.world = seed, pad, flip, rank, world
        self.channels_last, self.workers, self.img_size = channels_last, workers, img_size
        per_rank = len(indices) // world
        if per_rank < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the {per_rank} training images per process "
                             "(batches drop the last partial one); lower --batch-size")
        self.steps = per_rank // batch_size
        self.aug_gen = torch.Generator().manual_seed(seed + 7919 * (rank + 1))
        self.lazy = None if data.images is not None else LazyImageDataset(data, img_size or DEFAULT_SIZE, train=True)

    def __len__(self) -> int:
        return self.steps

    def state_dict(self) -> dict:
        return {"aug_gen": self.aug_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.aug_gen.set_state(state["aug_gen"])

    def _finish(self, x_uint8: Tensor, crop: bool) -> Tensor:
        x = normalize(_to_device(x_uint8, self.device, self.img_size, True), self.data.mean, self.data.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return random_crop_flip(x, self.pad if crop else 0, self.flip, self.aug_gen)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches ``start, start + 1, ...`` of ``epoch``."""
        order = self.indices[epoch_order(len(self.indices), self.seed, epoch, self.rank, self.world)]
        order = order[: self.steps * self.batch_size].view(self.steps, self.batch_size)
        if self.lazy is None:
            for step in range(start, self.steps):
                idx = order[step]
                labels = self.data.labels[idx].to(self.device, non_blocking=_async(self.device))
                yield self._finish(self.data.images[idx], crop=True), labels
            return
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.lazy, order.flatten().tolist()), batch_size=self.batch_size,
            num_workers=self.workers, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch),
            persistent_workers=False)
        for step, (x, y) in enumerate(loader):
            if step >= start:  # replays skipped batches so worker draws stay aligned after a resume
                yield self._finish(x, crop=False), y.to(self.device, non_blocking=_async(self.device))


def eval_batches(data: ImageData, indices: Tensor, batch_size: int, device: torch.device, *, rank: int = 0,
                 world: int = 1, img_size: int | None = None, workers: int = 0,
                 channels_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Evaluation batches of this rank's strided shard of ``indices`` (no augmentation): float32
    ``[<= batch_size, C, H, W]`` on ``device`` with ``(H, W) = batch_side(data, img_size)``, normalised, and int64
    labels. In-memory images held at another size than ``img_size`` are resized per batch on the device, as in
    ``TrainBatches``."""
    shard = indices[rank::world]
    if data.images is not None:
        for chunk in shard.split(batch_size):
            x = normalize(_to_device(data.images[chunk], device, img_size, False), data.mean, data.std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, data.labels[chunk].to(device, non_blocking=_async(device))
        return
    dataset = torch.utils.data.Subset(LazyImageDataset(data, img_size or DEFAULT_SIZE, train=False), shard.tolist())
    for x, y in torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        yield normalize(x.to(device), data.mean, data.std), y.to(device)
