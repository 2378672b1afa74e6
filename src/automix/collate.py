"""``MixCollate``: mixing inside DataLoader workers, as a ``collate_fn``.

torchvision's recipe mixes in ``collate_fn`` (``lambda batch: mixup(*default_collate(batch))``) and timm ships
``FastCollateMixup`` for uint8 batches; ``MixCollate`` does the same for every input-space mixer of automix::

    from automix.losses import soft_target_cross_entropy

    collate = automix.MixCollate(automix.create_mixer("cutmix", alpha=1.0), num_classes=10)
    loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=4, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    for x, y in loader:        # x: mixed float32 [B, C, H, W]; y: float32 soft targets [B, 10]
        loss = soft_target_cross_entropy(model(x.to(device)), y.to(device))

The mixing runs in the worker processes, beside decoding, so the training process only moves the batch.

Randomness. A worker is a copy of the main process, so a mixer's random stream would be copied too: every
worker would draw the same lambdas and boxes, and draw them again each epoch (non-persistent workers are new
copies of the same state). Both of a mixer's sources are made to differ per worker and per epoch:

* no ``generator=`` (the default): the mixer draws from torch's global generator, which PyTorch seeds in
  each worker from the loader's base seed plus the worker id; the base seed is drawn anew each epoch from the
  loader's ``generator=`` (or torch's global generator), so a loader with a seeded ``generator=`` (or a
  ``torch.manual_seed`` before the loop) repeats exactly;
* ``create_mixer(..., generator=torch.Generator().manual_seed(s))``: each worker re-seeds its copy of that
  generator once, from ``s``, the worker id and the worker's per-epoch seed
  (``BaseMixer._seed_for_worker``), so the same holds and the mixer's own seed still matters.

With ``persistent_workers=True`` the workers (and their streams) live across epochs; each stream goes on
where it stopped, so epochs differ as well. In the main process (``num_workers=0``) the mixer draws as it
would in a training loop. Every start method works (``multiprocessing_context="spawn"`` / ``"forkserver"`` as well as
Linux's default ``fork``): a mixer pickles its generator as its state bytes (``BaseMixer.__getstate__``; a
``torch.Generator`` pickled as it is kills spawned workers with "unable to resize file"), and the per-worker
re-seeding above makes spawned workers draw exactly what forked ones do.

Model-aware mixers (PuzzleMix, SnapMix, AttentiveMix, GuidedMixup's gradient guide) read the model, which a
worker does not have: they are refused here and train as methods (``automix.create_method``).
"""

from __future__ import annotations

import copy
import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ._checks import check_positive_int, check_type
from .mixers import BaseMixer, create_mixer

