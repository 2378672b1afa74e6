"""Where a training step's time goes: one AutoMix/SAMix step profiled, split by the labels inside the real code.

Part of the step-time benchmark (run ``PYTHONPATH=src python benchmarks/step_time.py``), not a module to use on
its own. ``AutoMix.compute_losses`` marks its pieces with ``torch.profiler.record_function`` labels
(``automix/encoder_features``, ``automix/mix_block``, ``automix/mixing``, ``automix/encoder_mixed``,
``automix/backbone``); ``automix_pieces`` runs one ordinary step (``zero_grad``, ``training_step``, one
``backward``, ``opt.step()``, ``after_step()``) under ``torch.profiler.profile`` and reads each piece's wall time
from its label. The single backward is split by where its autograd nodes came from: each node's profiler event
carries the sequence number of the forward op that created it, and that op lies inside one of the labels.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from _common import gc_paused  # also puts src/ on sys.path when PYTHONPATH=src is missing

# AutoMix pieces, in the order they run, with the label used in the tables.
PIECES = [
    ("zero_grad", "zero_grad"),
    ("step_rest", "training_step outside the labels (checks, draws, targets, loss sum, logs)"),
    ("ema_clean_fwd", "EMA encoder forward, clean batch (no grad) `automix/encoder_features`"),
    ("mix_block", "Mix Block x2 + mask loss `automix/mix_block`"),
    ("mixing", "mixing, two lerps `automix/mixing`"),
    ("ema_mb_fwd", "EMA encoder forward on the Mix Block's batch + loss `automix/encoder_mixed`"),
    ("online_fwd", "online forward x2 (clean, mixed) + losses `automix/backbone`"),
    ("ema_mb_bwd", "backward to the input: EMA encoder, mixing, Mix Block"),
    ("online_bwd", "backward of the online forwards"),
    ("bwd_rest", "backward, rest (loss sum, gradient accumulation)"),
    ("opt_step", "SGD step"),
    ("after_step", "after_step (EMA update)"),
]
VANILLA_PIECES = [("zero_grad", "zero_grad"), ("fwd", "forward + loss"), ("bwd", "backward"),
                  ("opt_step", "SGD step"), ("after_step", "after_step")]
# The labels inside AutoMix.compute_losses -> forward piece, and the backward piece their autograd nodes go to.
FORWARD = {"automix/encoder_features": "ema_clean_fwd", "automix/mix_block": "mix_block", "automix/mixing": "mixing",
           "automix/encoder_mixed": "ema_mb_fwd", "automix/backbone": "online_fwd"}
BACKWARD = {"automix/mix_block": "ema_mb_bwd", "automix/mixing": "ema_mb_bwd", "automix/encoder_mixed": "ema_mb_bwd",
            "automix/backbone": "online_bwd"}
STEP = ("zero_grad", "training_step", "backward", "opt_step", "after_step")  # the benchmark's own labels


def _label(event) -> str | None:
    """The innermost ``automix/`` label an event ran inside, or None."""
    while event is not None:
        if event.name.startswith("automix/"):
            return event.name
        event = event.cpu_parent
    return None


def split_profile(events) -> dict[str, float]:
    """Seconds per piece (PIECES keys) from the events of one profiled step."""
    us: dict[str, float] = {key: 0.0 for key, _ in PIECES}
    step = {e.name[len("step/"):]: e.time_range.elapsed_us() for e in events if e.name.startswith("step/")}
    missing = [name for name in STEP if name not in step]
    if missing:
        raise RuntimeError(f"profile has no step/{missing[0]} range")
    origin: dict[int, str] = {}  # forward op sequence number -> its label
    for e in events:
        if e.name.startswith("automix/"):
            us[FORWARD[e.name]] += e.time_range.elapsed_us()
        elif e.sequence_nr >= 0 and not e.name.startswith("autograd::engine::"):
            label = _label(e)
            if label is not None:
                origin.setdefault(e.sequence_nr, label)
    unknown = {e.name for e in events if e.name.startswith("automix/")} - set(FORWARD)
    if unknown:
        raise RuntimeError(f"labels {sorted(unknown)} in compute_losses are not pieces here; add them to FORWARD")
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function:"):
            piece = BACKWARD.get(origin.get(e.sequence_nr, ""))
            if piece is not None:
                us[piece] += e.time_range.elapsed_us()
    us["zero_grad"], us["opt_step"], us["after_step"] = step["zero_grad"], step["opt_step"], step["after_step"]
    us["step_rest"] = step["training_step"] - sum(us[FORWARD[k]] for k in FORWARD)
    us["bwd_rest"] = step["backward"] - us["ema_mb_bwd"] - us["online_bwd"]
    return {k: v * 1e-6 for k, v in us.items()}


@contextmanager
def _step(name: str):
    with record_function(f"step/{name}"):
        yield


def automix_pieces(method, opt, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One ordinary AutoMix/SAMix step under the profiler; seconds per piece (see ``split_profile``)."""
    with gc_paused(), profile(activities=[ProfilerActivity.CPU]) as prof:
        with _step("zero_grad"):
            opt.zero_grad(set_to_none=True)
        with _step("training_step"):
            loss, _ = method.training_step(x, y)
        with _step("backward"):
            loss.backward()
        with _step("opt_step"):
            opt.step()
        with _step("after_step"):
            method.after_step()
    return split_profile(prof.events())


