"""Training step time: vanilla, mixup, cutmix, AutoMix, SAMix, AdAutoMix and the model-aware methods on one network.

This is a benchmark, not a test. Exact command (from the repository root):

    PYTHONPATH=src python benchmarks/step_time.py

A full run takes about 5-6 minutes on 2 CPU cores, plus the wait for a quiet machine. It prints two tables
and rewrites the section between ``<!-- step_time:start -->`` and ``<!-- step_time:end -->`` of
docs/benchmarks.md (under ``## Training step time``; everything else in that file is kept, and the file is
created if missing), and writes raw numbers to benchmarks/results/step_time.json.

Smoke run (tiny batch, width 8, one warm-up and one timed step per case; writes nothing, so a CI test can
call it without touching the committed numbers):

    PYTHONPATH=src python benchmarks/step_time.py --quick

Options:
    --quick          the smoke run above (batch 8, width 8, --wait-quiet 0).
    --no-write       print only, write no file.
    --doc PATH       markdown file to update (default docs/benchmarks.md; a --quick run writes none unless given).
    --json PATH      raw results (default benchmarks/results/step_time.json; none for --quick unless given).
    --batch-size B   images per step (default 100).
    --widths a,b     first-stage widths of the PreAct-ResNet-18 (default 64,16; 64 is the standard network).
    --methods a,b    methods to time (default none,mixup,cutmix,automix,samix,adautomix,manifoldmix,snapmix,
                     attentivemix,alignmix,puzzlemix,guidedmix; "none" is vanilla and must be in).
    --steps N        timed steps per method at every width (default: 3 at width >= 32, 10 below).
    --warmup N       untimed warm-up steps per method first (default: 1 at width >= 32, 2 below).
    --wait-quiet S   wait up to S seconds for the 1-minute load average to drop below 0.5 before the first width
                     (default 3600; 0 with --quick), and for other processes to leave the CPUs idle before later
                     widths. The load average and the share of the CPUs used by other processes during each
                     measurement are reported; a measurement during which others used > 5% is flagged as noisy.
    --system-malloc  leave glibc's heap trimming on. By default the script pins glibc malloc (mallopt: mmap
                     threshold 32 MiB, trim threshold 2 GiB, top pad 256 MiB) so that no step pays for faulting in
                     memory that an earlier step of another method gave back to the kernel (see pin_malloc).
    --methods all    every registered method: the default list first, then the rest; one that cannot be built with
                     default options, or fails its warm-up, is reported as not timed (with its error) and skipped.

Other devices and settings (benchmarks/gpu_check.sh uses these; any device torch knows):

    --device D       where the step runs (default cpu); on CUDA each timed step is bracketed by
                     torch.cuda.synchronize(), and the peak memory each method adds is reported.
    --amp bf16|fp16  the step's forward and losses under torch.autocast (weights stay float32), as `automix train`.
    --channels-last  model and batch in channels_last memory format.
    --compile        model.compile() (torch.compile of the network the method trains, as `automix train
                     --compile`); the first warm-up step pays for the compilation. --compile-backend NAME picks
                     the backend (default inductor; eager only traces, a quick check of the path on CPU).
    --vit            the ViT table instead: vit_tiny (32 px, patch 4: 64 tokens + the class token), vanilla,
                     mixup_cutmix, TransMix, TokenMix, SMMix, MixPro, TL-Align, AutoMix, SAMix, AdAutoMix (token
                     features); written to its own section of docs/benchmarks.md ("ViT training step time") and to
                     benchmarks/results/step_time_vit.json.
    --model NAME     any automix.create_model name (default preact_resnet18; timm:<name>, torchvision:<name>);
                     --widths apply to the project's ResNets only.
    --img-size S     side of the random images (default 32).
    --no-breakdown   skip the profiler split of AutoMix's step. It runs only for the default float32 CPU setting
                     (it reads CPU-side times), so any other setting skips it anyway.
    --render JSON    time nothing: rewrite the section of --doc (default docs/benchmarks.md) from the raw results
                     a full run saved (benchmarks/results/step_time.json or step_time_vit.json), e.g. after a
                     change to the report's wording.
  A run with any of these writes no file unless --doc / --json name one: docs/benchmarks.md's section holds the
  default CPU measurement.

What is timed (float32, NCHW, torch's default thread count, random inputs of shape B x 3 x 32 x 32 with
class-index targets over 100 classes, as CIFAR-100): one full training step

    opt.zero_grad(set_to_none=True); loss, logs = method.training_step(x, y); loss.backward();
    opt.step(); method.after_step()

for ``method = automix.create_method(name, model, num_classes=100, total_steps=1000, seed=0)`` (default
options for every method) around ``automix.create_model("preact_resnet18", num_classes=100, width=w)``
(the same initial weights for every method) with ``SGD(method.param_groups(), lr=0.1, momentum=0.9,
weight_decay=5e-4)``. Each method gets its warm-up steps, then the timed steps run in interleaved rounds
(one step of every method per round, garbage collector off during a step), so a burst of load from elsewhere
spreads over all methods; the table shows the median.

Where AutoMix's time goes: the same step is run again under ``torch.profiler`` (_step_pieces.py) and split by
the ``record_function`` labels inside ``AutoMix.compute_losses`` itself (no copy of it here): the EMA encoder's
forward on the clean batch (no grad), the Mix Block twice with the mask loss, the mixing, the EMA encoder's forward
on the Mix Block's batch, the online network's forward on the clean and the mixed batch; the one ``backward`` is
split by the label of the forward op that made each autograd node (backward to the input through the EMA encoder,
the mixing and the Mix Block; backward of the online passes), then the SGD step and ``after_step()`` (the EMA
update ``automix.methods.ema.ema_update``). The sum of the pieces (profiler overhead included) is printed next to
the measured full step. AdAutoMix's step is split the same way by the ``adautomix/`` labels in
``AdAutoMix.compute_losses`` (its K passes of the EMA encoder over the source images, for the cosine term, are a
piece of their own). The vanilla step is split by timing its public calls (forward + loss, backward, SGD
step) as the yardstick: each piece is also shown in units of the vanilla step.
From those pieces the report states the floor on this machine (4 vanilla forwards, 2 vanilla backwards, the
measured backward to the input, one SGD step; for AdAutoMix with K images 2 + K + 3 forwards and 3 backwards,
2 + K + 2 and 2 for K = 2), and it times one forward + backward over a batch of 2B against two
over B, which says whether batching AutoMix's two online passes could beat that floor.

Code: this file measures; _step_pieces.py profiles a step and splits it into pieces, _step_report.py writes the
tables and _common.py (shared with mixers.py) holds the machine facts, the quiet-machine waits and the output files.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the _*.py helpers beside this script (also under -P)
from _common import (  # noqa: E402
    ROOT,
    OtherCpu,
    add_output_args,
    automix,
    automix_version,
    command_line,
    gc_paused,
    loadavg,
    machine_info,
    output_paths,
    wait_for_low_load,
    write_outputs,
    write_section,
)
from _step_pieces import SPLIT, breakdown  # noqa: E402
from _step_report import LABELS, TARGET_RATIO, render  # noqa: E402
from automix.methods import create_method, list_methods  # noqa: E402

KEY, HEADING = "step_time", "## Training step time"  # the section of docs/benchmarks.md this script owns
VIT_KEY, VIT_HEADING = "step_time_vit", "## ViT training step time"  # and the --vit measurement's section
VIT_MODEL = "vit_tiny"
VIT_METHODS = ("none", "mixup_cutmix", "transmix", "tokenmix", "smmix", "mixpro", "tla", "automix", "samix",
               "adautomix")
NUM_CLASSES = 100
DEFAULT_METHODS = ("none", "mixup", "cutmix", "automix", "samix", "adautomix", "manifoldmix", "snapmix", "attentivemix",
                   "alignmix", "puzzlemix", "guidedmix")
LOAD_QUIET = 0.5  # 1-minute load average below which the machine counts as quiet before the first width
# glibc mallopt parameters: M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, and the values the benchmark pins.
MALLOPT = {"M_MMAP_THRESHOLD": (-3, 32 * 2**20), "M_TRIM_THRESHOLD": (-1, 2**31 - 1), "M_TOP_PAD": (-2, 256 * 2**20)}


def pin_malloc() -> str | None:
    """Keep freed memory in the process (glibc only); returns a description, or None when not applied.

    By default glibc gives the top of the heap back to the kernel after a step frees its activations, and the next
    step's allocations are faulted in again page by page. How much of that a step pays depends on what ran before
    it in the same process: with methods of very different memory peaks interleaved (AutoMix holds three graphs,
    vanilla one), one AutoMix step was measured with 128k minor faults and 0.8 s of system time at width 64 while
    the same computation right after another AutoMix step had none. Pinning the thresholds (what the environment
    variables MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_ do) makes every method pay only for
    its computation, whatever the order.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = all(libc.mallopt(code, value) == 1 for code, value in MALLOPT.values())
    except (OSError, AttributeError):
        return None
    if not ok:
        return None
    return "glibc mallopt " + ", ".join(f"{k}={v}" for k, (_, v) in MALLOPT.items())


