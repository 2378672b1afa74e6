"""Mixer throughput: every automix mixer against the lerp memory floor, timm's Mixup and the `mixup` package.

This is a benchmark, not a test. Exact command (from the repository root):

    pip install --no-deps -r benchmarks/requirements.txt   # once: timm (only its data/mixup.py is loaded) + `mixup`
    PYTHONPATH=src python benchmarks/mixers.py

The full run takes about 3-4 minutes on 2 CPU cores. It prints a table and rewrites the section between
``<!-- mixers:start -->`` and ``<!-- mixers:end -->`` of docs/benchmarks.md (under ``## Mixer throughput``;
everything else in that file is kept), and writes raw numbers to benchmarks/results/mixers.json.

Options:
    --quick        smoke run (1 warm-up, 2-3 repeats per case). Writes nothing unless --doc / --json are given,
                   so a CI test can call it without touching the committed numbers.
    --no-write     print only, write no file.
    --doc PATH     markdown file to update (default docs/benchmarks.md).
    --json PATH    raw results (default benchmarks/results/mixers.json).
    --mixers a,b   only these automix mixers (default: every registered mixer); --shapes 32px,224px likewise.
    --budget S     seconds of timed calls per case, over all rounds (default 2.0); --rounds N (default 3).
    --wait-quiet S before each round wait up to S seconds until other processes leave the CPUs idle (default 120;
                   0 with --quick). The share of CPU other processes used during each round is reported.

What is timed (CPU only, float32, class-index targets with num_classes=1000, torch's default thread count):
    * automix: ``create_mixer(name, mode=..., num_classes=1000)(x, y, generator)`` for every registered mixer, in
      ``mode="batch"`` and ``mode="elem"``, a fixed ``torch.Generator`` passed on every call;
    * the memory floor: ``torch.lerp(x, x[perm], 0.3)`` with a fixed ``perm`` (one gather and one lerp, the least
      any mixer that reads a partner must do);
    * timm's ``Mixup`` (label_smoothing=0, num_classes=1000) loaded from ``timm/data/mixup.py`` by path (``import
      timm`` would need torchvision). It mixes ``x`` in place, so every call gets a fresh ``x.clone()`` made
      *outside* the timed region;
    * the ``mixup`` PyPI package (batch-level methods only); it needs one-hot float targets, so its timed call
      includes ``F.one_hot(y, 1000).float()`` (automix builds its one-hot inside the call too).

Each case: warm-up calls, then single calls timed with ``time.perf_counter`` (garbage collector off) until both a
minimum repeat count and a time budget are reached, in ``--rounds`` (3) interleaved rounds over all cases; the table
shows the median (the 10%-trimmed mean for the 50/50 switches, whose per-call time is bimodal).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from pathlib import Path

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
try:
    import automix
except ImportError:  # run without PYTHONPATH=src
    sys.path.insert(0, str(ROOT / "src"))
    import automix

NUM_CLASSES = 1000
SHAPES = {"32px": (128, 3, 32, 32), "224px": (64, 3, 224, 224)}
MODES = ("batch", "elem")
START, END = "<!-- mixers:start -->", "<!-- mixers:end -->"
HEADING = "## Mixer throughput"

# Options per automix mixer (num_classes and mode are added to all).
MIXER_KWARGS = {"mix_choice": {"mixers": ["mixup", "cutmix"]},
                "mixup_cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}}
SWITCHES = {"mix_choice", "mixup_cutmix"}  # one of two mixers per call: report a trimmed mean, not the median

# timm's Mixup options for the automix mixers it has an equivalent of (both modes).
TIMM_KWARGS = {"mixup": {"mixup_alpha": 1.0, "cutmix_alpha": 0.0},
               "cutmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0},
               "mixup_cutmix": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0, "switch_prob": 0.5},
               "mix_choice": {"mixup_alpha": 1.0, "cutmix_alpha": 1.0, "switch_prob": 0.5}}


# ---------------------------------------------------------------------------------------------- helpers
def machine_info() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        nproc = os.cpu_count()

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": model, "nproc": nproc,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "numpy": np.__version__, "timm": version("timm"), "mixup": version("mixup"),
            "automix": getattr(automix, "__version__", "?"), "loadavg_start": _loadavg()}


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def load_timm_mixup():
    """timm's ``Mixup`` class from ``timm/data/mixup.py`` alone (importing ``timm`` pulls in torchvision)."""
    spec = importlib.util.find_spec("timm")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mixup.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("_bench_timm_mixup", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module.Mixup


def load_mixup_package():
    """The ``mixup`` PyPI package (a torch mixup library: VanillaMixUp, CutMix, ResizeMix, FMix, ...), or None."""
    try:
        import mixup as pkg
    except ImportError:
        return None
    needed = ("VanillaMixUp", "CutMix", "ResizeMix", "FMix", "SaliencyMix", "MixupPipeline")
    return pkg if all(hasattr(pkg, n) for n in needed) else None


def mixup_package_cases(pkg) -> dict[tuple[str, str], tuple[object, str]]:
    """(automix name, mode) -> (the `mixup` package's equivalent, note). It has batch-level methods only."""
    if pkg is None:
        return {}
    return {
        ("mixup", "batch"): (pkg.VanillaMixUp(alpha=1.0), ""),
        ("cutmix", "batch"): (pkg.CutMix(alpha=1.0), ""),
        ("fmix", "batch"): (pkg.FMix(alpha=1.0, decay_power=3.0), ""),
        ("resizemix", "batch"): (pkg.ResizeMix(alpha=1.0), "box side sqrt(1-lam), lam~Beta(1,1); ours tau~U(0.1,0.8)"),
        # One lam per batch but a per-sample box centred on each partner's saliency peak (a Python loop):
        # per-sample work like our elem mode, so it is compared there.
        ("saliencymix", "elem"): (pkg.SaliencyMix(alpha=1.0, mode="heuristic"),
                                  "one lam, per-sample boxes: compared with our elem mode"),
        ("mix_choice", "batch"): (pkg.MixupPipeline([pkg.VanillaMixUp(alpha=1.0), pkg.CutMix(alpha=1.0)]), ""),
        ("mixup_cutmix", "batch"): (pkg.MixupPipeline([pkg.VanillaMixUp(alpha=0.8), pkg.CutMix(alpha=1.0)]), ""),
    }


class CpuMonitor:
    """CPU time used by *other* processes (from /proc/stat minus our own), to tell a quiet run from a busy one."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ncpu = os.cpu_count() or 1

    def _busy(self) -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(fields[:8]) - fields[3] - fields[4]) / self.tick  # all but idle and iowait

    def snapshot(self):
        t = os.times()
        return time.perf_counter(), self._busy(), t.user + t.system

    def other_share(self, start, end) -> float | None:
        """Share of all CPUs used by other processes between two snapshots (0 = quiet)."""
        (w0, b0, o0), (w1, b1, o1) = start, end
        if b0 is None or b1 is None or w1 <= w0:
            return None
        return max(0.0, ((b1 - b0) - (o1 - o0)) / ((w1 - w0) * self.ncpu))

    def wait_quiet(self, max_wait: float, threshold: float = 0.05, window: float = 2.0) -> float | None:
        """Sleep until other processes use < threshold of the CPUs over ``window`` s, or ``max_wait`` s pass."""
        deadline = time.perf_counter() + max_wait
        share = None
        while True:
            start = self.snapshot()
            time.sleep(window)
            share = self.other_share(start, self.snapshot())
            if share is None or share < threshold or time.perf_counter() >= deadline:
                return share


def seed_all(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource is not None else 0


def measure(fn, setup=None, *, warmup: int, min_reps: int, max_reps: int, budget: float,
            faults: list[int] | None = None) -> list[float]:
    """Seconds per call of ``fn(setup())``; ``setup`` (e.g. a clone) runs outside the timed region.

    Page faults taken inside the timed calls are appended to ``faults`` (one entry per call).
    """
    for _ in range(warmup):
        fn(setup() if setup else None)
    times: list[float] = []
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget):
            arg = setup() if setup else None
            f0 = _minor_faults()
            t0 = time.perf_counter()
            fn(arg)
            times.append(time.perf_counter() - t0)
            if faults is not None:
                faults.append(_minor_faults() - f0)
            del arg
    finally:
        gc.enable()
    return times


def summarize(times: list[float], stat: str) -> dict:
    ms = sorted(t * 1e3 for t in times)
    q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) >= 2 else [ms[0]] * 3
    cut = len(ms) // 10
    trimmed = ms[cut:len(ms) - cut] or ms
    value = statistics.fmean(trimmed) if stat == "trimmed mean" else statistics.median(ms)
    return {"ms": value, "stat": stat, "median": statistics.median(ms), "mean": statistics.fmean(ms),
            "trimmed_mean": statistics.fmean(trimmed),
            "p25": q[0], "p75": q[2], "min": ms[0], "n": len(ms)}


# ---------------------------------------------------------------------------------------------- run
def build_cases(names: list[str], timm_mixup, pkg_cases: dict, shapes: list[str] | None = None) -> list[dict]:
    """Every timed case: kind, method, mode, shape, fn, setup (run untimed before each call), note."""
    cases = []
    for shape, dims in SHAPES.items():
        if shapes and shape not in shapes:
            continue
        gen = torch.Generator().manual_seed(1234)
        x = torch.rand(dims, generator=gen)
        y = torch.randint(0, NUM_CLASSES, (dims[0],), generator=gen)
        perm = torch.randperm(dims[0], generator=gen)
        buf = torch.empty_like(x)

        def add(kind, method, mode, fn, setup=None, note=""):
            cases.append({"kind": kind, "method": method, "mode": mode, "shape": shape, "fn": fn, "setup": setup,
                          "note": note})

        add("floor", "lerp floor", "-", lambda _, x=x, perm=perm: torch.lerp(x, x[perm], 0.3))
        add("clone", "x.clone()", "-", lambda _, x=x: x.clone())
        add("copy", "buf.copy_(x)", "-", lambda _, x=x, buf=buf: buf.copy_(x))
        for name in names:
            for mode in MODES:
                mixer = automix.create_mixer(name, mode=mode, num_classes=NUM_CLASSES, **MIXER_KWARGS.get(name, {}))
                g = torch.Generator().manual_seed(0)
                add("automix", name, mode, lambda _, m=mixer, g=g, x=x, y=y: m(x, y, g))
                if timm_mixup is not None and name in TIMM_KWARGS:
                    tm = timm_mixup(mode=mode, label_smoothing=0.0, num_classes=NUM_CLASSES, **TIMM_KWARGS[name])
                    # timm mixes in place: a fresh clone per call, made outside the timed region.
                    add("timm", name, mode, lambda xc, m=tm, y=y: m(xc, y), x.clone,
                        "fresh x.clone() per call, outside the timed region")
                if (name, mode) in pkg_cases:
                    pm, note = pkg_cases[(name, mode)]
                    add("mixup", name, mode, lambda _, m=pm, x=x, y=y: m(x, F.one_hot(y, NUM_CLASSES).float()),
                        note=note)
    return cases


def run(args) -> dict:
    if args.quick:
        rounds, cfg = 1, dict(warmup=1, min_reps=2, max_reps=3, budget=0.0)
    else:
        rounds = args.rounds
        cfg = dict(warmup=2, min_reps=max(1, 15 // rounds), max_reps=max(1, 400 // rounds),
                   budget=args.budget / rounds)
    info = machine_info()
    names = automix.list_mixers() if not args.mixers else [n.strip() for n in args.mixers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(automix.list_mixers()))
    if unknown:
        raise SystemExit(f"unknown mixers {unknown}; registered: {automix.list_mixers()}")
    timm_mixup = load_timm_mixup()
    pkg_cases = mixup_package_cases(load_mixup_package())
    print(f"torch {info['torch']}, threads {info['threads']}, nproc {info['nproc']}, CPU {info['cpu']}, "
          f"timm {info['timm'] or 'not installed'}, mixup {info['mixup'] or 'not installed'}, "
          f"loadavg {info['loadavg_start']}", flush=True)
    shapes = [v.strip() for v in args.shapes.split(",") if v.strip()] if args.shapes else None
    if shapes and set(shapes) - set(SHAPES):
        raise SystemExit(f"unknown shapes {sorted(set(shapes) - set(SHAPES))}; known: {list(SHAPES)}")
    cases = build_cases(names, timm_mixup, pkg_cases, shapes)
    samples: list[list[float]] = [[] for _ in cases]
    faults: list[list[int]] = [[] for _ in cases]
    monitor = CpuMonitor()
    t_start = time.perf_counter()
    info["other_cpu"] = []
    redone, noisy = [0], set()
    retry_wait = [0.0 if args.quick else 90.0]  # seconds the whole run may spend waiting before re-measuring
    # Rounds interleave the cases, so a burst of load from elsewhere spreads over all of them.
    for r in range(rounds):
        if args.wait_quiet > 0:
            share = monitor.wait_quiet(args.wait_quiet)
            if share is not None and share >= 0.05:
                print(f"warning: other processes still use {share:.0%} of the CPUs; measuring anyway", flush=True)
        print(f"round {r + 1}/{rounds}: {len(cases)} cases", flush=True)
        snap = monitor.snapshot()
        for i, case in enumerate(cases):
            for attempt in range(3):
                seed_all()
                before = monitor.snapshot()
                case_faults: list[int] = []
                times = measure(case["fn"], case["setup"], faults=case_faults, **cfg)
                busy = monitor.other_share(before, monitor.snapshot())
                # Another process took the CPUs during this case: drop it, wait for quiet, measure again.
                if busy is None or busy < 0.10 or attempt == 2 or retry_wait[0] <= 0:
                    break
                redone[0] += 1
                t0 = time.perf_counter()
                monitor.wait_quiet(min(30.0, retry_wait[0]))
                retry_wait[0] -= time.perf_counter() - t0
            if busy is not None and busy >= 0.10:
                noisy.add(i)
            samples[i] += times
            faults[i] += case_faults
        share = monitor.other_share(snap, monitor.snapshot())
        info["other_cpu"].append(None if share is None else round(share, 3))
        if share is not None:
            print(f"  other processes used {share:.1%} of the CPUs during round {r + 1}", flush=True)
    info["seconds"] = round(time.perf_counter() - t_start, 1)
    info["loadavg_end"] = _loadavg()
    info["remeasured"] = redone[0]
    info["n_cases"] = len(cases)
    info["noisy_cases"] = [f"{cases[i]['kind']} {cases[i]['method']}/{cases[i]['mode']} {cases[i]['shape']}"
                           for i in sorted(noisy)]

    results: dict = {"info": info, "config": {"rounds": rounds, **cfg}, "quick": bool(args.quick), "cases": []}
    for case, times, flt in zip(cases, samples, faults):
        stat = "trimmed mean" if case["method"] in SWITCHES else "median"
        entry = {k: case[k] for k in ("kind", "method", "mode", "shape", "note")}
        entry.update(summarize(times, stat))
        entry["page_faults_per_call"] = statistics.median(flt) if flt else None
        results["cases"].append(entry)
        print(f"  {entry['shape']:>5} {entry['kind']:<7} {entry['method']:<13} {entry['mode']:<5} "
              f"{entry['ms']:9.3f} ms  (p25 {entry['p25']:.3f}, p75 {entry['p75']:.3f}, min {entry['min']:.3f}, "
              f"n={entry['n']}, page faults/call {entry['page_faults_per_call']})", flush=True)
    return results


# ---------------------------------------------------------------------------------------------- report
def _lookup(results: dict) -> dict:
    return {(c["kind"], c["method"], c["mode"], c["shape"]): c for c in results["cases"]}


def _fmt(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def _faults(case: dict | None) -> str:
    value = None if case is None else case.get("page_faults_per_call")
    return "–" if value is None else f"{value:.0f}"


def _vs(other: dict | None, ours: dict) -> str:
    if other is None:
        return "–"
    return f"{_fmt(other['ms'])} ({other['ms'] / ours['ms']:.1f}×)"


def targets(results: dict) -> list[tuple[bool, str]]:
    look = _lookup(results)
    shapes = list(SHAPES)
    out: list[tuple[bool, str]] = []

    def get(kind, method, mode, shape):
        return look.get((kind, method, mode, shape))

    # 1. batch mixup within 1.3x of the lerp floor
    pairs = [(s, get("automix", "mixup", "batch", s), get("floor", "lerp floor", "-", s)) for s in shapes]
    pairs = [(s, a, f) for s, a, f in pairs if a and f]
    if pairs:
        ratios = {s: a["ms"] / f["ms"] for s, a, f in pairs}
        out.append((all(r <= 1.3 for r in ratios.values()),
                    "batch-mode `mixup` within 1.3× of the lerp floor: "
                    + ", ".join(f"{s} {_fmt(a['ms'])} ms vs {_fmt(f['ms'])} ms = {ratios[s]:.2f}×"
                                for s, a, f in pairs)))

    # 2a. elem cutmix >= 10x faster than timm elem cutmix
    pairs = [(s, get("automix", "cutmix", "elem", s), get("timm", "cutmix", "elem", s)) for s in shapes]
    pairs = [(s, a, t) for s, a, t in pairs if a and t]
    if pairs:
        speed = {s: t["ms"] / a["ms"] for s, a, t in pairs}
        out.append((all(v >= 10 for v in speed.values()),
                    "elem-mode `cutmix` ≥ 10× faster than timm's elem mode: "
                    + ", ".join(f"{s} {_fmt(a['ms'])} ms vs timm {_fmt(t['ms'])} ms = {speed[s]:.1f}×"
                                for s, a, t in pairs)))
    # 2b. elem cutmix within 2x of batch cutmix
    pairs = [(s, get("automix", "cutmix", "elem", s), get("automix", "cutmix", "batch", s)) for s in shapes]
    pairs = [(s, e, b) for s, e, b in pairs if e and b]
    if pairs:
        ratio = {s: e["ms"] / b["ms"] for s, e, b in pairs}
        out.append((all(v <= 2 for v in ratio.values()),
                    "elem-mode `cutmix` within 2× of batch-mode `cutmix`: "
                    + ", ".join(f"{s} {_fmt(e['ms'])} ms vs {_fmt(b['ms'])} ms = {ratio[s]:.2f}×"
                                for s, e, b in pairs)))

    # 3. no mixer slower than the timm / mixup-package equivalent in the same mode
    comps = []
    for c in results["cases"]:
        if c["kind"] in ("timm", "mixup"):
            ours = get("automix", c["method"], c["mode"], c["shape"])
            if ours:
                comps.append((c["ms"] / ours["ms"], c, ours))
    if comps:
        slow = [(r, c, o) for r, c, o in comps if r < 1.0]
        worst = min(comps, key=lambda t: t[0])
        if slow:
            detail = "slower in " + "; ".join(
                f"{c['method']}/{c['mode']} {c['shape']}: {_fmt(o['ms'])} ms vs {c['kind']} {_fmt(c['ms'])} ms "
                f"({r:.2f}×)" for r, c, o in sorted(slow, key=lambda t: t[0]))
        else:
            r, c, o = worst
            detail = (f"all {len(comps)} comparisons faster; closest: {c['method']}/{c['mode']} {c['shape']} vs "
                      f"{c['kind']}, {_fmt(o['ms'])} ms vs {_fmt(c['ms'])} ms ({r:.2f}×)")
        out.append((not slow, "no mixer slower than the timm / `mixup`-package equivalent in the same mode: " + detail))
    return out


def render(results: dict, command: str) -> str:
    info, look, shapes = results["info"], _lookup(results), list(SHAPES)
    lines = [
        f"Command: `{command}`" + (" (**quick smoke run: tiny repeat counts, numbers are not meaningful**)"
                                   if results["quick"] else ""),
        "",
        f"- Date: {info['date']}; run took {info.get('seconds', '?')} s",
        f"- Machine: {info['cpu']}, nproc {info['nproc']}, **CPU only (no GPU measured)**; "
        f"load average {info['loadavg_start']} at start, {info.get('loadavg_end')} at end; other processes used "
        + (", ".join(f"{v:.0%}" for v in info["other_cpu"] if v is not None) or "(unknown)")
        + f" of the CPUs during each round; {info.get('remeasured', 0)} case-round(s) re-measured because another "
        f"process took the CPUs, {len(info.get('noisy_cases', []))} of {info.get('n_cases', '?')} cases kept "
        "although disturbed in some round (listed in the JSON)",
        f"- torch {info['torch']} ({info['threads']} threads, the default), Python {info['python']}, "
        f"numpy {info['numpy']}, automix {info['automix']}, timm {info['timm'] or '(not installed)'}, "
        f"mixup {info['mixup'] or '(not installed)'}",
        f"- Inputs: float32 contiguous batches, " + " and ".join(f"{s} = B×C×H×W {'×'.join(map(str, d))}"
                                                                  for s, d in SHAPES.items())
        + f"; class-index targets, num_classes={NUM_CLASSES}; a fixed `torch.Generator` passed per call.",
        "",
    ]
    head = ["method", "mode"]
    for s in shapes:
        head += [f"{s} ms", f"{s} ×floor", f"{s} timm ms (our speed-up)", f"{s} mixup-pkg ms (our speed-up)"]
    big = shapes[-1]
    head.append(f"{big} page faults/call")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
    floor = {s: look.get(("floor", "lerp floor", "-", s)) for s in shapes}
    refs = (("lerp floor: `torch.lerp(x, x[perm], 0.3)`", ("floor", "lerp floor")),
            ("ref: `x.clone()` (one new tensor)", ("clone", "x.clone()")),
            ("ref: `buf.copy_(x)` (preallocated)", ("copy", "buf.copy_(x)")))
    for label, (kind, method) in refs:
        row = [label, "–"]
        for s in shapes:
            c = look.get((kind, method, "-", s))
            row += [_fmt(c["ms"]) if c else "–", f"{c['ms'] / floor[s]['ms']:.2f}" if c and floor[s] else "–",
                    "–", "–"]
        row.append(_faults(look.get((kind, method, "-", big))))
        lines.append("| " + " | ".join(row) + " |")
    methods = list(dict.fromkeys(c["method"] for c in results["cases"] if c["kind"] == "automix"))
    for m in methods:
        for mode in MODES:
            row = [f"`{m}`" + (" (trimmed mean)" if m in SWITCHES else ""), mode]
            for s in shapes:
                ours = look.get(("automix", m, mode, s))
                if ours is None:
                    row += ["–"] * 4
                    continue
                row += [_fmt(ours["ms"]), f"{ours['ms'] / floor[s]['ms']:.2f}" if floor[s] else "–",
                        _vs(look.get(("timm", m, mode, s)), ours), _vs(look.get(("mixup", m, mode, s)), ours)]
            row.append(_faults(look.get(("automix", m, mode, big))))
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Notes:",
        "- Time per batch in ms: the median of single timed calls after warm-up (for `mix_choice` and `mixup_cutmix`, "
        "which run mixup or cutmix on each call with probability 0.5 each so that their per-call times are bimodal, "
        "the **mean of the middle 80%** of the calls, on both sides of the comparison). ×floor = our time / "
        "lerp-floor time at the same shape. (N×) = their time / our time, "
        "so > 1 means automix is faster.",
        "- automix: `create_mixer(name, mode=mode, num_classes=1000)` with defaults (`alpha=1`, `pairing=\"perm\"`, "
        "`prob=1`); `mix_choice` with `mixers=[\"mixup\", \"cutmix\"]`; `mixup_cutmix` with `mixup_alpha=0.8, "
        "cutmix_alpha=1.0`. The time includes the input checks, the draw, the mix and the one-hot targets.",
        "- timm: `Mixup(..., mode=mode, label_smoothing=0, num_classes=1000)` from `timm/data/mixup.py` loaded by "
        "path; `mixup`: mixup_alpha=1, cutmix_alpha=0; `cutmix`: mixup_alpha=0, cutmix_alpha=1; `mixup_cutmix`: "
        "0.8 / 1.0 with switch_prob=0.5; `mix_choice`: 1.0 / 1.0 with switch_prob=0.5. timm mixes `x` in place, so "
        "each call gets a fresh `x.clone()` made **outside** the timed region (not timed, nothing subtracted; the "
        "clone's cost is in the `x.clone()` row for reference). timm pairs sample i with B-1-i (`flip`), automix "
        "with a random permutation. timm's elem mode clones the batch itself; that clone is inside its time.",
        "- mixup-pkg: the `mixup` PyPI package (a small torch mixup library with batch-level `VanillaMixUp`, `CutMix`, "
        "`ResizeMix`, `FMix`, `SaliencyMix`, `MixupPipeline`), alpha=1 (0.8 for mixup in the `mixup_cutmix` "
        "pipeline). It takes one-hot float targets, so its timed call includes `F.one_hot(y, 1000).float()`. It has "
        "no per-sample (elem) mode, except that its `SaliencyMix` draws one lam but a box per sample (a Python "
        "loop), so it is compared with our elem-mode `saliencymix`. Its `ResizeMix` sizes the box from "
        "lam ~ Beta(1,1) (mean area 0.5 of the image), ours from tau ~ U(0.1, 0.8) (mean area 0.24).",
        "- No equivalents for `gridmix` and `smoothmix` (and none in elem mode in the mixup package).",
        "- The two `ref:` rows show what a fresh output costs on this machine: `x.clone()` allocates a new tensor "
        "(at 224px, 38.5 MB), `buf.copy_(x)` copies the same bytes into a tensor allocated once. A new tensor that "
        "glibc has to map afresh costs 9409 minor page faults (4 KiB pages) at 224px, about 10 ms here, far more "
        "than the copy; whether it is mapped afresh or reuses freed heap memory depends on the allocation history, "
        "so 224px times jump between runs. The last column is the median number of page faults per call of our "
        "mixer (9409 = one freshly mapped full-size tensor).",
        f"- Each case is measured in {results['config'].get('rounds', 1)} interleaved round(s) over all cases "
        "(so a burst of load from elsewhere spreads over all of them); raw statistics (median, mean, p25, p75, min, "
        "n) are in `benchmarks/results/mixers.json`.",
    ]
    tg = targets(results)
    if tg:
        lines += ["", "Targets:", ""]
        lines += [f"- **{'PASS' if ok else 'FAIL'}** {text}" for ok, text in tg]
    return "\n".join(lines) + "\n"


def write_doc(path: Path, body: str) -> None:
    block = f"{START}\n{body}{END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text and text.index(START) < text.index(END):
        pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run with tiny repeat counts (writes nothing by default)")
    p.add_argument("--no-write", action="store_true", help="only print")
    p.add_argument("--doc", type=Path, default=None, help="markdown file to update (default docs/benchmarks.md)")
    p.add_argument("--json", type=Path, default=None, help="raw results (default benchmarks/results/mixers.json)")
    p.add_argument("--mixers", default="", help="comma-separated automix mixers (default: all registered)")
    p.add_argument("--shapes", default="", help=f"comma-separated subset of {list(SHAPES)} (default: all)")
    p.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls per case in a full run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all cases in a full run")
    p.add_argument("--wait-quiet", type=float, default=None,
                   help="before each round, wait up to this many seconds for other processes to leave the CPUs "
                        "idle (default 120 in a full run, 0 with --quick)")
    args = p.parse_args(argv)
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 120.0

    command = "PYTHONPATH=src python benchmarks/mixers.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    results = run(args)
    body = render(results, command)
    print()
    print(body)
    if not args.no_write:
        doc = args.doc if args.doc is not None else (None if args.quick else ROOT / "docs" / "benchmarks.md")
        out = args.json if args.json is not None else (None if args.quick else ROOT / "benchmarks" / "results" /
                                                        "mixers.json")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            results["command"] = command
            out.write_text(json.dumps(results, indent=1) + "\n")
            print(f"wrote {out}")
        if doc is not None:
            write_doc(doc, body)
            print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
