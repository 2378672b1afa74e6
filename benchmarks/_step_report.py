"""The report of ``step_time.py``: the step-time table, the PASS/FAIL target and where AutoMix's and AdAutoMix's
time goes.

Part of the step-time benchmark (run ``PYTHONPATH=src python benchmarks/step_time.py``). ``render`` turns the
results dict (the same one written to benchmarks/results/step_time.json) into the body of the ``step_time``
section of docs/benchmarks.md.
"""

from __future__ import annotations

from _step_pieces import ADAUTOMIX, PIECES, VANILLA_PIECES

LABELS = {"none": "vanilla", "mixup": "mixup", "cutmix": "cutmix", "automix": "AutoMix", "samix": "SAMix",
          "adautomix": "AdAutoMix"}
TARGET_RATIO = 3.0  # AutoMix step time <= 3.0x vanilla (the project's target; FLOP floor about 2.9x)
NOISY_SHARE = 0.05  # other processes using more than this share of the CPUs during a measurement: flagged


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _pct(v: float | None) -> str:
    return "?" if v is None else format(v, ".1%")


def _col(w: dict) -> str:
    """A width's column prefix: ``w64 `` for the project's ResNets, nothing for a network timed as built."""
    return "" if w["width"] is None else f"w{w['width']} "


def _name(w: dict) -> str:
    """A width's name in prose: ``width 64`` for the project's ResNets, else the model as timed (``vit_tiny``)."""
    return f"width {w['width']}" if w["width"] is not None else f"`{w['model']}`" if w.get("model") else "the network"


def _setting(results: dict) -> dict:
    return results.get("setting") or {"default": True}


def verdicts(results: dict) -> list[tuple[int | None, bool, float]]:
    """(width, passed, AutoMix / vanilla step time) for every width where AutoMix was timed."""
    out = []
    for wres in results["widths"]:
        st = wres["methods"].get("automix")
        if st is not None:
            out.append((wres["width"], st["ratio"] <= TARGET_RATIO, st["ratio"]))
    return out


def _header(results: dict, command: str) -> list[str]:
    """Command, date, machine, load, model and step; a warning when other processes disturbed a width."""
    info, widths = results["info"], results["widths"]
    b = results["batch_size"]
    load_txt = "; ".join(
        f"{_name(w)}: " + (f"{w['loadavg_before']} before" if w.get("first", True) else
                                   f"{w['loadavg_before']} before (this run's previous width included), other "
                                   f"processes {_pct(w.get('other_cpu_before'))} of the CPUs before")
        + f", other processes {_pct(w['other_cpu'])} of the CPUs during the timed steps" for w in widths)
    setting = _setting(results)
    if setting["default"]:
        machine = (f"- Machine: {info['cpu']}, nproc {info['nproc']}, **CPU only (no GPU measured)**; torch "
                   f"{info['torch']} with {info['threads']} threads (the default), Python {info['python']}")
        net = (f"`create_model(\"{setting['model']}\", num_classes=100)`, DeiT-Ti shape at 32 px with patch 4: 64 "
               "patch tokens and the class token; the learned methods on the tokens of `blocks.5`"
               if setting.get("model", "preact_resnet18") != "preact_resnet18" else
               "CIFAR PreAct-ResNet-18 (`create_model(\"preact_resnet18\", num_classes=100, width=w)`)")
        model = (f"- Model: {net}, batch {b}x3x32x32 float32 NCHW, class-index targets over 100 classes; "
                 "SGD(lr=0.1, momentum=0.9, wd=5e-4)")
    else:
        where = f"**{info['gpu']}** ({setting['device']})" if info.get("gpu") else f"**{setting['device']}**"
        machine = (f"- Machine: {where}, host CPU {info['cpu']}, nproc {info['nproc']}; torch {info['torch']}, "
                   f"Python {info['python']}")
        size = setting["img_size"]
        model = (f"- Model: `create_model(\"{setting['model']}\", num_classes=100"
                 + (", width=w)`" if widths and widths[0]["width"] is not None else ")`")
                 + f", batch {b}x3x{size}x{size}, "
                 + (f"{setting['amp']} autocast (float32 weights)" if setting["amp"] else "float32")
                 + (", channels_last" if setting["channels_last"] else ", NCHW")
                 + (f", `model.compile(backend=\"{setting['compile']}\")`" if setting["compile"] else ", eager")
                 + "; class-index targets over 100 classes; SGD(lr=0.1, momentum=0.9, wd=5e-4)"
                 + ("; each timed step between two `torch.cuda.synchronize()`" if info.get("gpu") else ""))
    lines = [
        f"Command: `{command}`",
        "",
        f"- Date: {info['date']}; run took {info['seconds']} s",
        machine,
        f"- Load average (1, 5, 15 min): {info['loadavg_start']} at start, {info['loadavg_end']} at end; {load_txt}",
        model,
        "- One step = `zero_grad` + `training_step` + `backward` + `opt.step()` + `after_step()`; median of "
        + ", ".join(f"{w['steps']} steps after {w['warmup']} warm-up ({_name(w)})" for w in widths)
        + ", methods interleaved",
        "",
    ]
    noisy = [w for w in widths if (w["other_cpu"] or 0) > NOISY_SHARE or
             (w["breakdown"] and (w["breakdown"]["other_cpu"] or 0) > NOISY_SHARE)]
    if noisy:
        lines += ["**Warning: other processes used more than "
                  f"{NOISY_SHARE:.0%} of the CPUs while width(s) {', '.join(str(w['width']) for w in noisy)} were "
                  "measured; with 2 threads on 2 cores a busy core stalls every parallel region, so those numbers "
                  "are not clean. Re-run on a quiet machine.**", ""]
    return lines


