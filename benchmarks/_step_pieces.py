"""Where a training step's time goes: one AutoMix/SAMix (or vanilla) step with its pieces called and timed one by one.

Part of the step-time benchmark (run ``PYTHONPATH=src python benchmarks/step_time.py``), not a module to use on
its own. ``automix_pieces`` replicates the calls of ``AutoMix.compute_losses`` / ``training_step`` here, so that
nothing in src/ has to change for the benchmark; only the single ``backward`` of the summed loss is split in two.
"""

from __future__ import annotations

import statistics
import time

import torch

from _common import gc_paused  # also puts src/ on sys.path when PYTHONPATH=src is missing
from automix.losses import soft_target_cross_entropy
from automix.methods.mixblock import adjust_mask, mask_loss
from automix.mixers._sampling import sample_beta

# AutoMix pieces, in the order they run, with the label used in the tables.
PIECES = [
    ("zero_grad", "zero_grad"),
    ("draws", "draws, one-hot targets"),
    ("ema_clean_fwd", "EMA encoder forward, clean batch (no grad)"),
    ("mix_block", "Mix Block x2 + mask loss + mixing"),
    ("ema_mb_fwd", "EMA encoder forward on the Mix Block's batch (graph to input)"),
    ("ema_mb_bwd", "EMA encoder backward to the input (+ Mix Block backward)"),
    ("online_fwd", "online forward x2 (clean, mixed) + losses"),
    ("online_bwd", "online backward x2"),
    ("opt_step", "SGD step"),
    ("after_step", "after_step (EMA update)"),
]
VANILLA_PIECES = [("zero_grad", "zero_grad"), ("fwd", "forward + loss"), ("bwd", "backward"),
                  ("opt_step", "SGD step"), ("after_step", "after_step")]


def automix_pieces(method, opt, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One AutoMix/SAMix step with its pieces called (and timed) one by one.

    The calls replicate ``AutoMix.compute_losses`` / ``training_step`` (same modules, shapes and draws);
    only the single ``backward`` of the summed loss is split in two (the EMA branch, then the online branch),
    which computes the same gradients.
    """
    clock = time.perf_counter
    t: dict[str, float] = {}
    w = method.loss_weights
    with gc_paused():
        t0 = clock()
        opt.zero_grad(set_to_none=True)
        t1 = clock()
        t["zero_grad"] = t1 - t0

        n = x.shape[0]
        target = method._targets(y)
        lam_mb, lam_bb = sample_beta(method.alpha, 2, method.generator).tolist()
        perm_mb = torch.randperm(n, generator=method.generator).to(x.device)
        perm_bb = torch.randperm(n, generator=method.generator).to(x.device)
        adjust = method.mask_adjust > 0 and float(torch.rand(1, generator=method.generator)) < method.mask_adjust
        size = tuple(x.shape[-2:])
        t2 = clock()
        t["draws"] = t2 - t1

        with torch.no_grad():
            method._tap.clear()
            method.model_k(x)
            z = method._tap.pop()
        t3 = clock()
        t["ema_clean_fwd"] = t3 - t2

        m_mb = method.mix_block(z, lam_mb, perm_mb, size)
        with torch.no_grad():
            if min(lam_bb, 1.0 - lam_bb) <= method.lam_margin:
                m_bb = torch.full((n, 1) + size, 1.0 - lam_bb, device=x.device)
            else:
                m_bb = method.mix_block(z, lam_bb, perm_bb, size)
                if adjust:
                    m_bb = adjust_mask(m_bb, lam_bb)
        loss_mask = mask_loss(m_mb, lam_mb, method.mask_loss_margin, method.mask_loss_mode) * method.mask_loss_weight
        x_mb = torch.lerp(x, x[perm_mb], m_mb.to(x.dtype))
        x_bb = torch.lerp(x, x[perm_bb], m_bb.to(x.dtype))
        t4 = clock()
        t["mix_block"] = t4 - t3

        logits_k = method._logits(method.model_k, method._switch_k, x_mb, mix_head=True)
        method._tap.clear()
        loss_mb = soft_target_cross_entropy(logits_k, torch.lerp(target[perm_mb], target, lam_mb))
        t5 = clock()
        t["ema_mb_fwd"] = t5 - t4

        (w["mb"] * loss_mb + loss_mask).backward()
        t6 = clock()
        t["ema_mb_bwd"] = t6 - t5

        loss_one = soft_target_cross_entropy(method.model(x), target)
        logits_mix = method._logits(method.model, method._switch_q, x_bb, mix_head=True)
        loss_mix = soft_target_cross_entropy(logits_mix, torch.lerp(target[perm_bb], target, lam_bb))
        t7 = clock()
        t["online_fwd"] = t7 - t6

        (w["one"] * loss_one + w["mix"] * loss_mix).backward()
        t8 = clock()
        t["online_bwd"] = t8 - t7

        opt.step()
        t9 = clock()
        t["opt_step"] = t9 - t8

        method.after_step()
        t["after_step"] = clock() - t9
    return t


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
    automix_pieces(am_method, am_opt, x, y)  # one untimed split step: the two-backward path warmed up
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
