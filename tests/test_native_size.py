"""Sets of a fixed native size (CIFAR 32 px, Tiny-ImageNet 64 px) stay at it in memory and in the cache at any
img_size; the trainer's loader resizes each batch on the device, with exactly the pixels of a set resized at load.

Before: CIFAR at --img-size 224 was resized whole at load (7.5 GB in memory for 50,000 images, and as much in the
cache of an ImageFolder copy)."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from test_data import make_folder, rgb, write_cifar_pickles

import automix.data as D
from automix.cli import main
from automix.data import ImageData, load_dataset, resize_images
from automix.data.cache import load_cached
from automix.train import loader as loader_mod
from automix.train.config import Config
from automix.train.loader import TrainBatches, batch_side, eval_batches
from automix.train.setup import load_data


def _cache_files(cache):
    return sorted(os.path.join(cache, f) for f in os.listdir(cache) if f.endswith(".pt"))


# ----------------------------------------------------------------------------- data

def test_cifar_folder_is_cached_at_32_px_at_any_img_size(tmp_path):
    root = make_folder(str(tmp_path / "train"), classes=[f"k{i}" for i in range(10)], per_class=2, size=32)
    cache = str(tmp_path / "c")
    native = load_dataset("cifar10", root, cache_dir=cache)
    big = load_dataset("cifar10", root, cache_dir=cache, img_size=64)
    files = _cache_files(cache)
    assert len(files) == 1, files  # one cache file, written at 32 px, for both sizes
    assert tuple(load_cached(files[0])["images"].shape) == (20, 3, 32, 32)
    # the folder path's pixels at another size are the pickle path's: the native set through resize_images
    assert big.images.shape == (20, 3, 64, 64) and torch.equal(big.images, resize_images(native.images, 64))


def test_tiny_imagenet_is_cached_at_64_px_at_any_img_size(tmp_path):
    root = tmp_path / "tiny"
    (root / "train" / "n01" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("n01\n")
    for i in range(3):
        Image.fromarray(rgb(64, 64, seed=i)).save(root / "train" / "n01" / "images" / f"n01_{i}.JPEG")
    cache = str(tmp_path / "c")
    native = load_dataset("tiny-imagenet", str(root), cache_dir=cache)
    small = load_dataset("tiny-imagenet", str(root), cache_dir=cache, img_size=32)
    files = _cache_files(cache)
    assert len(files) == 1 and tuple(load_cached(files[0])["images"].shape) == (3, 3, 64, 64)
    assert torch.equal(small.images, resize_images(native.images, 32))


def test_native_size():
    assert [D.native_size(n) for n in D.list_datasets()] == [32, 32, None, None, 64]


def test_resize_images_checks_and_edge_cases():
    x = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    assert resize_images(x, 8) is x  # already that size: no op, no copy
    assert resize_images(x[:0], 16).shape == (0, 3, 16, 16)
    # chunks give the pixels of one pass
    assert torch.equal(resize_images(x, 20, chunk=2), resize_images(x, 20))
    with pytest.raises(TypeError, match=r"images must be a uint8 tensor \[N, C, H, W\], got torch.float32"):
        resize_images(x.float(), 16)
    with pytest.raises(ValueError, match="size must be a positive int, got 0"):
        resize_images(x, 0)
    with pytest.raises(ValueError, match="chunk must be a positive int, got 1.5"):
        resize_images(x, 16, chunk=1.5)


# ----------------------------------------------------------------------------- loader

def _native_and_resized(size, n=24, side=32):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 3
    mean, std = D.CIFAR10_MEAN, D.CIFAR10_STD
    native = ImageData(images, labels, ["a", "b", "c"], mean, std)
    # what the loader saw before: the whole set resized once at load
    resized = ImageData(resize_images(images, size), labels, ["a", "b", "c"], mean, std)
    return native, resized


@pytest.mark.parametrize("size", [64, 24])  # upsampled (no antialias) and shrunk (antialiased)
@pytest.mark.parametrize("channels_last", [False, True])
def test_batches_resized_on_the_device_equal_a_set_resized_at_load(size, channels_last):
    native, resized = _native_and_resized(size)
    idx = torch.arange(4, 24)
    kw = dict(seed=3, pad=4, flip=True, img_size=size, channels_last=channels_last)
    new = TrainBatches(native, idx, 8, torch.device("cpu"), **kw)
    old = TrainBatches(resized, idx, 8, torch.device("cpu"), **kw)
    for epoch in range(2):
        for (x, y), (x_old, y_old) in zip(new.epoch(epoch), old.epoch(epoch), strict=True):
            assert x.shape == (8, 3, size, size) and x.dtype == torch.float32
            assert torch.equal(x, x_old) and torch.equal(y, y_old)
            assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.equal(new.aug_gen.get_state(), old.aug_gen.get_state())
    for (x, y), (x_old, y_old) in zip(eval_batches(native, idx, 7, torch.device("cpu"), img_size=size),
                                      eval_batches(resized, idx, 7, torch.device("cpu"), img_size=size), strict=True):
        assert x.shape[-2:] == (size, size) and torch.equal(x, x_old) and torch.equal(y, y_old)
    assert batch_side(native, size) == (size, size) and batch_side(native, None) == (32, 32)


@pytest.mark.parametrize("size", [None, 32])
def test_batches_at_the_native_size_take_no_extra_op(size, monkeypatch):
    native, _ = _native_and_resized(32)

    def no_resize(*args, **kwargs):
        raise AssertionError("a batch at its native size was resized")

    monkeypatch.setattr(loader_mod, "resize_images", no_resize)
    batches = TrainBatches(native, torch.arange(24), 8, torch.device("cpu"), seed=0, pad=4, flip=True,
                           img_size=size)
    assert [x.shape[-1] for x, _ in batches.epoch(0)] == [32] * 3
    assert [x.shape[-1] for x, _ in eval_batches(native, torch.arange(24), 8, torch.device("cpu"), img_size=size)] \
        == [32] * 3


# ----------------------------------------------------------------------------- trainer

def test_trainer_holds_cifar_at_32_px_and_trains_evaluates_and_shows_at_img_size(tmp_path, capsys):
    write_cifar_pickles(str(tmp_path / "data"), "cifar10", per_batch=8)
    flags = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--img-size", "48", "--model", "vit_tiny",
             "--model-opt", "patch_size=8", "--model-opt", "depth=1"]
    cfg = Config(dataset="cifar10", data_dir=str(tmp_path / "data"), img_size=48)
    data, _, eval_data, _ = load_data(cfg)
    assert data.images.shape[-1] == 32 and eval_data.images.shape[-1] == 32  # not 48 x 48 in memory
    # a ViT built for 48 px would fail on 32 px batches: the loader resizes each one
    run = tmp_path / "run"
    assert main(["train", *flags, "--epochs", "1", "--batch-size", "8", "--method", "cutmix", "--no-progress",
                 "--output", str(run)]) == 0
    assert main(["eval", str(run)]) == 0
    assert main(["show", *flags, "--method", "cutmix", "--output", str(tmp_path / "show.png")]) == 0
    assert (tmp_path / "show.png").is_file() and (run / "mixes").is_dir()
    capsys.readouterr()


def test_image_side_is_img_size_for_cifar():
    from automix.train.build import image_side

    data = ImageData(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], (0.5,) * 3,
                     (0.2,) * 3)
    assert image_side(data, Config(img_size=224)) == 224 and image_side(data, Config()) == 32

