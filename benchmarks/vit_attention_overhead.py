"""What asking for a block's attention map costs: ``vit_tiny`` with and without an ``AttentionTap`` (CPU).

This is a benchmark, not a test. Exact command (from the repository root):

    PYTHONPATH=src python benchmarks/vit_attention_overhead.py

About a minute on 2 CPU cores. It prints one table and writes raw numbers to
benchmarks/results/vit_attention_overhead.json (``--doc PATH`` also writes the table into a markdown section
``<!-- vit_attention:start -->`` .. ``<!-- vit_attention:end -->``).

Smoke run (batch 8, two rounds; writes nothing):

    PYTHONPATH=src python benchmarks/vit_attention_overhead.py --quick

Options:
    --quick          the smoke run above.
    --no-write       print only, write no file.
    --doc PATH       markdown file to update (default: none).
    --json PATH      raw results (default benchmarks/results/vit_attention_overhead.json; none for --quick).
    --batch-size B   images per pass (default 100).
    --rounds N       timed rounds (default 10); each round times every case once, in turn (the attention module
                     alone: 5 x N rounds).
    --layer NAME     the attention module asked for (default: the last block's, what TransMix reads).

What is timed (float32, random inputs B x 3 x 32 x 32, ``automix.create_model("vit_tiny", num_classes=100)``:
patch 4, 65 tokens, 12 blocks, train mode, no dropout): the forward pass under ``torch.no_grad()``, and a
forward plus ``backward()`` of the summed logits (what a training step adds), each as

* ``fused``: the model as it is, every block on ``F.scaled_dot_product_attention``;
* ``attention``: the same inside ``AttentionTap(model, layer)``, which makes that one block compute its
  probabilities explicitly (float32 softmax) and records them from the same pass; the tap is opened once,
  outside the timed region, as ``capture_context`` holds it open around a training step's forward pass.

and the tapped attention module alone on ``[B, 65, 192]`` tokens, fused vs explicit (its extra time over a
whole forward pass is what asking for attention must cost at least; a call of a few ms is far less exposed to
other processes than a whole pass). The cases run in interleaved rounds (garbage collector off during a call) and
the table shows medians; the overhead is ``attention / fused - 1``. The target (issue 16) is at most 5% over the
same forward pass without attention.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_output_args,
    command_line,
    gc_paused,
    loadavg,
    machine_info,
    output_paths,
    write_outputs,
)
from automix.models import AttentionTap, create_model  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_output_args(p, "vit_attention_overhead.json", "batch 8, two rounds, writes nothing")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--layer", default=None)
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or (8 if args.quick else 100)
    args.rounds = args.rounds or (2 if args.quick else 10)
    return args


def timed(fn) -> float:
    with gc_paused():
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.manual_seed(0)
    model = create_model("vit_tiny", num_classes=100).train()
    x = torch.randn(args.batch_size, 3, 32, 32)
    tap = AttentionTap(model, args.layer)
    tap.remove()  # opened per case below; this resolves the layer once (and refuses a bad one early)
    results = {"machine": machine_info(batch=args.batch_size, rounds=args.rounds, layer=tap.layer), "cases": {}}

    def forward():
        with torch.no_grad():
            model(x)

    def forward_backward():
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)

    times: dict[str, dict[str, list[float]]] = {"forward": {"fused": [], "attention": []},
                                               "forward+backward": {"fused": [], "attention": []}}
    for what, fn in (("forward", forward), ("forward+backward", forward_backward)):
        fn()  # warm-up, both paths
        with AttentionTap(model, args.layer) as warm:
            fn()
            warm.pop()
        for _ in range(args.rounds):
            times[what]["fused"].append(timed(fn))
            with AttentionTap(model, args.layer) as open_tap:
                times[what]["attention"].append(timed(fn))
                open_tap.pop()
    # The one module that changes path, alone: its extra time over the whole forward is the overhead's floor,
    # and a module call of a few ms is far less exposed to other processes than a whole pass.
    module, tokens = tap.module, torch.randn(args.batch_size, 65, model.embed_dim)
    times["attention module, forward"] = {"fused": [], "attention": []}
    for _ in range(5 * args.rounds):
        with torch.no_grad():
            times["attention module, forward"]["fused"].append(timed(lambda: module(tokens)))
            with AttentionTap(model, args.layer) as open_tap:
                times["attention module, forward"]["attention"].append(timed(lambda: module(tokens)))
                open_tap.pop()
    rows = []
    for what, cases in times.items():
        fused, attn = statistics.median(cases["fused"]), statistics.median(cases["attention"])
        overhead = attn / fused - 1.0
        results["cases"][what] = {"fused_ms": 1e3 * fused, "attention_ms": 1e3 * attn, "overhead": overhead,
                                  "fused_all_ms": [1e3 * t for t in cases["fused"]],
                                  "attention_all_ms": [1e3 * t for t in cases["attention"]]}
        rows.append(f"| {what} | {1e3 * fused:.1f} | {1e3 * attn:.1f} | {100 * overhead:+.1f}% |")
    extra = results["cases"]["attention module, forward"]
    floor = (extra["attention_ms"] - extra["fused_ms"]) / results["cases"]["forward"]["fused_ms"]
    results["module_extra_over_forward"] = floor
    rows.append(f"| (module's extra time / whole forward) | | | {100 * floor:+.2f}% |")
    results["machine"]["loadavg_end"] = loadavg()
    command = command_line("vit_attention_overhead.py", argv)
    body = "\n".join([
        f"`{command}` (vit_tiny, 32 px, patch 4, batch {args.batch_size}, attention of `{tap.layer}`, "
        f"{torch.get_num_threads()} thread(s), load average {results['machine']['loadavg_start']} -> "
        f"{results['machine']['loadavg_end']}, median of {args.rounds} rounds):", "",
        "| pass | fused (ms) | attention asked (ms) | overhead |", "|---|---:|---:|---:|", *rows])
    print(body)
    doc, out = output_paths(args, "vit_attention_overhead.json")
    doc = args.doc if not args.no_write else None  # no doc section unless asked for
    write_outputs(results, command, body, doc, out, "vit_attention", "## ViT: the cost of asking for attention")
    return 0


if __name__ == "__main__":
    sys.exit(main())
