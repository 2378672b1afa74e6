"""Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: finish the step, save ``last.pt``, say how to continue.

A cluster preempts a job with SIGTERM and kills it a little later; Ctrl-C is the same request from a
person. Neither should cost more than the step in flight, nor print a traceback. While training, the
handler only records the signal; the engine checks after every optimiser step (under DDP the ranks
agree first, since torchrun may signal them at different moments), writes ``last.pt`` and raises
``Interrupted``. Before training starts there is nothing to save, so a signal stops the setup at once.

A second Ctrl-C aborts at once (the last checkpoint written is still intact: saves are atomic).
Repeated SIGTERMs do not: torchrun answers one Ctrl-C with a SIGTERM to every worker, which must not
turn a clean stop into an abort.
"""

from __future__ import annotations

import signal
import threading


class Interrupted(Exception):
    """A run stopped by a signal; ``exit_code`` is the shell's ``128 + signal``."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequests:
    """Installs the handlers (main thread only); ``signum`` is the first signal received, else None."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.training = False  # set by the engine when the first step may run
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # signal.signal works nowhere else
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if not self.training:
            raise Interrupted(signum, f"stopped by {signal_name(signum)} before training began; nothing was saved "
                                      "by this run (run the same command again to start)")
        if self.signum is None:
            self.signum = signum
        elif signum == signal.SIGINT == self.signum:
            raise KeyboardInterrupt


def _raise_terminated(signum: int, frame) -> None:
    raise Interrupted(signum, f"stopped by {signal_name(signum)}")


def sigterm_raises() -> object | None:
    """Make SIGTERM raise ``Interrupted`` (as Ctrl-C raises KeyboardInterrupt) instead of killing silently.

    Returns the previous handler, or None off the main thread (where handlers cannot be set).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)