# PIL modes kept as they are; other 8-bit modes ("P", "RGBA", "CMYK", ...) become RGB (alpha is dropped).
_PIL_KEEP = ("L", "RGB")
_PIL_TO_RGB = ("1", "P", "PA", "LA", "La", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


class MixCollate:
    """A ``collate_fn`` that stacks ``(image, label)`` samples and mixes the batch with an input-space mixer.

    Args:
        mixer: a mixer (``automix.create_mixer``) or a registered mixer name (built with defaults and
            ``num_classes``). Its ``generator=``, if any, is re-seeded per worker and epoch (module docstring).
        num_classes: number of classes, needed for class-index labels unless the mixer was built with it. When
            the mixer lacks it, a shallow copy of the mixer gets it (the caller's mixer is not changed).
        mean, std: per-channel normalisation applied after the conversion to float and before mixing, e.g.
            ``(0.4914, 0.4822, 0.4465)`` (values in the units of the converted images: [0, 1] for uint8 and
            PIL input), or one number for every channel (``mean=0.5, std=0.25``). ``None`` (default): no
            normalisation. Blend mixers commute with it, so normalising later on the device (as timm's prefetcher
            does) gives the same batch; SaliencyMix reads the image content, so give it the images it would see in
            training.
        keys: ``(image_key, label_key)`` for samples that are mappings (a Hugging Face ``datasets`` row:
            ``("pixel_values", "label")``); ``None``: samples are ``(image, label)`` pairs.
        dtype: floating dtype of the returned images (float32).
        spatial_dims: the samples' spatial dims: 2 (images, the default), 1 (signals ``[C, T]``) or 3 (volumes
            ``[C, D, H, W]``); it must be one the mixer takes.

    A sample's image is a tensor ``[C, *spatial]`` (``[C, H, W]`` for images; uint8, scaled to [0, 1], or any
    float dtype) or a ``PIL.Image`` (8-bit modes; ``L`` gives 1 channel, ``RGB`` 3, other 8-bit modes are
    converted to RGB). A tensor without a channel dim (``[H, W]``, a grayscale image) gets one: ``[1, H, W]``.
    A tensor ``[H, W, C]`` with ``C`` in (1, 3, 4) and ``H`` above 4 is refused as channels-last (a decoded
    array's layout; ``permute(2, 0, 1)`` it). All samples of a batch must have the same shape. A label is an int
    or 0-dim integer tensor (a class index), or a float or float tensor (a regression value; one-hot, soft,
    multi-label or regression target), the same kind and shape for every sample of a batch. With ``num_classes``
    (given, or the mixer's) a float target must end in a dim of ``num_classes`` (``[num_classes]`` for one-hot or
    soft targets); a float scalar is refused (a class index given as a float would be mixed as a number).

    Returns ``(x, y)`` from ``__call__``: ``x`` the mixed batch ``[B, C, *spatial]`` in ``dtype`` and ``y``
    the mixed targets, float32 (``[B, num_classes]`` for class indices; float targets keep their shape).

    Raises:
        TypeError: ``mixer`` is not a mixer or a name; ``mean`` / ``std`` not numbers; at call time a sample that
            is not a pair / mapping, an image that is neither a tensor nor a PIL image, an integer image that is
            not uint8, a 16- or 32-bit PIL mode, a label that is neither a class index nor a float target (a
            string: map class names to indices in the dataset).
        ValueError: a model-aware mixer (named, with what it reads), a ``num_classes`` that differs from the
            mixer's, ``mean`` / ``std`` of different lengths or a zero ``std``, a ``dtype`` that is not
            floating point, ``spatial_dims`` the mixer does not take; at call time an empty batch, samples of
            different shapes or label kinds (the first two named), an image of the wrong number of dims or
            channels-last, a float label that does not fit ``num_classes`` (naming it and the label's shape).

    Example:
        >>> import torch, automix
        >>> collate = automix.MixCollate(automix.create_mixer("mixup", alpha=0.4), num_classes=3)
        >>> samples = [(torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8), i % 3) for i in range(4)]
        >>> x, y = collate(samples)
        >>> x.dtype, tuple(x.shape), tuple(y.shape), bool(torch.allclose(y.sum(1), torch.ones(4)))
        (torch.float32, (4, 3, 8, 8), (4, 3), True)
    """

    def __init__(self, mixer: BaseMixer | str, num_classes: int | None = None, *,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 keys: tuple[str, str] | None = None, dtype: torch.dtype = torch.float32,
                 spatial_dims: int = 2) -> None:
        if num_classes is not None:
            num_classes = check_positive_int("num_classes", num_classes)
        if isinstance(mixer, str):
            mixer = create_mixer(mixer, num_classes=num_classes)
        check_type("mixer", mixer, BaseMixer, "a mixer (automix.create_mixer) or a mixer name")
        needs = mixer.needs or mixer.reweights
        if needs is not None:
            raise ValueError(f"mixer {mixer.name!r} reads the model's {needs!r} context, which a collate_fn in a "
                             f"DataLoader worker does not have; train it as a method: "
                             f"automix.create_method({mixer.name!r}, model, ...)")
        if num_classes is not None and mixer.num_classes is None:
            mixer = copy.copy(mixer)
            mixer.num_classes = num_classes
        elif num_classes is not None and num_classes != mixer.num_classes:
            raise ValueError(f"num_classes {num_classes} differs from the mixer's num_classes {mixer.num_classes}; "
                             "give it once")
        self.mixer = mixer
        self.num_classes = mixer.num_classes
        if (mean is None) != (std is None):
            raise ValueError(f"mean and std go together, got mean={mean!r}, std={std!r}")
        self.mean = None if mean is None else _per_channel("mean", mean)
        self.std = None if std is None else _per_channel("std", std)
        if self.mean is not None and 0 in (self.mean.ndim, self.std.ndim):  # one number: for every channel
            self.mean, self.std = (t.contiguous() for t in torch.broadcast_tensors(self.mean, self.std))
        if self.mean is not None and (self.mean.shape != self.std.shape or not bool((self.std != 0).all())):
            raise ValueError(f"mean and std must have one non-zero std per channel, got mean={mean!r}, std={std!r}")
        check_type("spatial_dims", spatial_dims, int, "1, 2 or 3")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1 (signals), 2 (images) or 3 (volumes), got {spatial_dims!r}")
        if mixer.spatial and spatial_dims not in mixer.spatial_dims:
            raise ValueError(f"spatial_dims {spatial_dims} is not one mixer {mixer.name!r} takes "
                             f"({list(mixer.spatial_dims)})")
        self.spatial_dims = spatial_dims
        if keys is not None and (not isinstance(keys, (tuple, list)) or len(keys) != 2
                                 or not all(isinstance(k, str) for k in keys)):
            raise TypeError(f"keys must be (image_key, label_key), two strings, got {keys!r}")
        self.keys = None if keys is None else tuple(keys)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.dtype = dtype

    def __repr__(self) -> str:
        norm = "" if self.mean is None else f", mean={self.mean.tolist()}, std={self.std.tolist()}"
        keys = "" if self.keys is None else f", keys={self.keys!r}"
        dims = "" if self.spatial_dims == 2 else f", spatial_dims={self.spatial_dims}"
        return f"MixCollate({self.mixer!r}, num_classes={self.num_classes}{norm}{keys}{dims})"

    def __call__(self, samples: Sequence[Any]) -> tuple[Tensor, Tensor]:
        x, y = self.stack(samples)
        out = self.mixer(x, y)
        return out.x, out.y

    def stack(self, samples: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """The unmixed batch: images ``[B, C, *spatial]`` in ``dtype`` (normalised when asked) and labels
        (long ``[B]`` for class indices, float32 otherwise). A validation loader can use it as its
        ``collate_fn`` (``collate.stack``) to get the same conversion without the mixing."""
        if not isinstance(samples, Sequence) or len(samples) == 0:
            raise ValueError(f"samples must be a non-empty list of (image, label), got {samples!r}")
        images, labels = [], []
        for i, sample in enumerate(samples):
            image, label = self._split(i, sample)
            images.append(self._image(i, image))
            labels.append(label)
        first = images[0].shape
        for i, image in enumerate(images):
            if image.shape != first:
                if image.shape[1:] == first[1:]:  # the size agrees: one grey (or bilevel) image among colour ones
                    raise ValueError(f"samples[{i}] has {image.shape[0]} channel(s) (shape {tuple(image.shape)}) but "
                                     f"samples[0] has {first[0]} ({tuple(first)}); give every image the same "
                                     "channels in the dataset's transform (e.g. PIL's .convert('RGB'))")
                raise ValueError(f"samples[{i}] has image shape {tuple(image.shape)} but samples[0] has "
                                 f"{tuple(first)}; resize or crop to one size in the dataset's transform")
        x = torch.stack(images)
        if self.mean is not None:
            if x.ndim < 2 or self.mean.numel() not in (1, x.shape[1]):  # one number: every channel
                raise ValueError(f"mean and std have {self.mean.numel()} channels but the images have shape "
                                 f"{tuple(first)}")
            shape = (1, -1) + (1,) * (x.ndim - 2)
            x = (x - self.mean.to(x.dtype).view(shape)) / self.std.to(x.dtype).view(shape)
        return x, self._labels(labels)

    def _labels(self, labels: list[Any]) -> Tensor:
        """Long [B] class indices, or float32 targets [B, ...]; one kind and shape for every sample. With
        ``num_classes`` set, a float target is a per-class vector ``[num_classes]`` (one-hot, soft, multi-label):
        a float scalar (a class index given as a float, or a regression value) or a vector of another width would
        be mixed as it is, against classes it does not have."""
        kinds = [_label_kind(i, label) for i, label in enumerate(labels)]
        for i, (kind, shape) in enumerate(kinds):
            if (kind, shape) != kinds[0]:
                what = {"index": "a class index", "target": "a float target"}
                raise ValueError(f"samples[{i}] has {what[kind]} label of shape {shape} ({_shown(labels[i])}) but "
                                 f"samples[0] {what[kinds[0][0]]} of shape {kinds[0][1]} ({_shown(labels[0])}); give "
                                 "every label as class indices, or every one as float targets of one shape")
        if kinds[0][0] == "index":
            y = torch.tensor([int(label) for label in labels], dtype=torch.long)
            if self.num_classes is not None:  # the mixer checks the batch too, but cannot say which sample
                bad = ((y < 0) | (y >= self.num_classes)).nonzero().flatten()
                if bad.numel():
                    i = int(bad[0])
                    raise ValueError(f"samples[{i}] label is class {int(y[i])}, outside [0, num_classes="
                                     f"{self.num_classes})")
            return y
        shape = kinds[0][1]
        if self.num_classes is not None and (len(shape) == 0 or shape[-1] != self.num_classes):
            what = "a float scalar" if len(shape) == 0 else f"a float target of shape {shape}"
            raise ValueError(f"samples[0] label is {what} ({_shown(labels[0])}) but num_classes is "
                             f"{self.num_classes}: give class indices as ints (or 0-dim integer tensors), or "
                             f"one-hot / soft / multi-label targets of shape ({self.num_classes},); regression "
                             "values go to a MixCollate without num_classes")
        return torch.stack([torch.as_tensor(label).float() for label in labels])

    def _split(self, i: int, sample: Any) -> tuple[Any, Any]:
        if self.keys is not None:
            if not isinstance(sample, Mapping):
                raise TypeError(f"samples[{i}] must be a mapping with keys {self.keys!r} (keys=), got "
                                f"{type(sample).__name__}")
            missing = [k for k in self.keys if k not in sample]
            if missing:
                raise ValueError(f"samples[{i}] lacks key(s) {missing} (keys={self.keys!r}); it has {sorted(sample)}")
            return sample[self.keys[0]], sample[self.keys[1]]
        if isinstance(sample, Mapping) or not isinstance(sample, Sequence) or len(sample) != 2:
            hint = " (give keys=(image_key, label_key) for mappings)" if isinstance(sample, Mapping) else ""
            raise TypeError(f"samples[{i}] must be an (image, label) pair, got {type(sample).__name__}{hint}")
        return sample[0], sample[1]

    def _image(self, i: int, image: Any) -> Tensor:
        image = self._from_pil(i, image)
        if not isinstance(image, Tensor):
            hint = ""
            if type(image).__name__ == "ndarray":
                shape = tuple(getattr(image, "shape", ()))
                channels_first = len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)
                hint = (" (torch.from_numpy(a) for a [C, H, W] array)" if channels_first else
                        " (torch.from_numpy(a).permute(2, 0, 1) for an [H, W, C] array)")
            raise TypeError(f"samples[{i}] image must be a tensor [C, H, W] or a PIL image, got "
                            f"{type(image).__name__}{hint}")
        dims = self.spatial_dims
        if image.ndim == dims:  # no channel dim: a grayscale image [H, W] (a mono signal [T], a volume [D, H, W])
            image = image.unsqueeze(0)
        elif image.ndim != dims + 1:
            raise ValueError(f"samples[{i}] image has shape {tuple(image.shape)}; MixCollate takes "
                             f"{_LAYOUTS[dims]} (spatial_dims={dims})")
        if dims == 2 and image.shape[-1] in (1, 3, 4) and image.shape[0] > 4:
            raise ValueError(f"samples[{i}] image has shape {tuple(image.shape)}, which looks channels-last [H, W, C]; "
                             f"MixCollate takes [C, H, W]: permute(2, 0, 1) it in the dataset's transform (or give a "
                             f"PIL image)")
        if image.dtype == torch.uint8:
            return image.to(self.dtype).div_(255.0)  # torchvision's ToDtype(scale=True): [0, 255] -> [0, 1]
        if not image.is_floating_point():
            raise TypeError(f"samples[{i}] image must be uint8 (0-255) or floating point, got dtype {image.dtype}")
        return image.to(self.dtype)

    @staticmethod
    def _from_pil(i: int, image: Any) -> Any:
        pil = sys.modules.get("PIL.Image")  # not imported: no sample can be a PIL image
        if pil is None or not isinstance(image, pil.Image):
            return image
        if image.mode in _PIL_TO_RGB:
            image = image.convert("RGB")
        elif image.mode not in _PIL_KEEP:
            raise TypeError(f"samples[{i}] is a PIL image of mode {image.mode!r}; MixCollate takes 8-bit modes "
                            "(L, RGB, RGBA, P, ...): convert it in the dataset's transform")
        width, height = image.size
        channels = len(image.getbands())
        hwc = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(height, width, channels)
        return hwc.permute(2, 0, 1).contiguous()


_LAYOUTS = {1: "[C, T] or [T]", 2: "[C, H, W] or [H, W]", 3: "[C, D, H, W] or [D, H, W]"}


def _per_channel(name: str, values: Any) -> Tensor:
    """``mean`` / ``std`` as a float tensor: [C] for a sequence of numbers or a 1-D tensor, 0-dim for one number (for
    every channel)."""
    if isinstance(values, Tensor):
        values = values.tolist()
    if isinstance(values, numbers.Real) and not isinstance(values, bool):
        return torch.tensor(float(values))
    if not isinstance(values, Sequence) or isinstance(values, str) or not values or \
            not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be a number or one number per channel, got {values!r}")
    return torch.tensor([float(v) for v in values])


def _label_kind(i: int, label: Any) -> tuple[str, tuple[int, ...]]:
    """``("index", ())`` for a class index (an int, a 0-dim integer tensor), ``("target", shape)`` for a float target
    (a float, a float tensor); anything else is a ``TypeError`` naming the sample."""
    if isinstance(label, Tensor):
        if label.is_floating_point():
            return "target", tuple(label.shape)
        if label.ndim == 0 and label.dtype != torch.bool:
            return "index", ()
    elif isinstance(label, bool):
        pass  # a bool is an int to Python, but neither a class nor a target here
    elif isinstance(label, numbers.Integral):  # numpy's integers too
        return "index", ()
    elif isinstance(label, numbers.Real):
        return "target", ()
    raise TypeError(f"samples[{i}] label must be a class index (an int or a 0-dim integer tensor) or a float target "
                    f"(a float or a float tensor), got {_shown(label)}"
                    + ("; map class names to indices in the dataset" if isinstance(label, str) else ""))


def _shown(label: Any) -> str:
    if isinstance(label, Tensor):
        return f"tensor of dtype {label.dtype} and shape {tuple(label.shape)}"
    return f"{type(label).__name__} {label!r}"


__all__ = ["MixCollate"]
