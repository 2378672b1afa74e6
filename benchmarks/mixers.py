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

Code: this file measures; _mixers_cases.py builds the timed cases, _mixers_report.py writes the table and targets,
and _common.py (shared with step_time.py) holds the machine facts, the quiet-machine waits and the output files.
"""

from __future__ import annotations

import argparse
import random
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the _*.py helpers beside this script (also under -P)
from _common import (  # noqa: E402
    OtherCpu,
    add_output_args,
    automix,
    automix_version,
    command_line,
    dist_version,
    gc_paused,
    loadavg,
    machine_info,
    output_paths,
    write_outputs,
)
from _mixers_cases import SHAPES, SWITCHES, build_cases, load_mixup_package, load_timm_mixup, mixup_package_cases  # noqa: E402
from _mixers_report import render  # noqa: E402

KEY, HEADING = "mixers", "## Mixer throughput"  # the section of docs/benchmarks.md this script owns
NOISY = 0.10  # other processes using this share of the CPUs during a case: measure it again (or flag it)


# ---------------------------------------------------------------------------------------------- timing
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
    with gc_paused():
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


def measure_case(case: dict, cfg: dict, monitor: OtherCpu, budget: dict) -> tuple[list[float], list[int], float]:
    """(times, page faults, other processes' CPU share) of one case in one round.

    If another process took the CPUs during it, the case is dropped, we wait for quiet and measure it again (at
    most 3 attempts, and only while ``budget["retry_wait"]``, the seconds the whole run may spend waiting, lasts).
    """
    for attempt in range(3):
        seed_all()
        before = monitor.snapshot()
        case_faults: list[int] = []
        times = measure(case["fn"], case["setup"], faults=case_faults, **cfg)
        busy = monitor.share(before, monitor.snapshot())
        if busy is None or busy < NOISY or attempt == 2 or budget["retry_wait"] <= 0:
            break
        budget["redone"] += 1
        t0 = time.perf_counter()
        monitor.wait_quiet(min(30.0, budget["retry_wait"]))
        budget["retry_wait"] -= time.perf_counter() - t0
    return times, case_faults, busy


def measure_rounds(cases: list[dict], cfg: dict, rounds: int, args, info: dict):
    """Every case in ``rounds`` interleaved rounds (so a burst of load from elsewhere spreads over all of them).

    Returns per case the times and page faults of all rounds, the number of re-measured case-rounds and the
    indices of the cases disturbed in some round; the CPU share of others per round goes to ``info["other_cpu"]``.
    """
    samples: list[list[float]] = [[] for _ in cases]
    faults: list[list[int]] = [[] for _ in cases]
    monitor = OtherCpu()
    info["other_cpu"] = []
    budget, noisy = {"redone": 0, "retry_wait": 0.0 if args.quick else 90.0}, set()
    for r in range(rounds):
        if args.wait_quiet > 0:
            share = monitor.wait_quiet(args.wait_quiet)
            if share is not None and share >= 0.05:
                print(f"warning: other processes still use {share:.0%} of the CPUs; measuring anyway", flush=True)
        print(f"round {r + 1}/{rounds}: {len(cases)} cases", flush=True)
        snap = monitor.snapshot()
        for i, case in enumerate(cases):
            times, case_faults, busy = measure_case(case, cfg, monitor, budget)
            if busy is not None and busy >= NOISY:
                noisy.add(i)
            samples[i] += times
            faults[i] += case_faults
        share = monitor.share(snap, monitor.snapshot())
        info["other_cpu"].append(None if share is None else round(share, 3))
        if share is not None:
            print(f"  other processes used {share:.1%} of the CPUs during round {r + 1}", flush=True)
    return samples, faults, budget["redone"], noisy


# ---------------------------------------------------------------------------------------------- run
def timing(args) -> tuple[int, dict]:
    """(rounds, measure() options): tiny for --quick, else the budget and repeat counts split over the rounds."""
    if args.quick:
        return 1, dict(warmup=1, min_reps=2, max_reps=3, budget=0.0)
    rounds = args.rounds
    return rounds, dict(warmup=2, min_reps=max(1, 15 // rounds), max_reps=max(1, 400 // rounds),
                        budget=args.budget / rounds)


def run(args) -> dict:
    rounds, cfg = timing(args)
    info = machine_info(numpy=np.__version__, timm=dist_version("timm"), mixup=dist_version("mixup"),
                        automix=automix_version())
    # Model-aware mixers (PuzzleMix, GuidedMixup, ...) need the model's context, and TransMix's labels the
    # attention of the model's pass (a bare call is refused): their time is a training step's, in step_time.py /
    # puzzlemix_time.py.
    factory = automix.mixers.registry.mixer_factory
    static = [n for n in automix.list_mixers() if getattr(factory(n), "needs", None) is None
              and getattr(factory(n), "reweights", None) is None]
    names = static if not args.mixers else [n.strip() for n in args.mixers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(automix.list_mixers()))
    if unknown:
        raise SystemExit(f"unknown mixers {unknown}; the input mixers are: {static}")
    timm_mixup = load_timm_mixup()  # None without timm: no timm cases, empty columns
    pkg_cases = mixup_package_cases(load_mixup_package())  # {} without the `mixup` package
    print(f"torch {info['torch']}, threads {info['threads']}, nproc {info['nproc']}, CPU {info['cpu']}, "
          f"timm {info['timm'] or 'not installed'}, mixup {info['mixup'] or 'not installed'}, "
          f"loadavg {info['loadavg_start']}", flush=True)
    shapes = [v.strip() for v in args.shapes.split(",") if v.strip()] if args.shapes else None
    if shapes and set(shapes) - set(SHAPES):
        raise SystemExit(f"unknown shapes {sorted(set(shapes) - set(SHAPES))}; known: {list(SHAPES)}")
    cases = build_cases(names, timm_mixup, pkg_cases, shapes)

    t_start = time.perf_counter()
    samples, faults, redone, noisy = measure_rounds(cases, cfg, rounds, args, info)
    info["seconds"] = round(time.perf_counter() - t_start, 1)
    info["loadavg_end"] = loadavg()
    info["remeasured"] = redone
    info["n_cases"] = len(cases)
    info["noisy_cases"] = [f"{cases[i]['kind']} {cases[i]['method']}/{cases[i]['mode']} {cases[i]['shape']}"
                           for i in sorted(noisy)]

    results: dict = {"info": info, "config": {"rounds": rounds, **cfg}, "quick": bool(args.quick), "cases": []}
    for case, times, flt in zip(cases, samples, faults):
        stat = "trimmed mean" if case["method"] in SWITCHES else "median"  # the switches' times are bimodal
        entry = {k: case[k] for k in ("kind", "method", "mode", "shape", "note")}
        entry.update(summarize(times, stat))
        entry["page_faults_per_call"] = statistics.median(flt) if flt else None
        results["cases"].append(entry)
        print(f"  {entry['shape']:>5} {entry['kind']:<7} {entry['method']:<13} {entry['mode']:<5} "
              f"{entry['ms']:9.3f} ms  (p25 {entry['p25']:.3f}, p75 {entry['p75']:.3f}, min {entry['min']:.3f}, "
              f"n={entry['n']}, page faults/call {entry['page_faults_per_call']})", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_output_args(p, "mixers.json", "smoke run with tiny repeat counts (writes nothing by default)")
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

    command = command_line("mixers.py", argv)
    results = run(args)
    body = render(results, command)
    print()
    print(body)
    doc, out = output_paths(args, "mixers.json")
    write_outputs(results, command, body, doc, out, KEY, HEADING)
    return 0


if __name__ == "__main__":
    sys.exit(main())