# ---------------------------------------------------------------------------------------------- steps
DEFAULT_MODEL = "preact_resnet18"
AMP = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_setting(args) -> bool:
    """Whether this is one of the float32 CPU measurements that docs/benchmarks.md holds: the CIFAR ResNet's
    (the default) or ``--vit``'s (``vit_tiny`` at 32 px, patch 4)."""
    model = VIT_MODEL if getattr(args, "vit", False) else DEFAULT_MODEL
    return (args.device.type == "cpu" and args.amp is None and not args.channels_last and not args.compile
            and args.model == model and args.img_size == 32)


def build(name: str, width: int | None, args):
    """Model (same initial weights for every method), method and optimiser, on ``args.device`` as ``args`` says."""
    torch.manual_seed(0)
    model = automix.create_model(args.model, num_classes=NUM_CLASSES, **({} if width is None else {"width": width}))
    model.to(args.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    method = create_method(name, model, num_classes=NUM_CLASSES, total_steps=1000, seed=0).to(args.device)
    if args.compile:  # as automix train --compile: the network the method trains, compiled in place
        method.model.compile(backend=args.compile_backend)
    method.train()
    opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    return method, opt


def full_step(method: nn.Module, opt, x: torch.Tensor, y: torch.Tensor, amp: torch.dtype | None = None) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        loss, _ = method.training_step(x, y)
    loss.backward()
    opt.step()
    method.after_step()


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: without this a time is only the launch)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, *args, device: torch.device | None = None) -> float:
    """Seconds for one call, garbage collector off during it, the device's work finished on both sides."""
    device = device if device is not None else torch.device("cpu")
    with gc_paused():
        synchronize(device)
        t0 = time.perf_counter()
        fn(*args)
        synchronize(device)
        return time.perf_counter() - t0


