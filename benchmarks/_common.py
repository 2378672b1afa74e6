"""What the benchmark scripts in this folder share: machine facts, waiting for a quiet machine, and output.

Not a benchmark itself. ``mixers.py`` and ``step_time.py`` import it (they put this folder on ``sys.path``):

* ``machine_info`` / ``loadavg`` / ``dist_version``: the facts recorded with every result (date, CPU, versions);
* ``OtherCpu``: the share of the CPUs used by *other* processes during a measurement, and a wait until they are
  idle; ``wait_for_low_load``: a wait on the 1-minute load average instead (for a first measurement, before our
  own load is in it);
* ``gc_paused``: the garbage collector off around a timed region, so a collection does not land in one sample;
* ``add_output_args`` / ``command_line`` / ``output_paths`` / ``write_outputs``: the options and files every script
  has in common (``--quick`` writes nothing unless ``--doc`` / ``--json`` name a file; ``--no-write`` writes
  nothing). The markdown section is rewritten by ``automix.bench.write_section``, the package's own writer.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import importlib.metadata
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import automix
except ImportError:  # run without PYTHONPATH=src
    sys.path.insert(0, str(ROOT / "src"))
    import automix
from automix.bench import write_section  # noqa: E402


# ---------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def dist_version(dist: str) -> str | None:
    """Installed version of a distribution, or None when it is absent (timm and `mixup` are optional)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(**extra) -> dict:
    """Date, CPU, thread count and versions; ``extra`` keys go between the Python version and the start load."""
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        nproc = os.cpu_count()
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_model(),
            "nproc": nproc, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), **extra, "loadavg_start": loadavg()}


def automix_version() -> str:
    return getattr(automix, "__version__", "?")


# ---------------------------------------------------------------------------------------------- quiet machine
class OtherCpu:
    """CPU time used by *other* processes (/proc/stat minus our own), to tell a quiet measurement from a busy one.

    The machine is shared: with torch using every core, one busy core from elsewhere stalls each parallel region,
    so a number measured while others ran is not clean and must be at least flagged.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ncpu = os.cpu_count() or 1

    def snapshot(self) -> tuple[float, float | None, float]:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            busy = (sum(fields[:8]) - fields[3] - fields[4]) / self.tick  # everything but idle and iowait
        except (OSError, ValueError):
            busy = None
        own = os.times()
        return time.perf_counter(), busy, own.user + own.system

    def share(self, start, end) -> float | None:
        """Share of all CPUs used by other processes between two snapshots (0 = quiet; None = unknown)."""
        (w0, b0, o0), (w1, b1, o1) = start, end
        if b0 is None or b1 is None or w1 <= w0:
            return None
        return max(0.0, ((b1 - b0) - (o1 - o0)) / ((w1 - w0) * self.ncpu))

    def wait_quiet(self, max_wait: float, threshold: float = 0.05, window: float = 2.0) -> float | None:
        """Sleep until other processes use < ``threshold`` of the CPUs over ``window`` s, or ``max_wait`` s pass."""
        deadline = time.perf_counter() + max_wait
        while True:
            start = self.snapshot()
            time.sleep(window)
            share = self.share(start, self.snapshot())
            if share is None or share < threshold or time.perf_counter() >= deadline:
                return share


def wait_for_low_load(max_wait: float, what: str, quiet: float = 0.5) -> list[float] | None:
    """Sleep until the 1-minute load average is below ``quiet`` or ``max_wait`` seconds have passed.

    Only before a script's first measurement: afterwards our own work is in the load average, so later waits
    use ``OtherCpu.wait_quiet``.
    """
    load = loadavg()
    if max_wait <= 0 or load is None or load[0] < quiet:
        return load
    print(f"[{what}] load average {load}: waiting up to {max_wait:.0f} s for it to drop below {quiet}", flush=True)
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        time.sleep(5.0)
        load = loadavg()
        if load[0] < quiet:
            break
    if load[0] >= quiet:
        print(f"warning: load average still {load} after {max_wait:.0f} s; measuring anyway (noisy)", flush=True)
    return load


@contextlib.contextmanager
def gc_paused():
    """Collect first, then keep the garbage collector off inside the block (it would land in one timed call)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# ---------------------------------------------------------------------------------------------- output
def add_output_args(p: argparse.ArgumentParser, json_name: str, quick_help: str) -> None:
    """--quick, --no-write, --doc, --json: the first options of every script, in this order."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--no-write", action="store_true", help="only print")
    p.add_argument("--doc", type=Path, default=None, help="markdown file to update (default docs/benchmarks.md)")
    p.add_argument("--json", type=Path, default=None, help=f"raw results (default benchmarks/results/{json_name})")


def command_line(script: str, argv: list[str] | None) -> str:
    """The command as recorded in the doc and the JSON."""
    return f"PYTHONPATH=src python benchmarks/{script}" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))


def output_paths(args, json_name: str) -> tuple[Path | None, Path | None]:
    """(markdown doc, JSON) to write, None for neither with --no-write.

    A --quick run writes only the files --doc / --json name, so a CI smoke test cannot overwrite the committed
    numbers.
    """
    if args.no_write:
        return None, None
    doc = args.doc if args.doc is not None else (None if args.quick else ROOT / "docs" / "benchmarks.md")
    out = args.json if args.json is not None else (None if args.quick else ROOT / "benchmarks" / "results" / json_name)
    return doc, out


def write_outputs(results: dict, command: str, body: str, doc: Path | None, out: Path | None, key: str,
                  heading: str) -> None:
    """Raw results (with the command) to ``out``; ``body`` into the ``key`` section of ``doc`` under ``heading``."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        results["command"] = command
        from automix._jsonio import dumps  # strict JSON: a NaN timing is written as null, not NaN

        out.write_text(dumps(results, indent=1) + "\n")
        print(f"wrote {out}")
    if doc is not None:
        write_section(doc, key, body, heading)
        print(f"wrote {doc}")
