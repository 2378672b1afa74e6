"""Starting weights for fine-tuning: ``--initial-checkpoint FILE`` and ``--pretrained``.

``initial_state_dict`` reads a file into a state dict of the network: a plain state dict, timm's or
torchvision's (also under a ``state_dict`` / ``model`` / ``model_state_dict`` / ``method`` entry, with DDP's
``module.`` or ``torch.compile``'s ``_orig_mod.`` prefix), a safetensors file (with the optional ``safetensors``
package), or an automix ``last.pt`` / ``best.pt``, whose online network
(``method.model.*``) is taken. ``load_weights`` puts it into a freshly built model by name:

* a tensor of the same name and shape is loaded;
* the classifier head (``methods.heads.find_classifier``: ``fc``, ``head``, ``classifier``, ...) keeps its
  fresh initialisation when its shape differs (another class count) or the file has none;
* BatchNorm's ``num_batches_tracked`` counters the file lacks start at 0 (reported apart: they are step counts,
  not re-initialised weights);
* entries of the state dict that are not tensors (a module's ``_extra_state``, as in ``method.state_dict()`` and
  Lightning checkpoints) are skipped and listed; a network under a prefix (``model.`` in ``method.state_dict()``,
  ``method.model.`` in a Lightning checkpoint of a module holding the method) is found by its names;
* any other missing or differently shaped tensor is a ``ValueError`` listing them: the file is another
  network (or another ``--width``), and a half-loaded network would train silently from a wrong start;
* tensors of the file the model has no place for (an AutoMix checkpoint's EMA encoder and Mix Block, a
  timm checkpoint's ``state_dict_ema``...) are ignored.

The returned ``LoadReport`` lists what was loaded, re-initialised and ignored; the trainer prints it in the
run header. A method built on the model afterwards starts from it: AutoMix's EMA encoder is a copy of the
loaded network, its mix head and Mix Block start fresh (they are not part of the network). Files are read
with ``torch.load(weights_only=True)`` (``checkpoint.read_torch_file``): a file cannot run code when loaded.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..methods.heads import find_classifier
from . import checkpoint as ckpt

# Entries a training script's checkpoint keeps its network's state dict under (timm's train.py: state_dict).
# "method": a method's state_dict() saved beside its optimiser (its network under "model.", found by
# network_prefix).
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "method")
PREFIXES = ("module.", "_orig_mod.")  # DDP's and torch.compile's, around the network's own names


@dataclass
class LoadReport:
    """What ``load_weights`` did, by state-dict key.

    Attributes:
        source: where the weights came from, for messages ("runs/a/best.pt (an automix checkpoint, its
            online network)", "timm:resnet18 (published weights)").
        loaded: keys copied from the file.
        reinitialised: keys that kept the new model's initialisation (the classifier head; counters).
        reinitialised: parameters and buffers that kept the new model's initialisation (the classifier head).
        counters: BatchNorm ``num_batches_tracked`` counters the file lacks, started at 0 (not weights: they only
            count steps, and BatchNorm reads them only without a momentum).
        ignored: keys of the file the model has no place for.
        skipped: entries of the file's state dict that are not tensors (``_extra_state`` of a module that keeps
            one, e.g. a method's generator state in ``method.state_dict()`` or a Lightning checkpoint).
        prefix: the prefix the network's names had in the file (``"model."`` in ``method.state_dict()``), or "".
        classes: (classes in the file's head, classes of the model), or None when the file has no head.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    counters: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    prefix: str = ""
    classes: tuple[int, int] | None = None

    def lines(self) -> list[str]:
        """The report as header lines: counts, then the re-initialised, ignored and skipped keys grouped by module."""
        under = f", the network under {self.prefix!r}" if self.prefix else ""
        out = [f"initial weights from {self.source}{under}: {len(self.loaded)} tensors loaded, "
               f"{len(self.reinitialised)} re-initialised, {len(self.ignored)} ignored"]
        if self.reinitialised:
            why = f" ({self.classes[0]} classes in the file, {self.classes[1]} here)" \
                if self.classes and self.classes[0] != self.classes[1] else ""
            out.append(f"re-initialised{why}: {', '.join(self.reinitialised)}")
        depth = max(self.prefix.count("."), 1)  # under "method.model.": method.model_k.*, method.mix_block.*
        if self.ignored:
            out.append(f"ignored: {group_keys(self.ignored, depth=depth)}")
        if self.skipped:
            out.append(f"skipped (not tensors): {group_keys(self.skipped, depth=depth)}")
        return out


def group_keys(keys: list[str], limit: int = 12, depth: int = 1) -> str:
    """``"model_k.* (62), mix_block.* (6), step"``: keys grouped by their first ``depth`` components, in order.

    Example:
        >>> group_keys(["model_k.a", "model_k.b", "step"])
        'model_k.* (2), step'
        >>> group_keys(["method.model_k.a", "method.mix_block.b"], depth=2)
        'method.model_k.* (1), method.mix_block.* (1)'
    """
    groups: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        head = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        groups[head] = groups.get(head, 0) + 1
    items = [f"{k} ({n})" if n > 1 or k.endswith(".*") else k for k, n in groups.items()]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more groups" if len(items) > limit else "")


def _is_state_dict(obj: Any) -> bool:
    """A mapping of names to tensors, possibly beside other entries (a module's ``_extra_state``): at least one
    tensor, every key a string."""
    return isinstance(obj, dict) and all(isinstance(k, str) for k in obj) and \
        any(isinstance(v, Tensor) for v in obj.values())


def _tensors(state: dict[str, Any]) -> tuple[dict[str, Tensor], list[str]]:
    """(the tensors of a state dict, without DDP's / compile's prefix; the keys of its other entries)."""
    skipped = [k for k, v in state.items() if not isinstance(v, Tensor)]
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors, skipped


def network_prefix(state: dict[str, Tensor], names: list[str]) -> str:
    """The prefix under which ``state`` holds the network whose state-dict keys are ``names``.

    ``""`` when the names are there as they are; ``"model."`` for a method's ``state_dict()``; ``"method.model."``
    for a Lightning module holding the method. The prefix that covers the most of ``names`` wins; of prefixes
    that cover as many, the first in the file's order (a method registers its online network before its EMA
    copy, ``model_k.``).

    Example:
        >>> import torch
        >>> t = torch.zeros(1)
        >>> network_prefix({"model.fc.weight": t, "model_k.fc.weight": t, "_extra_state": t}, ["fc.weight"])
        'model.'
    """
    wanted = set(names)
    counts: dict[str, int] = {}
    for key in state:
        for i in [0] + [j + 1 for j, c in enumerate(key) if c == "."]:
            if key[i:] in wanted:
                counts[key[:i]] = counts.get(key[:i], 0) + 1
    if not counts:
        return ""
    best = max(counts.values())
    if counts.get("", 0) == best:
        return ""
    return next(p for p, n in counts.items() if n == best)  # dicts keep the file's order


def initial_state_dict(path: str | Path, flag: str = "--initial-checkpoint") -> tuple[dict[str, Tensor], str,
                                                                                      list[str], list[str]]:
    """(the network's state dict, a description of the file, keys of the file left out, keys of the state dict
    skipped as not tensors) from ``path``.

    A state dict may hold entries that are not tensors (a module's ``_extra_state``: ``method.state_dict()`` of a
    method, Lightning checkpoints of a module holding one): they are skipped and listed. Its tensors may sit under
    a prefix (``model.``, ``method.model.``): ``load_weights`` finds it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming ``flag`` and the file: not a ``torch.save`` file, truncated or corrupt, unsafe to load,
            or holding no tensors by name (the message says what it holds instead).
    """
    path = Path(path)
    if path.is_dir():  # a run folder: its best network, as automix eval and show read one
        path = ckpt.find(path, what=flag)
    if path.is_file() and _safetensors_file(path):
        tensors, skipped = _tensors(_read_safetensors(path, flag))
        return tensors, f"{path} (a safetensors file)", [], skipped
    # argparse.Namespace: timm's train.py saves its arguments beside the weights; a plain attribute bag.
    obj = ckpt.read_torch_file(path, flag, safe_globals=(argparse.Namespace,))
    if isinstance(obj, dict) and obj.get("format") == ckpt.FORMAT:
        method = obj.get("method")
        if not isinstance(method, dict):
            raise ValueError(f"{flag} {path}: an automix checkpoint without its 'method' weights")
        model = {k[len("model."):]: v for k, v in method.items() if k.startswith("model.")}
        left = [k for k in method if not k.startswith("model.")]
        if obj.get("model_ema") is not None:
            left += [f"model_ema.{k}" for k in obj["model_ema"]]
        model, skipped = _tensors(model)
        return (model, f"{path} (the online network of an automix checkpoint, method {obj.get('method_name')!r})",
                left, skipped)
    if isinstance(obj, dict):
        # A training script's checkpoint first: its other entries (epoch, optimiser, ...) are not the network.
        for key in WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                left = [f"{k}.*" for k, v in obj.items() if k != key and _is_state_dict(v)]
                tensors, skipped = _tensors(obj[key])
                return tensors, f"{path} (its {key!r} state dict)", left, skipped
        if _is_state_dict(obj):
            tensors, skipped = _tensors(obj)
            return tensors, f"{path} (a state dict)", [], skipped
        shown = ", ".join(repr(k) for k in list(obj)[:8])
        raise ValueError(f"{flag} {path} holds no network weights: a dict with keys {shown} and no tensors "
                         f"(expected tensors by name, or a state dict under {' / '.join(map(repr, WRAPPER_KEYS))})")
    raise ValueError(f"{flag} {path} holds no network weights: it holds a {type(obj).__name__}, not a state dict")


def _safetensors_file(path: Path) -> bool:
    if path.suffix.lower() == ".safetensors":
        return True
    with path.open("rb") as f:
        return ckpt.is_safetensors(f.read(16))


def _read_safetensors(path: Path, flag: str) -> dict[str, Tensor]:
    """The tensors of a safetensors file (Hugging Face's format: a JSON header, then raw tensor bytes; it cannot
    hold code), read with the optional ``safetensors`` package.

    Raises:
        ValueError: naming ``flag`` and the file: the package is not installed, or the file cannot be read.
    """
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError(f"{flag} {path} is a safetensors file; reading it needs the safetensors package (pip "
                         "install safetensors), or give a torch.save file") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors' own error type: a header or data that does not add up
        raise ValueError(f"{flag} {path} is not a readable safetensors file ({path.stat().st_size:,} bytes: "
                         f"{exc}); copy or write it again") from None


def load_weights(model: nn.Module, state: dict[str, Tensor], source: str, *, ignored: list[str] | None = None,
                 skipped: list[str] | None = None, flag: str = "--initial-checkpoint") -> LoadReport:
    """Copy ``state`` into ``model`` by name; the classifier head is kept fresh where it does not fit.

    The network's names may carry a prefix in ``state`` (``network_prefix``: ``model.`` in a method's state dict);
    the tensors outside it are ignored.

    Args:
        model: a freshly built network (its head sized for this run's classes).
        state: tensors by state-dict name (``initial_state_dict``, ``models.external.pretrained_state_dict``).
        source: what ``state`` came from, for the report and errors.
        ignored: keys of the source already left out (listed as ignored).
        skipped: keys of the source's state dict that are not tensors (listed as skipped).
        flag: the option named in errors.

    Returns:
        a ``LoadReport``.

    Raises:
        ValueError: tensors outside the head that are missing from ``state`` or shaped differently (each
            named with both shapes), or a ``state`` that shares no name with the model.
    """
    own = model.state_dict()
    try:
        head = find_classifier(model)
    except ValueError:
        head = None
    head_keys = {k for k in own if head is not None and k.startswith(head + ".")}
    prefix = network_prefix(state, list(own))
    outside = [k for k in state if not k.startswith(prefix)]
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    report = LoadReport(source, ignored=list(ignored or []) + outside, skipped=list(skipped or []), prefix=prefix)
    new, wrong, missing = {}, [], []
    # The first convolution reads the images: a differing second dim there is another number of input channels.
    stem = next((k for k, v in own.items() if v.dim() == 4), None)
    channels: tuple[int, int] | None = None
    for key, mine in own.items():
        theirs = state.get(key)
        if theirs is not None and tuple(theirs.shape) == tuple(mine.shape):
            new[key] = theirs
            report.loaded.append(key)
        elif theirs is None and key.endswith("num_batches_tracked"):  # a step counter, not a weight
            report.counters.append(key)
        elif key in head_keys:
            report.reinitialised.append(key)
        elif theirs is None:
            missing.append(key)
        else:
            wrong.append(f"{key} is {list(theirs.shape)} there, {list(mine.shape)} here")
            if key == stem and theirs.dim() == 4 and theirs.shape[0] == mine.shape[0] \
                    and theirs.shape[2:] == mine.shape[2:]:
                channels = (int(theirs.shape[1]), int(mine.shape[1]))
    report.ignored += [prefix + k for k in state if k not in own]
    if not report.loaded:
        raise ValueError(f"{flag}: {source} shares no tensor names with model {type(model).__name__} (the file "
                         f"has {_sample(list(state))}; the model {_sample(list(own))}): weights of another network")
    if wrong or missing:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) of another shape: {'; '.join(wrong[:4])}"
                         + (f"; and {len(wrong) - 4} more" if len(wrong) > 4 else ""))
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the file: {_sample(missing)}")
        hint = "Is it another network, --width or --widen?"
        if channels is not None:
            hint = (f"The file's network takes {channels[0]} input channel(s), this one {channels[1]} (this run's "
                    "images): a grayscale network for RGB images, or the other way round?"
                    + (f" Else: {hint}" if len(wrong) > 1 or missing else ""))
        raise ValueError(f"{flag}: {source} does not fit model {type(model).__name__} outside its classifier head "
                         f"({head or 'none found'}): {'. '.join(parts)}. {hint}")
    weight = f"{head}.weight"
    if weight in own and weight in state and state[weight].dim() >= 1:
        report.classes = (int(state[weight].shape[0]), int(own[weight].shape[0]))
    model.load_state_dict({**own, **new})
    return report


def _sample(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_initial_weights(model: nn.Module, model_name: str, pretrained: bool,
                         initial_checkpoint: str | None) -> LoadReport | None:
    """The trainer's entry: ``--pretrained`` or ``--initial-checkpoint`` into ``model`` (None when neither).

    Raises:
        FileNotFoundError: naming ``--pretrained`` and the model when no weights are available (see
            ``models.external.pretrained_state_dict``), or ``--initial-checkpoint`` and a missing file.
        ValueError: a file that is not a state dict or does not fit the model (``load_weights``).
    """
    if initial_checkpoint is not None:
        state, source, left, skipped = initial_state_dict(initial_checkpoint)
        return load_weights(model, state, source, ignored=left, skipped=skipped)
    if pretrained:
        from ..models.external import pretrained_state_dict

        try:
            state = pretrained_state_dict(model_name)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--pretrained: {err}; or give --initial-checkpoint FILE") from None
        return load_weights(model, state, f"{model_name} (published weights)", flag="--pretrained")
    return None

