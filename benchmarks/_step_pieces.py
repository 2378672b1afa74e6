"""Where a training step's time goes: one AutoMix/SAMix or AdAutoMix step profiled, split by the labels inside the
real code.

Part of the step-time benchmark (run ``PYTHONPATH=src python benchmarks/step_time.py``), not a module to use on
its own. ``AutoMix.compute_losses`` marks its pieces with ``torch.profiler.record_function`` labels
(``automix/encoder_features``, ``automix/mix_block``, ``automix/mixing``, ``automix/encoder_mixed``,
``automix/backbone``), ``AdAutoMix.compute_losses`` with ``adautomix/...`` ones (the same pieces, the generator
instead of the Mix Block, plus ``adautomix/encoder_sources`` and ``adautomix/cosine``); ``method_pieces`` runs one
ordinary step (``zero_grad``, ``training_step``, one ``backward``, ``opt.step()``, ``after_step()``) under
``torch.profiler.profile`` and reads each piece's wall time from its label. The single backward is split by where
its autograd nodes came from: each node's profiler event carries the sequence number of the forward op that
created it, and that op lies inside one of the labels.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from _common import gc_paused  # also puts src/ on sys.path when PYTHONPATH=src is missing


@dataclass(frozen=True)
class Pieces:
    """How one learned method's step splits: its pieces in order (key, label in the tables), which piece each of its
    ``record_function`` labels is (forward), and which backward piece the autograd nodes made under it go to."""

    prefix: str
    pieces: list[tuple[str, str]]
    forward: dict[str, str]
    backward: dict[str, str]


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
AUTOMIX = Pieces("automix/", PIECES, FORWARD, BACKWARD)
# AdAutoMix (K images per mix): the same split, with its K passes of the EMA encoder over the sources (no grad) and
# the cosine term; the online network runs 3 passes for K > 2 (clean, linear K-way mix, masked mix), 2 for K = 2.
ADAUTOMIX = Pieces("adautomix/", [
    ("zero_grad", "zero_grad"),
    ("step_rest", "training_step outside the labels (checks, draws, targets, loss sum, logs)"),
    ("ema_clean_fwd", "EMA encoder forward, clean batch (no grad) `adautomix/encoder_features`"),
    ("generator", "generator x2 (K-way masks) `adautomix/generator`"),
    ("mixing", "mixing, two K-way blends `adautomix/mixing`"),
    ("ema_mb_fwd", "EMA encoder forward on the generator's batch + loss `adautomix/encoder_mixed`"),
    ("ema_sources_fwd", "EMA encoder forward on each of the K sources (no grad) `adautomix/encoder_sources`"),
    ("cosine", "the cosine term `adautomix/cosine`"),
    ("online_fwd", "online forward x3 (clean, linear mix, masked mix; x2 for K = 2) + losses `adautomix/backbone`"),
    ("ema_mb_bwd", "backward to the input: EMA encoder, mixing, generator"),
    ("online_bwd", "backward of the online forwards"),
    ("bwd_rest", "backward, rest (loss sum, gradient accumulation)"),
    ("opt_step", "SGD step"),
    ("after_step", "after_step (EMA update)"),
], {"adautomix/encoder_features": "ema_clean_fwd", "adautomix/generator": "generator", "adautomix/mixing": "mixing",
    "adautomix/encoder_mixed": "ema_mb_fwd", "adautomix/encoder_sources": "ema_sources_fwd",
    "adautomix/cosine": "cosine", "adautomix/backbone": "online_fwd"},
   {"adautomix/generator": "ema_mb_bwd", "adautomix/mixing": "ema_mb_bwd", "adautomix/encoder_mixed": "ema_mb_bwd",
    "adautomix/cosine": "ema_mb_bwd", "adautomix/backbone": "online_bwd"})
# The learned methods split into pieces, by name: the benchmark profiles those it times.
SPLIT = {"automix": AUTOMIX, "adautomix": ADAUTOMIX}
STEP = ("zero_grad", "training_step", "backward", "opt_step", "after_step")  # the benchmark's own labels


def _label(event, prefix: str) -> str | None:
    """The innermost label starting with ``prefix`` an event ran inside, or None."""
    while event is not None:
        if event.name.startswith(prefix):
            return event.name
        event = event.cpu_parent
    return None


def split_profile(events, spec: Pieces = AUTOMIX) -> dict[str, float]:
    """Seconds per piece (``spec.pieces`` keys) from the events of one profiled step."""
    us: dict[str, float] = {key: 0.0 for key, _ in spec.pieces}
    step = {e.name[len("step/"):]: e.time_range.elapsed_us() for e in events if e.name.startswith("step/")}
    missing = [name for name in STEP if name not in step]
    if missing:
        raise RuntimeError(f"profile has no step/{missing[0]} range")
    origin: dict[int, str] = {}  # forward op sequence number -> its label
    for e in events:
        if e.name.startswith(spec.prefix):
            if e.name not in spec.forward:
                raise RuntimeError(f"label {e.name!r} in compute_losses is not a piece here; add it to the spec")
            us[spec.forward[e.name]] += e.time_range.elapsed_us()
        elif e.sequence_nr >= 0 and not e.name.startswith("autograd::engine::"):
            label = _label(e, spec.prefix)
            if label is not None:
                origin.setdefault(e.sequence_nr, label)
    backward_pieces = set(spec.backward.values())
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function:"):
            piece = spec.backward.get(origin.get(e.sequence_nr, ""))
            if piece is not None:
                us[piece] += e.time_range.elapsed_us()
    us["zero_grad"], us["opt_step"], us["after_step"] = step["zero_grad"], step["opt_step"], step["after_step"]
    us["step_rest"] = step["training_step"] - sum(us[p] for p in set(spec.forward.values()))
    us["bwd_rest"] = step["backward"] - sum(us[p] for p in backward_pieces)
    return {k: v * 1e-6 for k, v in us.items()}


@contextmanager
def _step(name: str):
    with record_function(f"step/{name}"):
        yield


def method_pieces(method, opt, x: torch.Tensor, y: torch.Tensor, spec: Pieces = AUTOMIX) -> dict[str, float]:
    """One ordinary learned-method step under the profiler; seconds per piece (see ``split_profile``)."""
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
    return split_profile(prof.events(), spec)


def automix_pieces(method, opt, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One ordinary AutoMix/SAMix step under the profiler; seconds per piece (see ``split_profile``)."""
    return method_pieces(method, opt, x, y, AUTOMIX)


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


