"""One run per run dir: create it, refuse one that holds another run, and lock it while a run writes there.

Two runs writing into one ``--output`` (at once, or a rerun without ``--resume``) would interleave
``summary.csv`` rows and overwrite each other's checkpoints. ``claim(cfg)``:

* creates the run dir (an error naming ``output`` when it cannot be created or written);
* takes an OS lock (``fcntl.flock`` on ``.automix.lock``) held until ``release()`` or the process
  ends: the kernel drops it on any exit, ``kill -9`` included, so a dead run never blocks a resume;
* refuses a dir that already holds a run's results unless this run continues that run
  (``--resume auto``, or ``--resume`` naming a checkpoint inside the dir).

Files that are not a run's results (``bench.yaml`` and ``train.log`` written by ``automix bench``, a
lone ``args.yaml`` of a run killed before its first checkpoint) do not count: nothing would be lost.
Only rank 0 writes under DDP, so only rank 0 claims.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._paths import make_dir
from .config import Config

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; the run-dir check still applies
    fcntl = None

LOCK_NAME = ".automix.lock"
RESULTS = ("last.pt", "best.pt", "summary.csv", "metrics.json")


def results_in(out: Path) -> list[str]:
    """The names of a run's results found in ``out``."""
    return [name for name in RESULTS if (out / name).exists()]


def _continues(out: Path, resume: str | None) -> bool:
    if resume is None:
        return False
    if resume == "auto":
        return True
    try:
        return Path(resume).resolve().parent == out.resolve() or Path(resume).resolve() == out.resolve()
    except OSError:
        return False


class RunLock:
    """An exclusive lock on a run dir; ``release()`` is idempotent.

    A dir this run created and left empty (it failed before writing anything) is removed on release,
    so a mistyped option leaves no stray run dir behind.
    """

    def __init__(self, out: Path, created: bool = False) -> None:
        self.out, self.fd, self.created = out, None, created
        if fcntl is None:
            return
        path = out / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ValueError(f"output: cannot write in the run dir {str(out)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(f"output: {str(out)!r} is in use by another automix run (pid {holder}); wait for it to "
                             "finish or pick a new --output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # names the holder in the message above
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        if self.created and os.listdir(self.out) == [LOCK_NAME]:
            os.unlink(self.out / LOCK_NAME)  # while still locked: no other run can have claimed the dir
            self.out.rmdir()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


class _NoLock:
    def release(self) -> None:
        pass


def claim(cfg: Config, rank: int = 0) -> RunLock | _NoLock:
    """Create and lock ``cfg.output`` for this run (rank 0 only); errors name the flag and the dir.

    A ``--resume`` file that does not exist is reported first, before the dir is made or its contents judged:
    "already holds a run" would hide the typo in the path.
    """
    if cfg.resume not in (None, "auto") and not Path(cfg.resume).exists():
        raise FileNotFoundError(f"--resume {cfg.resume}: no such checkpoint file or run folder")
    if rank != 0:
        return _NoLock()
    created = not Path(cfg.output).exists()
    out = make_dir(cfg.output, "output")
    lock = RunLock(out, created)  # before the check: of two runs starting at once, exactly one gets past here
    try:
        found = results_in(out)
        # A run killed between its first summary row and its first checkpoint leaves results that
        # nothing can continue: say so, or the two messages below would send the user in a circle.
        stranded = f"{str(out)!r} holds {', '.join(found)} but no last.pt to continue; delete them to start " \
                   "over there, or pick a new --output"
        if cfg.resume == "auto" and "last.pt" not in found:
            if found:
                raise ValueError(f"resume: {stranded}")
            raise ValueError(f"resume: 'auto' continues {str(out / 'last.pt')!r}, which does not exist; "
                             "drop --resume to start a new run there")
        if found and not _continues(out, cfg.resume):
            if "last.pt" not in found:
                raise ValueError(f"output: {stranded}")
            raise ValueError(f"output: {str(out)!r} already holds a run ({', '.join(found)}); continue it with "
                             "--resume auto, or pick a new --output")
    except BaseException:
        lock.release()
        raise
    return lock