def vanilla_pieces(method, opt, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One vanilla step split into zero_grad, forward + loss, backward, SGD step, after_step."""
    clock = time.perf_counter
    with gc_paused():
        t0 = clock()
        opt.zero_grad(set_to_none=True)
        t1 = clock()
        loss, _ = method.training_step(x, y)
        t2 = clock()
        loss.backward()
        t3 = clock()
        opt.step()
        t4 = clock()
        method.after_step()
        t5 = clock()
    return dict(zero_grad=t1 - t0, fwd=t2 - t1, bwd=t3 - t2, opt_step=t4 - t3, after_step=t5 - t4)


def two_passes_vs_one_batch(method, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Forward + backward of two batches of B one after the other, and of one batch of 2B (same images).

    Asks whether AutoMix's two online passes (clean, mixed) would be cheaper as one batch. With plain BN the
    2B batch shares batch statistics, which the reference does not do, so this is an upper bound on the gain
    of a batched pass with per-half BN. Gradients accumulate; the next step's ``zero_grad`` clears them.
    """
    clock = time.perf_counter
    x2, y2 = torch.cat([x, x]), torch.cat([y, y])
    with gc_paused():
        t0 = clock()
        for _ in range(2):
            loss, _ = method.training_step(x, y)
            loss.backward()
        t1 = clock()
        loss, _ = method.training_step(x2, y2)
        loss.backward()
        t2 = clock()
    return {"two_of_b": t1 - t0, "one_of_2b": t2 - t1}


def median_pieces(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples) * 1e3 for k in samples[0]}


def breakdown(automix_built, vanilla_built, x: torch.Tensor, y: torch.Tensor, steps: int, monitor) -> dict:
    """Median piece times (ms) of ``steps`` split AutoMix steps and vanilla steps, interleaved; raw samples too."""
    snap = monitor.snapshot()
    am_method, am_opt = automix_built
    va_method, va_opt = vanilla_built
    automix_pieces(am_method, am_opt, x, y)  # one untimed profiled step: the profiler warmed up
    two_passes_vs_one_batch(va_method, x, y)  # warm-up of the 2B shapes
    am_samples, va_samples, batch_samples = [], [], []
    for _ in range(steps):
        am_samples.append(automix_pieces(am_method, am_opt, x, y))
        va_samples.append(vanilla_pieces(va_method, va_opt, x, y))
        batch_samples.append(two_passes_vs_one_batch(va_method, x, y))
    result = {"automix": median_pieces(am_samples), "vanilla": median_pieces(va_samples),
              "batching": median_pieces(batch_samples), "automix_all": am_samples, "vanilla_all": va_samples,
              "batching_all": batch_samples, "n": steps}
    result["automix_sum"] = statistics.median(sum(s.values()) for s in am_samples) * 1e3
    result["vanilla_sum"] = statistics.median(sum(s.values()) for s in va_samples) * 1e3
    result["other_cpu"] = monitor.share(snap, monitor.snapshot())
    return result
