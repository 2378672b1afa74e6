"""Checkpoints that survive a crash: atomic writes, safe loads, and every random state.

* ``save`` writes to a temporary file in the same folder, flushes it to disk, then renames it over
  the target (``os.replace`` is atomic), so a kill mid-save leaves the previous file intact and
  never a half-written one under the real name.
* ``load`` uses ``torch.load(weights_only=True)``: a checkpoint cannot run code when loaded. A file
  that is not a ``torch.save`` file at all (a YAML, PNG, CSV ...) is named as what it is, and torch's
  advice to retry with ``weights_only=False`` is never passed on: it would run the file's code. A torch.save
  file cut short or damaged is called truncated or corrupt (not unsafe), with its path and size.
* ``find`` accepts a run folder for a checkpoint (its ``best.pt`` or ``last.pt``).
* ``capture_rng`` / ``restore_rng`` cover python, numpy, torch (CPU and CUDA) global generators, in
  plain types that ``weights_only`` accepts.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "automix-checkpoint-1"  # the "format" entry of every checkpoint the trainer writes


def save(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def find(path: str | Path, names: tuple[str, ...] = ("best.pt", "last.pt"), what: str = "checkpoint") -> Path:
    """``path`` itself, or for a run folder the first of ``names`` it holds.

    Raises:
        FileNotFoundError: a folder holding none of ``names``, named with ``what`` (the option that gave it).
    """
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{what}: the folder {path} holds no {' or '.join(names)} (not a run folder, "
                                "or its run stopped before its first checkpoint)")
    return path


_ZIP, _LEGACY = b"PK\x03\x04", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"  # torch.save's two formats
_KINDS = {".yaml": "a YAML file", ".yml": "a YAML file", ".csv": "a CSV file", ".json": "a JSON file",
          ".txt": "a text file", ".md": "a text file", ".log": "a text file", ".py": "a Python file"}
_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
          b"\x93NUMPY": "a NumPy .npy file", b"\x80": "a plain pickle"}


def _not_torch_file(path: Path) -> str | None:
    """What ``path`` is when it is not a ``torch.save`` file (None when it looks like one)."""
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith((_ZIP, _LEGACY)):
        return None
    if not head:
        return "an empty file"
    if is_safetensors(head):
        return "a safetensors file"
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if path.suffix.lower() in _KINDS:
        return _KINDS[path.suffix.lower()]
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "a file of another format"


def is_safetensors(head: bytes) -> bool:
    """Whether a file's first bytes are a safetensors header: its length (8 bytes, little-endian), then JSON."""
    return len(head) > 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 100_000_000


def _torch_reason(exc: Exception) -> str:
    """torch's reason without its advice (retrying with ``weights_only=False`` would run the file's code)."""
    keep = [p.strip() for p in str(exc).split("\n\n") if p.strip() and "weights_only" not in p
            and not p.strip().startswith(("Check the documentation", "Please file an issue"))]
    text = " ".join(" ".join(keep).split()) or type(exc).__name__
    return text.split(". ")[0].rstrip(".")


def read_torch_file(path: str | Path, what: str = "checkpoint", map_location: Any = "cpu",
                    safe_globals: tuple[Any, ...] = ()) -> Any:
    """Whatever ``torch.save`` wrote to ``path``, loaded with ``weights_only=True``.

    ``what`` names the file in errors (``"checkpoint"``, ``"--initial-checkpoint"``); ``safe_globals``
    admits a few more plain classes (``torch.serialization.safe_globals``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a folder, a file that is not a ``torch.save`` file (named as what it is), one that is
            truncated or corrupt, or one that cannot be loaded safely (it holds other objects than tensors and
            plain types; torch's reason, without its advice to load unsafely).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a last.pt / best.pt file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    kind = _not_torch_file(path)
    if kind is not None:
        raise ValueError(f"{what} {path} is not a checkpoint: it is {kind}, not a torch.save file")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if _refused(exc):  # a complete file holding more than tensors and plain types: loading it would run code
            found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(exc))
            held = f"{found.group(1)}, not only tensors and plain types" if found else \
                "objects other than tensors and plain types"
            raise ValueError(f"{what} {path} cannot be loaded safely: it holds {held} (loading it would run "
                             "its code)") from None
        # Anything else torch cannot read in a file that starts as a torch.save file: cut short (a copy or
        # download that stopped) or damaged. Not a safety question, and loading it unsafely would not help.
        raise ValueError(f"{what} {path} is truncated or corrupt ({path.stat().st_size:,} bytes; torch.load: "
                         f"{_torch_reason(exc)}); copy or write it again") from None


def _refused(exc: Exception) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused what a complete file holds (not a damaged file)."""
    import pickle

    return isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)


def load(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """An automix checkpoint (a dict with a ``format`` key), read safely (``read_torch_file``)."""
    path = Path(path)
    try:
        state = read_torch_file(path, "checkpoint", map_location)
    except ValueError as exc:
        if "not a torch.save file" in str(exc):
            raise ValueError(f"{exc}; give a last.pt / best.pt file or a run folder") from None
        raise
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"checkpoint {path} is not an automix checkpoint (no 'format' key)")
    return state


def capture_rng() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]
    except ImportError:
        pass
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