def stats_ms(times: list[float]) -> dict:
    ms = [v * 1e3 for v in times]
    return {"median": statistics.median(ms), "min": min(ms), "max": max(ms), "n": len(ms), "all": ms}


# ---------------------------------------------------------------------------------------------- run
def _where(width: int | None, model: str | None = None) -> str:
    return f"width {width}" if width is not None else model or "the network"


def wait_before(width: int, args, monitor: OtherCpu, first: bool) -> tuple[list[float] | None, float | None]:
    """(load average, other processes' CPU share) before a width, after waiting for a quiet machine."""
    if first:
        return wait_for_low_load(args.wait_quiet, _where(width, args.model), LOAD_QUIET), None
    # Our own previous width is in the load average: wait for other processes only.
    load_before, other_before = loadavg(), None
    if args.wait_quiet > 0:
        other_before = monitor.wait_quiet(args.wait_quiet, window=3.0) or 0.0
        print(f"{_where(width, args.model)}: other processes use {other_before:.1%} of the CPUs", flush=True)
    return load_before, other_before


def time_steps(built: dict, methods: list[str], x: torch.Tensor, y: torch.Tensor, steps: int,
               amp: torch.dtype | None = None) -> dict:
    """Seconds per full step, in rounds of one step of every method (a burst of load spreads over all)."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(steps):
        for name in methods:
            times[name].append(timed(full_step, *built[name], x, y, amp, device=x.device))
        print(f"  round {r + 1}/{steps}: " + ", ".join(f"{LABELS.get(n, n)} {times[n][-1] * 1e3:.0f} ms"
                                                     for n in methods), flush=True)
    return times


def build_and_warm(name: str, width: int | None, args, x: torch.Tensor, y: torch.Tensor, warmup: int):
    """(method, opt) after its warm-up steps, and the peak device memory (MiB) it added on CUDA, else None."""
    cuda = args.device.type == "cuda"
    if cuda:
        synchronize(args.device)
        torch.cuda.reset_peak_memory_stats(args.device)
        before = torch.cuda.memory_allocated(args.device)
    method, opt = build(name, width, args)
    for _ in range(warmup):
        full_step(method, opt, x, y, AMP[args.amp])
    synchronize(args.device)
    peak = (torch.cuda.max_memory_allocated(args.device) - before) / 2**20 if cuda else None
    return (method, opt), peak


def run_width(width: int | None, args, monitor: OtherCpu, first: bool) -> dict:
    big = width is None or width >= 32
    steps = args.steps if args.steps is not None else (3 if big else 10)
    warmup = args.warmup if args.warmup is not None else (1 if big else 2)
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=gen).to(args.device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=gen).to(args.device)

    load_before, other_before = wait_before(width, args, monitor, first)
    where = _where(width, args.model)
    print(f"{where}: load average {load_before}; {warmup} warm-up + {steps} timed steps per method, "
          f"interleaved", flush=True)
    t_start = time.perf_counter()
    snap = monitor.snapshot()
    built, peaks, failed = {}, {}, {}
    for name in args.methods:
        try:
            built[name], peaks[name] = build_and_warm(name, width, args, x, y, warmup)
        except Exception as exc:  # reported in the table; vanilla (the yardstick) must work
            if name == "none":
                raise
            failed[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            print(f"  {name}: not timed: {failed[name]}", flush=True)
    timed_methods = [name for name in args.methods if name in built]
    times = time_steps(built, timed_methods, x, y, steps, AMP[args.amp])
    steps_share = monitor.share(snap, monitor.snapshot())
    # Where the time goes: AutoMix and AdAutoMix (and vanilla as the yardstick) split into pieces, interleaved rounds.
    # The split reads CPU-side times of a float32 step, so it runs for the default CPU setting only.
    learned = {name: built[name] for name in SPLIT if name in built}
    split = bool(learned) and not args.no_breakdown and default_setting(args)
    pieces = breakdown(learned, built["none"], x, y, steps, monitor) if split else None
    del built
    gc.collect()

    res = {"width": width, "batch_size": args.batch_size, "steps": steps, "warmup": warmup,
           "loadavg_before": load_before, "loadavg_after": loadavg(), "first": first,
           "other_cpu_before": None if other_before is None else round(other_before, 3),
           "other_cpu": None if steps_share is None else round(steps_share, 3),
           "seconds": round(time.perf_counter() - t_start, 1),
           "methods": {name: stats_ms(ts) for name, ts in times.items()}, "failed": failed, "breakdown": pieces}
    base = res["methods"]["none"]["median"]
    for name, st in res["methods"].items():
        st["ratio"] = st["median"] / base
        st["img_per_s"] = args.batch_size / (st["median"] / 1e3)
        if peaks.get(name) is not None:
            st["peak_mib"] = round(peaks[name], 1)
    share = "?" if steps_share is None else f"{steps_share:.1%}"
    print(f"{where} done in {res['seconds']} s; other processes used {share} of the CPUs during the timed "
          f"steps; load average now {res['loadavg_after']}", flush=True)
    return res


def run(args) -> dict:
    gpu = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else None
    info = machine_info(automix=automix_version(), mkldnn=torch.backends.mkldnn.is_available(),
                        device=str(args.device), gpu=gpu)
    print(f"torch {info['torch']}, {info['threads']} threads (default), nproc {info['nproc']}, CPU {info['cpu']} "
          f"({'GPU ' + gpu if gpu else 'CPU only'}), load average {info['loadavg_start']}", flush=True)
    monitor = OtherCpu()
    t0 = time.perf_counter()
    widths = [run_width(w, args, monitor, i == 0) for i, w in enumerate(args.widths)]
    info["seconds"] = round(time.perf_counter() - t0, 1)
    info["loadavg_end"] = loadavg()
    setting = {"device": str(args.device), "model": args.model, "img_size": args.img_size, "amp": args.amp,
               "channels_last": args.channels_last, "compile": args.compile and args.compile_backend,
               "default": default_setting(args)}
    return {"info": info, "quick": bool(args.quick), "batch_size": args.batch_size, "methods": list(args.methods),
            "target_ratio": TARGET_RATIO, "setting": setting, "widths": widths}


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_output_args(p, "step_time.json", "smoke run: batch 8, width 8, 1 step each; writes nothing")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 100; 8 with --quick)")
    p.add_argument("--widths", default=None, help="comma-separated widths (default 64,16; 8 with --quick)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated methods (with none), or 'all' (every registered method)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per method (default 3 at width>=32, else 10)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per method (default 1 at width>=32, else 2)")
    p.add_argument("--system-malloc", action="store_true",
                   help="leave glibc malloc's trimming on (default: pinned, see pin_malloc)")
    p.add_argument("--wait-quiet", type=float, default=None,
                   help="seconds to wait for a quiet machine first (default 3600; 0 with --quick)")
    p.add_argument("--device", default="cpu", help="device of the step (default cpu; cuda, cuda:1, ...)")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="torch.autocast dtype of the step")
    p.add_argument("--channels-last", action="store_true", help="model and batch in channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (model.compile())")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default inductor; 'eager' traces without generating code, for a "
                        "quick check of the compiled path on CPU)")
    p.add_argument("--vit", action="store_true",
                   help=f"the ViT table: {VIT_MODEL} at 32 px / patch 4, methods {','.join(VIT_METHODS)} (its own "
                        "section of docs/benchmarks.md and benchmarks/results/step_time_vit.json)")
    p.add_argument("--model", default=None, help=f"network (default {DEFAULT_MODEL}; timm:<name>, ...)")
    p.add_argument("--img-size", type=int, default=32, help="image side in pixels (default 32)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the profiler split of AutoMix's step")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="time nothing: rewrite the docs section from a saved results file (step_time.json or "
                        "step_time_vit.json), after a change to the report's wording")
    args = p.parse_args(argv)
    if args.vit:
        if args.model not in (None, VIT_MODEL):
            raise SystemExit(f"--vit times {VIT_MODEL}; drop --model {args.model}")
        args.model = VIT_MODEL
        if args.methods == ",".join(DEFAULT_METHODS):
            args.methods = ",".join(VIT_METHODS)
    args.model = args.model or DEFAULT_MODEL
    if args.quick:
        args.batch_size = args.batch_size or 8
        args.widths = args.widths or "8"
        args.steps = 1 if args.steps is None else args.steps
        args.warmup = 1 if args.warmup is None else args.warmup
    args.batch_size = args.batch_size or 100
    try:
        args.device = torch.device(args.device)
    except RuntimeError as exc:
        raise SystemExit(f"--device {args.device!r}: {exc}") from None
    own_resnet = args.model in ("preact_resnet18", "preact_resnet34", "resnet18", "resnet34")
    # --widths scale the project's ResNets; any other network is timed as it is built (one "width": None).
    args.widths = [int(v) for v in (args.widths or "64,16").split(",") if v.strip()] if own_resnet else [None]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.methods == ["all"]:
        args.methods = list(DEFAULT_METHODS) + [m for m in list_methods() if m not in DEFAULT_METHODS]
    unknown = [m for m in args.methods if m not in list_methods()]
    if unknown:
        raise SystemExit(f"--methods: {unknown} are not registered methods ({', '.join(list_methods())})")
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.quick else 3600.0
    if "none" not in args.methods:
        raise SystemExit("--methods must include 'none' (vanilla): ratios are to vanilla")
    if args.batch_size < 2 or (args.steps is not None and args.steps < 1) or any(
            w is not None and w < 1 for w in args.widths) or args.img_size < 8:
        raise SystemExit("--batch-size must be >= 2, --steps >= 1, every width >= 1 and --img-size >= 8")
    return args


def section_body(results: dict, command: str, malloc: str | None) -> str:
    """The docs section for ``results``: the tables of :func:`render` and the allocator line."""
    return render(results, command) + (
        "\n- Allocator: " + (f"{malloc} (set by the script, so that freed activations stay in the process and no "
                             "method's step time depends on which method ran before it; `--system-malloc` turns it "
                             "off)" if malloc else "system default (glibc trims the heap after each step)") + ".\n")


def rerender(path: Path, doc: Path | None) -> int:
    """Rewrite a section of ``doc`` from the raw results a full run saved at ``path``, timing nothing (after a
    change to the report's wording; the numbers and the command are the saved run's)."""
    try:
        results = json.loads(Path(path).read_text())
        command, malloc, model = results["command"], results["info"]["malloc"], results["setting"]["model"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"--render {path}: not a results file written by a full run of this script "
                         f"({exc!r})") from None
    body = section_body(results, command, malloc)
    key, heading = (VIT_KEY, VIT_HEADING) if model == VIT_MODEL else (KEY, HEADING)
    print(f"{heading}\n\n{body}")
    if doc is not None:
        write_section(doc, key, body, heading)
        print(f"wrote {doc}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        return rerender(args.render, None if args.no_write else args.doc or ROOT / "docs" / "benchmarks.md")
    command = command_line("step_time.py", argv)
    malloc = None if args.system_malloc else pin_malloc()
    print(f"allocator: {malloc or 'system default (glibc trimming on)'}", flush=True)
    results = run(args)
    results["info"]["malloc"] = malloc
    doc, out = output_paths(args, "step_time_vit.json" if args.vit else "step_time.json")
    if not default_setting(args):  # the committed section and JSON hold the default CPU measurement
        doc, out = args.doc if not args.no_write else None, args.json if not args.no_write else None
    if out is not None:  # the doc names the JSON, repository-relative when it is inside the repository
        results["json"] = os.path.relpath(out.resolve(), ROOT) if out.resolve().is_relative_to(ROOT) else str(out)
    body = section_body(results, command, malloc)
    print()
    key, heading = (VIT_KEY, VIT_HEADING) if args.vit else (KEY, HEADING)
    print(f"{heading}\n")
    print(body)
    write_outputs(results, command, body, doc, out, key, heading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
