"""The report of ``mixers.py``: the markdown table, its notes and the PASS/FAIL performance targets.

Part of the mixer-throughput benchmark (run ``PYTHONPATH=src python benchmarks/mixers.py``). ``render`` turns the
results dict (the same one written to benchmarks/results/mixers.json) into the body of the ``mixers`` section of
docs/benchmarks.md. A comparison whose case was not measured (timm or the ``mixup`` package not installed) is
shown as "–".
"""

from __future__ import annotations

from _mixers_cases import MODES, NUM_CLASSES, SHAPES, SWITCHES


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


def _per_shape(look: dict, ours: tuple, ref: tuple, title: str, ok, ref_name: str = "", faster: bool = False,
               spec: str = ".2f") -> list[tuple[bool, str]]:
    """One target at every shape where both cases were measured: ours/ref (ref/ours if ``faster``) must pass ``ok``."""
    pairs = [(s, look.get((*ours, s)), look.get((*ref, s))) for s in SHAPES]
    pairs = [(s, a, b) for s, a, b in pairs if a and b]
    if not pairs:  # e.g. timm not installed: no verdict rather than a false FAIL
        return []
    value = {s: b["ms"] / a["ms"] if faster else a["ms"] / b["ms"] for s, a, b in pairs}
    return [(all(ok(v) for v in value.values()),
             title + ", ".join(f"{s} {_fmt(a['ms'])} ms vs {ref_name}{_fmt(b['ms'])} ms = {value[s]:{spec}}×"
                               for s, a, b in pairs))]


def targets(results: dict) -> list[tuple[bool, str]]:
    """The performance targets as (passed, text), in the order they are listed."""
    look = _lookup(results)
    elem_cutmix = ("automix", "cutmix", "elem")
    out = _per_shape(look, ("automix", "mixup", "batch"), ("floor", "lerp floor", "-"),
                     "batch-mode `mixup` within 1.3× of the lerp floor: ", lambda r: r <= 1.3)
    out += _per_shape(look, elem_cutmix, ("timm", "cutmix", "elem"),
                      "elem-mode `cutmix` ≥ 10× faster than timm's elem mode: ", lambda r: r >= 10,
                      ref_name="timm ", faster=True, spec=".1f")
    out += _per_shape(look, elem_cutmix, ("automix", "cutmix", "batch"),
                      "elem-mode `cutmix` within 2× of batch-mode `cutmix`: ", lambda r: r <= 2)

    # 3. no mixer slower than the timm / mixup-package equivalent in the same mode
    comps = []
    for c in results["cases"]:
        if c["kind"] in ("timm", "mixup"):
            ours = look.get(("automix", c["method"], c["mode"], c["shape"]))
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


def _header(results: dict, command: str) -> list[str]:
    """Command, date, machine, how disturbed the run was, versions and inputs."""
    info = results["info"]
    return [
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
        "- Inputs: float32 contiguous batches, " + " and ".join(f"{s} = B×C×H×W {'×'.join(map(str, d))}"
                                                                  for s, d in SHAPES.items())
        + f"; class-index targets, num_classes={NUM_CLASSES}; a fixed `torch.Generator` passed per call.",
        "",
    ]


def _table(results: dict) -> list[str]:
    """One row per reference and per (automix mixer, mode); per shape: ours, ×floor, timm and mixup-pkg."""
    look, shapes = _lookup(results), list(SHAPES)
    lines = []
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
    return lines


def _notes(results: dict) -> list[str]:
    """What each column means and how every library was called."""
    return [
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


def render(results: dict, command: str) -> str:
    """The body of the ``mixers`` section of docs/benchmarks.md (also printed)."""
    lines = _header(results, command) + _table(results) + _notes(results)
    tg = targets(results)
    if tg:
        lines += ["", "Targets:", ""]
        lines += [f"- **{'PASS' if ok else 'FAIL'}** {text}" for ok, text in tg]
    return "\n".join(lines) + "\n"
