"""ImageFolder-layout loaders: a generic ``root/<class>/<images>`` folder and Tiny-ImageNet.

A folder of images comes in one of two layouts (``split_folders``): ``root/<class>/...`` (one set, the
training split; a validation share is held out of it by the caller), or ``root/train/<class>/...`` beside
``root/val/<class>/...`` and/or ``root/test/<class>/...`` (ImageNet's and most tutorials' layout). The class
folders of a val or test folder must be those of ``train/`` (``classes=``): a missing or extra one is an
error naming it, since labels are positions in the sorted class list.

Small images (<= ``MAX_MEMORY_SIDE`` px) are decoded once into a uint8 tensor, resized to one
square size and cached (see ``cache``); larger ones stay a file list for ``LazyImageDataset``. Sets of a fixed
native size (CIFAR's 32 px, Tiny-ImageNet's 64 px) are decoded and cached at that size whatever ``img_size``.
Every layout problem (missing path, no class folders, an empty class, a file that is not an image)
is reported with the path before any decoding starts.
"""

from __future__ import annotations

import os
import warnings

import torch

from .base import DatasetNotFoundError, ImageData
from .cache import cache_path, folder_key, load_cached, save_cached
from .decode import decode_files, image_size, verify_files
from .transforms import resize_images

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_MEMORY_SIDE = 96   # images up to this side are held in memory
PROBE_FILES = 8        # how many files (spread over the folder) decide small vs large
TINY_IMAGENET_SIZE = 64  # Tiny-ImageNet's native side: held and cached at it whatever img_size


def check_dir(root: str, what: str = "data_dir") -> None:
    if not os.path.exists(root):
        raise DatasetNotFoundError(f"{what} {root} does not exist")
    if not os.path.isdir(root):
        raise DatasetNotFoundError(f"{what} {root} is not a directory")


def _image_entries(folder: str) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of the image files under ``folder`` (recursive, sorted, no hidden)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                path = os.path.join(dirpath, name)
                st = os.stat(path)
                out.append((path, st.st_size, st.st_mtime_ns))
    return out


SPLIT_FOLDERS = ("train", "val", "test")


def split_folders(root: str) -> dict[str, str]:
    """The splits an image folder ``root`` holds, as ``{split: folder}``.

    ``{"train": root/train, "val": root/val, "test": root/test}`` (those that exist) when ``root`` holds a
    ``train/`` folder, else ``{"train": root}``: a root of class folders is one set, used for training.

    Example:
        >>> import tempfile, os
        >>> root = tempfile.mkdtemp()
        >>> for d in ("train/a", "val/a"):
        ...     os.makedirs(os.path.join(root, d))
        >>> sorted(split_folders(root))
        ['train', 'val']
    """
    check_dir(root)
    if not os.path.isdir(os.path.join(root, "train")):
        return {"train": root}
    return {s: os.path.join(root, s) for s in SPLIT_FOLDERS if os.path.isdir(os.path.join(root, s))}


