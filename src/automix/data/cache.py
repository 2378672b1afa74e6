"""The decoded-image cache: one ``torch.save`` file per (folder, decode settings, folder contents).

Location: ``cache_dir`` argument, else ``$AUTOMIX_CACHE``, else ``~/.cache/automix``. A file is
``<prefix>-<key>.pt``, holding ``{"format", "images" (uint8 [N, 3, S, S]), "labels" (int64 [N]),
"classes" (list[str]), "source" (str)}``. The key hashes the folder's absolute path, the decode
settings and every file's relative path, size and mtime, so adding, removing, replacing or
touching a file gives a new key and a fresh decode (old files are left for the user to delete).
Writes go to a temp file in the same directory and are renamed into place with ``os.replace``,
so a crash never leaves a half-written file under the real name. Loads use
``torch.load(weights_only=True)``: a cache file cannot run code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings

import torch

CACHE_FORMAT = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> str:
    """The cache directory in effect (not created here)."""
    if cache_dir is not None:
        if not isinstance(cache_dir, (str, os.PathLike)):
            raise TypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__} {cache_dir!r}")
        return os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
    env = os.environ.get("AUTOMIX_CACHE")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(os.path.expanduser("~"), ".cache", "automix")


def folder_key(root: str, entries: list[tuple[str, int, int]], settings: str) -> str:
    """Hex key of a folder's contents: ``entries`` are (path, size, mtime_ns) of every file used."""
    h = hashlib.sha256()
    h.update(f"automix-cache-v{CACHE_FORMAT}\0{os.path.abspath(root)}\0{settings}\0{len(entries)}\0".encode())
    for path, size, mtime in entries:
        h.update(f"{os.path.relpath(path, root)}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def cache_path(cache_dir: str | os.PathLike | None, prefix: str, key: str) -> str:
    return os.path.join(cache_root(cache_dir), f"{prefix}-{key}.pt")


def load_cached(path: str) -> dict | None:
    """The cached dict at ``path``, or None when absent or unreadable (a warning then)."""
    if not os.path.isfile(path):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
            raise ValueError("unexpected content")
        return obj
    except Exception as e:  # a damaged cache only costs a re-decode
        warnings.warn(f"ignoring unreadable cache file {path} ({e}); decoding again", stacklevel=3)
        return None


def save_cached(path: str, obj: dict) -> None:
    """Atomically write ``obj`` to ``path``; a cache that cannot be written only warns."""
    directory = os.path.dirname(path)
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=directory)
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": CACHE_FORMAT, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        warnings.warn(f"could not write cache file {path} ({e}); the next load will decode again",
                      stacklevel=3)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