def _step_table(results: dict) -> list[str]:
    """ms/step, img/s and ratio to vanilla per method and width; the spread; the PASS/FAIL target."""
    widths = results["widths"]
    peak = any("peak_mib" in st for w in widths for st in w["methods"].values())  # measured on CUDA only
    cols = ["ms/step", "img/s", "× vanilla"] + (["peak MiB"] if peak else [])
    head = "| method |" + "".join(f" {_col(w)}{c} |" for w in widths for c in cols)
    lines = [head, "|---|" + "---:|" * len(cols) * len(widths)]
    for name in results["methods"]:
        row = [LABELS.get(name, name)]
        for w in widths:
            st = w["methods"].get(name)
            if st is None:  # could not be built or failed its warm-up: listed below the table
                row += ["not timed"] + ["–"] * (len(cols) - 1)
                continue
            row += [_ms(st["median"]), f"{st['img_per_s']:.0f}", f"{st['ratio']:.2f}"]
            row += [f"{st['peak_mib']:.0f}" if "peak_mib" in st else "–"] if peak else []
        lines.append("| " + " | ".join(row) + " |")
    if peak:
        lines += ["", "peak MiB: the most device memory allocated above what was allocated before the method was "
                      "built (its network, optimiser state and one step's activations), during its warm-up."]
    lines += ["", "Spread (min–max ms/step): " + "; ".join(
        (_col(w).strip() + ": " if _col(w) else "") + ", ".join(f"{LABELS.get(n, n)} {_ms(w['methods'][n]['min'])}–"
                                                  f"{_ms(w['methods'][n]['max'])}"
                                                  for n in results["methods"] if n in w["methods"])
        for w in widths)]
    failed = [(w, name, text) for w in widths for name, text in w.get("failed", {}).items()]
    if failed:
        lines += ["", "Not timed:"] + [f"- {LABELS.get(n, n)}{' (' + _col(w).strip() + ')' if _col(w) else ''}: "
                                       f"{text}" for w, n, text in failed]
    vd = verdicts(results)
    if vd:
        lines += ["", f"Target: AutoMix step ≤ {TARGET_RATIO:.1f}× vanilla (FLOP floor ≈ 2.9×; the "
                      "reference measured 4.1× on ResNet-18):", ""]
        names = {w["width"]: _name(w) for w in results["widths"]}
        lines += [f"- **{'PASS' if ok else 'FAIL'}** {names[w]}: {r:.2f}×" for w, ok, r in vd]
    return lines


