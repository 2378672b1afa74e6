"""Where AutoMix's step goes on a GPU: its default mask fit and sharpness floor against the same step without them.

    python benchmarks/automix_mask_fit_time.py            # CUDA when present: width 64, batch 128, bf16, channels_last
    python benchmarks/automix_mask_fit_time.py --quick    # CPU smoke run: width 8, batch 8

One table (printed, nothing written): median and min ms per training step (10 steps after 3 warm-up, each between
two device synchronisations), the kernel launches of one profiled step (CUDA only) and its ATen op calls, for
vanilla, AutoMix as registered (``mask_fit`` and ``mask_min_sharpness=0.6``), the same with the mask fits' searches
forced to one probe per round (bisection: what the GPU check measured) and to 15 (``mixblock.search_probes``: the
GPU's choice), AutoMix with ``mask_min_sharpness=0``,
AutoMix with ``mask_fit=False`` (the reference's free mask) and SAMix; then the profiler's ``automix/`` regions of
each step. The GPU check (docs/benchmarks.md, "GPU check") found AutoMix at 10x a vanilla step on an H200; this
splits that cost, and shows what the many-probe searches save.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import automix  # noqa: E402
from automix.methods import create_method, mixblock  # noqa: E402

# (label, method, options, probes per search round: None as registered (``mixblock.search_probes``: 15 on a GPU
# at these sizes, 1 on the CPU), else forced on every device).
VARIANTS = [("vanilla", "none", {}, None), ("AutoMix as registered", "automix", {}, None),
            ("AutoMix, one-probe searches (bisection)", "automix", {}, 1),
            ("AutoMix, 15-probe searches", "automix", {}, 15),
            ("AutoMix, mask_min_sharpness=0", "automix", {"mask_min_sharpness": 0.0}, None),
            ("AutoMix, mask_fit=False", "automix", {"mask_fit": False}, None), ("SAMix", "samix", {}, None)]
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def step(method: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        loss, _ = method.training_step(x, y)
    loss.backward()
    opt.step()
    method.after_step()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: width 8, batch 8, 1 step after 1 warm-up")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    dev = torch.device("cpu" if args.quick else args.device)
    cuda = dev.type == "cuda"
    width, batch, warmup, steps = (8, 8, 1, 1) if args.quick else (64, 128, 3, 10)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (batch,), device=dev)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    print(f"device {dev}, PreAct-ResNet-18 width {width}, batch {batch}x3x32x32, bf16 autocast, channels_last")
    print("| step | ms median | ms min | kernel launches | ATen calls |\n|---|---:|---:|---:|---:|")
    regions = {}
    default_probes = mixblock.search_probes
    for label, name, opts, probes in VARIANTS:
        mixblock.search_probes = default_probes if probes is None else (lambda numel, device, p=probes: p)
        torch.manual_seed(0)
        model = automix.create_model("preact_resnet18", num_classes=100, width=width)
        model = model.to(dev).to(memory_format=torch.channels_last)
        method = create_method(name, model, num_classes=100, total_steps=1000, seed=0, **opts).to(dev)
        method.train()
        opt = torch.optim.SGD(method.param_groups(), lr=0.1, momentum=0.9)

        for _ in range(warmup):
            step(method, opt, x, y)
        times = []
        for _ in range(steps):
            sync()
            t0 = time.perf_counter()
            step(method, opt, x, y)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=acts) as prof:
            step(method, opt, x, y)
            sync()
        ev = prof.key_averages()
        launches = sum(e.count for e in ev if e.key in LAUNCHES) if cuda else "–"
        aten = sum(e.count for e in ev if e.key.startswith("aten::"))
        print(f"| {label} | {statistics.median(times):.1f} | {min(times):.1f} | {launches} | {aten} |", flush=True)
        regions[label] = sorted(((e.key, e.cpu_time_total / 1e3) for e in ev
                                 if e.key.startswith("automix/") and e.cpu_time_total > 0),
                                key=lambda kv: -kv[1])
    mixblock.search_probes = default_probes
    print("\nProfiled step, host time of each `automix/` region (ms):")
    for label, rs in regions.items():
        if rs:
            print(f"- {label}: " + ", ".join(f"{k} {v:.1f}" for k, v in rs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
