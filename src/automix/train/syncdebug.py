"""``--sync-debug warn|error``: find host synchronisations inside the training step (CUDA only).

A host synchronisation in the hot path (``.item()``, ``float(t)``, ``bool(t)``, ``if t:``, a device-to-host copy,
``nonzero``, a blocking host-to-device copy) makes the CPU wait until the GPU has finished everything queued, so
the next kernels are not queued while it works. ``torch.cuda.set_sync_debug_mode`` makes CUDA report each such
call; ``SyncCheck`` turns it on around the training step only (fetching the batch, then forward, backward,
optimiser step and ``after_step``), not around logging and evaluation, which synchronise on purpose.

- ``warn``: each synchronisation is counted under the source line that made it, and ``metrics.json`` gets
  ``"sync_debug": {"mode", "device", "checked", "steps", "syncs", "where": {"<region>: <file>:<line>": count}}``.
- ``error``: the first one raises torch's ``RuntimeError`` with its traceback.

On any other device there is nothing to check: the option is accepted, the steps are counted, ``checked`` is
false and ``syncs`` 0.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

MODES = ("warn", "error")
SYNC_TEXT = "called a synchronizing CUDA operation"  # torch's warning (c10/cuda/CUDAFunctions.cpp)


def _short(filename: str) -> str:
    """``automix/train/engine.py`` for a file of the package, else the last two parts of the path."""
    parts = Path(filename).parts
    return "/".join(parts[parts.index("automix"):] if "automix" in parts else parts[-2:])


class SyncCheck:
    """Counts (``warn``) or refuses (``error``) host synchronisations inside ``region`` blocks on a CUDA device.

    Args:
        mode: ``None`` (off: regions cost nothing), ``"warn"`` or ``"error"``.
        device: the training device; only ``cuda`` is checked.

    Raises:
        ValueError: ``mode`` is none of the above, named with its value.
    """

    def __init__(self, mode: str | None, device: torch.device) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"sync_debug must be one of {list(MODES)} or unset, got {mode!r}")
        self.mode, self.device = mode, torch.device(device)
        self.checked = mode is not None and self.device.type == "cuda"
        self.steps = 0
        self.where: dict[str, int] = {}

    @contextlib.contextmanager
    def region(self, name: str) -> Iterator[None]:
        """Check the block; ``name`` ("batch", "step") prefixes each source line counted, "step" counts a step."""
        if self.mode is None:
            yield
            return
        self.steps += name == "step"
        if not self.checked:
            yield
            return
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")  # every occurrence, not once per line
            torch.cuda.set_sync_debug_mode(self.mode)
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        for w in caught:
            if SYNC_TEXT in str(w.message):
                key = f"{name}: {_short(w.filename)}:{w.lineno}"
                self.where[key] = self.where.get(key, 0) + 1
            else:  # someone else's warning, caught by the recording: passed on as it came
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)

    def record(self) -> dict[str, Any]:
        """What ``metrics.json`` keeps under ``sync_debug`` (this session's steps only)."""
        return {"mode": self.mode, "device": str(self.device), "checked": self.checked, "steps": self.steps,
                "syncs": sum(self.where.values()),
                "where": dict(sorted(self.where.items(), key=lambda kv: (-kv[1], kv[0])))}