def _piece_table(bds: list[dict], name: str, pieces: list[tuple[str, str]]) -> list[str]:
    """The pieces of learned method ``name`` at every width, their sum and the measured full step."""
    head = "| piece |" + "".join(f" {_col(w)}ms | {_col(w)}% | {_col(w)}× vanilla |" for w in bds)
    lines = [head, "|---|" + "---:|---:|---:|" * len(bds)]
    for key, label in pieces:
        row = [label]
        for w in bds:
            bd, total = w["breakdown"], w["breakdown"][f"{name}_sum"]
            v = bd[name][key]
            row += [_ms(v), f"{100 * v / total:.1f}", f"{v / w['methods']['none']['median']:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    row = ["**sum of pieces**"]
    for w in bds:
        total = w["breakdown"][f"{name}_sum"]
        row += [f"**{_ms(total)}**", "100", f"**{total / w['methods']['none']['median']:.2f}**"]
    lines.append("| " + " | ".join(row) + " |")
    row = [f"full {LABELS[name]} step (table above)"]
    for w in bds:
        full = w["methods"][name]["median"]
        row += [_ms(full), "", f"{full / w['methods']['none']['median']:.2f}"]
    lines.append("| " + " | ".join(row) + " |")
    return lines


def _breakdown(bds: list[dict]) -> list[str]:
    """The AutoMix, AdAutoMix and vanilla pieces at every width that has a breakdown, and the floor checks."""
    automix = [w for w in bds if "automix" in w["breakdown"]]
    adautomix = [w for w in bds if "adautomix" in w["breakdown"]]
    n_steps = ", ".join(f"{w['breakdown']['n']} ({_name(w)})" for w in bds)
    lines = []
    if automix:
        lines += ["", "Where AutoMix's time goes (an ordinary step under `torch.profiler`, split by the "
                  "`record_function` labels in `AutoMix.compute_losses`, its backward by the label of the forward op "
                  f"each autograd node came from; median of {n_steps} profiled steps, so the profiler's own cost is "
                  "in the sum; \"× vanilla\" = piece time / vanilla full-step time at that width):", ""]
        lines += _piece_table(automix, "automix", PIECES)
    if adautomix:
        lines += ["", "Where AdAutoMix's time goes (the same split, by the `adautomix/` labels in "
                  f"`AdAutoMix.compute_losses`; median of {n_steps} profiled steps):", ""]
        lines += _piece_table(adautomix, "adautomix", ADAUTOMIX.pieces)
    lines += ["", "Vanilla step split the same way (the yardstick):", ""]
    head = "| piece |" + "".join(f" {_col(w)}ms | {_col(w)}% |" for w in bds)
    lines += [head, "|---|" + "---:|---:|" * len(bds)]
    for key, label in VANILLA_PIECES:
        row = [label]
        for w in bds:
            v, total = w["breakdown"]["vanilla"][key], w["breakdown"]["vanilla_sum"]
            row += [_ms(v), f"{100 * v / total:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    row = ["**sum of pieces**"]
    for w in bds:
        row += [f"**{_ms(w['breakdown']['vanilla_sum'])}**", "100"]
    lines.append("| " + " | ".join(row) + " |")
    if automix:
        lines += ["", "Floor check against the vanilla pieces (an ideal AutoMix step is 4 forwards, one of them "
                      "without grad, 2 full backwards and one backward to the input only):"]
        for w in automix:
            v, a = w["breakdown"]["vanilla"], w["breakdown"]["automix"]
            fwd2 = a["online_fwd"] / max(v["fwd"], 1e-9)
            bwd2 = a["online_bwd"] / max(v["bwd"], 1e-9)
            lines.append(
                f"- {_name(w)}: online forward ×2 = {fwd2:.2f}× the vanilla forward, online backward ×2 = "
                f"{bwd2:.2f}× the vanilla backward; EMA clean forward (no grad) = "
                f"{a['ema_clean_fwd'] / max(v['fwd'], 1e-9):.2f}×, EMA forward with graph = "
                f"{a['ema_mb_fwd'] / max(v['fwd'], 1e-9):.2f}× the vanilla forward; EMA backward to the input = "
                f"{a['ema_mb_bwd'] / max(v['bwd'], 1e-9):.2f}× the vanilla backward.")
        lines += ["", "The floor on this machine, from the vanilla pieces: 4 vanilla forwards + 2 vanilla backwards + "
                      "AutoMix's measured backward to the input + one SGD step, over the vanilla step:"]
        for w in automix:
            v, a = w["breakdown"]["vanilla"], w["breakdown"]["automix"]
            floor = 4 * v["fwd"] + 2 * v["bwd"] + a["ema_mb_bwd"] + v["opt_step"]
            lines.append(f"- {_name(w)}: {floor / w['methods']['none']['median']:.2f}× (a backward costs "
                         f"{v['bwd'] / max(v['fwd'], 1e-9):.2f}× a forward here; the 2.9× FLOP floor assumes 2×).")
    if adautomix:
        lines += ["", "AdAutoMix's floor, set by its own passes: with K images, 2 + K EMA forwards (the clean batch "
                      "and the K sources without grad, the generator's batch with graph) and its online passes "
                      "(3 for K > 2: clean, linear mix, masked mix; 2 for K = 2), each a vanilla forward, + one "
                      "vanilla backward per online pass + its measured backward to the input + one SGD step, over "
                      "the vanilla step (the K source passes are the known extra cost of the cosine term):"]
        for w in adautomix:
            v, a, k = w["breakdown"]["vanilla"], w["breakdown"]["adautomix"], w["breakdown"].get("adautomix_k", 3)
            online = 3 if k > 2 else 2
            floor = (2 + k + online) * v["fwd"] + online * v["bwd"] + a["ema_mb_bwd"] + v["opt_step"]
            lines.append(
                f"- {_name(w)} (K = {k}): {floor / w['methods']['none']['median']:.2f}×; measured "
                f"{w['methods']['adautomix']['ratio']:.2f}×; the K source passes "
                f"{a['ema_sources_fwd'] / max(v['fwd'], 1e-9):.2f}× the vanilla forward "
                f"({a['ema_sources_fwd'] / max(w['methods']['none']['median'], 1e-9):.2f}× the vanilla step).")
    batched = [w for w in bds if "batching" in w["breakdown"]]
    if batched:
        lines += ["", "Would one batch of 2B be cheaper than AutoMix's two online passes over B? Vanilla network, "
                      "forward + backward, same images (plain BN, so an upper bound on a per-half-BN batched pass):"]
        for w in batched:
            bt = w["breakdown"]["batching"]
            lines.append(f"- {_name(w)}: two passes of {w['batch_size']} {_ms(bt['two_of_b'])} ms, one pass "
                         f"of {2 * w['batch_size']} {_ms(bt['one_of_2b'])} ms "
                         f"({bt['one_of_2b'] / max(bt['two_of_b'], 1e-9):.2f}×).")
    return lines


def render(results: dict, command: str) -> str:
    """The body of the ``step_time`` section of docs/benchmarks.md (also printed)."""
    model = _setting(results).get("model")
    results = {**results, "widths": [{**w, "model": model} for w in results["widths"]]}
    lines = _header(results, command) + _step_table(results)
    bds = [w for w in results["widths"] if w["breakdown"]]
    if bds:
        lines += _breakdown(bds)
    if results.get("json"):
        lines += ["", f"Raw per-step times are in `{results['json']}`."]
    return "\n".join(lines) + "\n"