def class_mismatch(found: list[str], expected: list[str]) -> str:
    """'missing: a, b; extra: c' for two class-folder lists, '' when they are the same."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))

    def names(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")

    parts = ([f"missing {names(missing)}"] if missing else []) + ([f"extra {names(extra)}"] if extra else [])
    return "; ".join(parts)


def scan_image_folder(root: str, what: str = "data_dir") -> tuple[list[str], list[tuple[str, int, int]], torch.Tensor]:
    """Classes (sorted sub-folder names), file entries and int64 labels of ``root/<class>/...``.

    ``what`` names the folder in errors (``"data_dir"``, ``"val folder"``, ...).
    """
    check_dir(root, what)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"{what} {root} has no class sub-folders; expected the layout "
                         f"{root}/<class>/<image files>")
    entries, labels = [], []
    for i, c in enumerate(classes):
        found = _image_entries(os.path.join(root, c))
        if not found:
            raise ValueError(f"class folder {os.path.join(root, c)} has no image files "
                             f"(extensions {', '.join(IMG_EXTENSIONS)})")
        entries += found
        labels += [i] * len(found)
    return classes, entries, torch.tensor(labels, dtype=torch.int64)


def decode_cached(root: str, entries: list[tuple[str, int, int]], size: int, prefix: str,
                  cache_dir: str | None, extra: str = "", skip_bad: bool = False) -> tuple[torch.Tensor, list[int]]:
    """uint8 [N, 3, size, size] of the files in ``entries``, from the cache when it is current,
    and the positions of the files left out as unreadable (only with ``skip_bad``)."""
    key = folder_key(root, entries, f"{prefix}:size={size}:{extra}:skip={skip_bad}")
    path = cache_path(cache_dir, prefix, key)
    cached = load_cached(path)
    if cached is not None:
        bad = [int(i) for i in cached.get("bad", [])]
        if tuple(cached["images"].shape) == (len(entries) - len(bad), 3, size, size):
            return cached["images"], bad
    images, bad = decode_files([e[0] for e in entries], size, skip_bad=skip_bad)
    save_cached(path, {"images": images, "source": root, "bad": bad})
    return images, bad


def _drop(labels: torch.Tensor, files: list[str], bad: list[int]) -> tuple[torch.Tensor, list[str], list[str]]:
    """Labels and files without the positions in ``bad``, and the skipped file paths."""
    if not bad:
        return labels, files, []
    keep = torch.ones(len(files), dtype=torch.bool)
    keep[bad] = False
    skipped = [files[i] for i in bad]
    warnings.warn(f"skipped {len(bad)} unreadable image(s), e.g. {skipped[0]}", stacklevel=2)
    return labels[keep], [f for f, k in zip(files, keep.tolist()) if k], skipped


def load_image_folder(root: str, *, img_size: int | None, cache_dir: str | None, mean, std,
                      prefix: str = "imagefolder", in_memory_size: int | None = None,
                      num_classes: int | None = None, skip_bad: bool = False, classes: list[str] | None = None,
                      what: str = "data_dir") -> ImageData:
    """Load ``root/<class>/<images>``.

    In memory when ``in_memory_size`` (the set's fixed native size, e.g. 32 for CIFAR) is given, when
    ``img_size <= MAX_MEMORY_SIDE``, or (no ``img_size``) when the probed files all have max side
    <= ``MAX_MEMORY_SIDE``. A set with an ``in_memory_size`` is decoded and cached at that size, and an
    ``img_size`` other than it resizes the decoded set in memory (``resize_images``; N x 3 x img_size^2 bytes:
    the trainer passes no ``img_size`` and resizes each batch instead); any other set is decoded straight to
    ``img_size``, else to the first image's longer side. Otherwise lazily: ``images=None`` and ``files``.
    ``num_classes`` (when given) is checked against the class folders before decoding, and so is
    ``classes`` (the exact class folders, e.g. those of the training folder for a val folder: a ValueError
    names the missing and extra ones). ``what`` names the folder in errors.
    """
    found, entries, labels = scan_image_folder(root, what)
    if num_classes is not None and len(found) != num_classes:
        raise ValueError(f"{prefix} folder {root} has {len(found)} class folders, expected {num_classes}")
    if classes is not None and found != list(classes):
        raise ValueError(f"{what} {root}: its class folders are not those of the training images "
                         f"({class_mismatch(found, list(classes))}); each split needs the same class folders")
    classes = found
    files = [e[0] for e in entries]
    step = max(1, len(files) // PROBE_FILES)
    probe = []
    for p in files[::step][:PROBE_FILES]:  # header reads: fails early on junk (unless skipping it)
        try:
            probe.append(image_size(p))
        except ValueError:
            if not skip_bad:
                raise
    if not probe:
        raise ValueError(f"{what} {root}: none of the probed images can be read")
    if in_memory_size is not None:
        in_memory, size = True, in_memory_size
    elif img_size is not None:
        in_memory, size = img_size <= MAX_MEMORY_SIDE, img_size
    else:
        in_memory = all(max(s) <= MAX_MEMORY_SIDE for s in probe)
        size = max(probe[0])
    if not in_memory:
        labels, files, skipped = _drop(labels, files, verify_files(files) if skip_bad else [])
        return ImageData(None, labels, classes, mean, std, files=files, skipped=skipped, root=root)
    images, bad = decode_cached(root, entries, size, prefix, cache_dir, skip_bad=skip_bad)
    labels, _, skipped = _drop(labels, files, bad)
    if img_size is not None:
        images = resize_images(images, img_size)  # a set of a fixed native size; no-op otherwise
    return ImageData(images, labels, classes, mean, std, skipped=skipped, root=root)


def load_tiny_imagenet(root: str, split: str, *, img_size: int | None, cache_dir: str | None,
                       mean, std, skip_bad: bool = False) -> ImageData:
    """Tiny-ImageNet-200: ``train/<wnid>/images/*.JPEG``; split "test" is the labelled
    ``val/images`` with ``val/val_annotations.txt``. Labels index the sorted wnids.

    Decoded and cached at the native ``TINY_IMAGENET_SIZE`` (64 px); an ``img_size`` other than that resizes
    the decoded set in memory (``resize_images``), as for CIFAR."""
    check_dir(root)
    wnids_file = os.path.join(root, "wnids.txt")
    train_dir = os.path.join(root, "train")
    check_dir(train_dir, "tiny-imagenet train folder")
    if os.path.isfile(wnids_file):
        with open(wnids_file) as f:
            classes = sorted({line.strip() for line in f if line.strip()})
    else:
        classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not classes:
        raise ValueError(f"tiny-imagenet data_dir {root} lists no classes (wnids.txt / train/)")
    size = TINY_IMAGENET_SIZE
    if split == "train":
        found, entries, labels = scan_image_folder(train_dir)
        if found != classes:
            raise ValueError(f"tiny-imagenet {train_dir} class folders do not match {wnids_file}: "
                             f"{sorted(set(found) ^ set(classes))[:5]}")
        images, bad = decode_cached(train_dir, entries, size, "tiny-imagenet", cache_dir, skip_bad=skip_bad)
        labels, _, skipped = _drop(labels, [e[0] for e in entries], bad)
        images = images if img_size is None else resize_images(images, img_size)
        return ImageData(images, labels, classes, mean, std, skipped=skipped)
    val_dir = os.path.join(root, "val")
    ann = os.path.join(val_dir, "val_annotations.txt")
    if not os.path.isfile(ann):
        raise DatasetNotFoundError(f"tiny-imagenet annotations {ann} do not exist")
    index = {c: i for i, c in enumerate(classes)}
    wnid_of = {}
    with open(ann) as f:
        for n, line in enumerate(f, 1):
            parts = line.split("\t")
            if len(parts) < 2 or parts[1].strip() not in index:
                raise ValueError(f"{ann} line {n}: expected '<file>\\t<wnid>...' with a known wnid, got {line!r}")
            wnid_of[parts[0].strip()] = parts[1].strip()
    entries = _image_entries(os.path.join(val_dir, "images"))
    if not entries:
        raise ValueError(f"tiny-imagenet folder {os.path.join(val_dir, 'images')} has no image files")
    missing = [p for p, _, _ in entries if os.path.basename(p) not in wnid_of]
    if missing:
        raise ValueError(f"{missing[0]} has no label in {ann}")
    labels = torch.tensor([index[wnid_of[os.path.basename(p)]] for p, _, _ in entries], dtype=torch.int64)
    st = os.stat(ann)
    images, bad = decode_cached(val_dir, entries, size, "tiny-imagenet", cache_dir,
                                extra=f"ann={st.st_size}:{st.st_mtime_ns}", skip_bad=skip_bad)
    labels, _, skipped = _drop(labels, [e[0] for e in entries], bad)
    images = images if img_size is None else resize_images(images, img_size)
    return ImageData(images, labels, classes, mean, std, skipped=skipped)
