"""Folders the command line writes into, created with errors that name the option and the path.

An ``OSError`` from ``mkdir`` says ``[Errno 20] Not a directory: 'a/b/c'`` and leaves the user to find
which part is the file; these say which option, which path, and why.
"""

from __future__ import annotations

from pathlib import Path


def _blocking_file(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` (or ``path`` itself) that is not a folder."""
    for part in reversed([path, *path.parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def make_dir(path: str | Path, option: str) -> Path:
    """``mkdir -p path``; a ``ValueError`` naming ``option`` and the path when it cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _blocking_file(path)
        if blocker is not None:
            why = f"{str(blocker)!r} is a file, not a folder"
        else:
            why = exc.strerror or str(exc)
            if exc.filename and str(exc.filename) != str(path):
                why += f" ({exc.filename})"
        raise ValueError(f"{option}: cannot create the folder {str(path)!r}: {why}") from None
    return path


def make_parent(path: str | Path, option: str) -> Path:
    """Create the folder a file ``path`` goes into; errors name ``option``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option}: {str(path)!r} is a folder; give a file name")
    make_dir(path.parent, option)
    return path