def breakdown(learned: dict, vanilla_built, x: torch.Tensor, y: torch.Tensor, steps: int, monitor) -> dict:
    """Median piece times (ms) of ``steps`` split steps of each learned method in ``learned`` (name -> (method,
    optimiser), names from ``SPLIT``) and of vanilla steps, interleaved; raw samples too.

    The result has ``"vanilla"``, ``"batching"`` and, per learned method, its pieces under its name (``"automix"``,
    ``"adautomix"``), its samples under ``"<name>_all"`` and the median sum of its pieces under ``"<name>_sum"``;
    AdAutoMix's image count is ``"adautomix_k"``.
    """
    snap = monitor.snapshot()
    va_method, va_opt = vanilla_built
    for name, (method, opt) in learned.items():
        method_pieces(method, opt, x, y, SPLIT[name])  # one untimed profiled step each: the profiler warmed up
    two_passes_vs_one_batch(va_method, x, y)  # warm-up of the 2B shapes
    samples: dict[str, list] = {name: [] for name in learned}
    va_samples, batch_samples = [], []
    for _ in range(steps):
        for name, (method, opt) in learned.items():
            samples[name].append(method_pieces(method, opt, x, y, SPLIT[name]))
        va_samples.append(vanilla_pieces(va_method, va_opt, x, y))
        batch_samples.append(two_passes_vs_one_batch(va_method, x, y))
    result = {"vanilla": median_pieces(va_samples), "batching": median_pieces(batch_samples),
              "vanilla_all": va_samples, "batching_all": batch_samples, "n": steps}
    for name, got in samples.items():
        result[name] = median_pieces(got)
        result[f"{name}_all"] = got
        result[f"{name}_sum"] = statistics.median(sum(s.values()) for s in got) * 1e3
    if "adautomix" in learned:
        result["adautomix_k"] = learned["adautomix"][0].mix_samples
    result["vanilla_sum"] = statistics.median(sum(s.values()) for s in va_samples) * 1e3
    result["other_cpu"] = monitor.share(snap, monitor.snapshot())
    return result
