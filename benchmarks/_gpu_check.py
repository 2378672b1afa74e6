"""The Python side of ``benchmarks/gpu_check.sh``: the machine's facts, synthetic CIFAR data and the results file.

Part of the GPU check (run ``bash benchmarks/gpu_check.sh``), not a benchmark of its own. Subcommands:

    python benchmarks/_gpu_check.py env DEVICE                 # torch, CUDA and the device; exit 1 if unusable
    python benchmarks/_gpu_check.py methods                    # the registered methods, the step-time order first
    python benchmarks/_gpu_check.py fake-cifar DIR N           # CIFAR-10 python pickles of random images, N per file
    python benchmarks/_gpu_check.py resize DEVICE              # the loader's per-batch resize on DEVICE vs the CPU
    python benchmarks/_gpu_check.py report WORK OUT COMMAND    # WORK's stage files -> one markdown file at OUT

A GPU machine may have no network and no data, so the training stage reads CIFAR-10's own file layout
(``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``) filled with random 32x32 images through
the real ``cifar10`` loader: the step, not the accuracy, is under test.

The stage files the script leaves in WORK: ``stages.tsv`` (name, status, seconds, detail per stage), the step-time
JSONs ``steps-eager.json``, ``steps-compiled.json``, ``steps-compiled-rest.json``, ``backbone-<name>.json``, and
``train-<method>/metrics.json`` of each training run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pickle
import platform
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ("none", "mixup", "cutmix", "automix", "samix")  # the methods every stage times first
LABELS = {"none": "vanilla", "automix": "AutoMix", "samix": "SAMix"}


def cmd_env(device: str) -> int:
    import torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
          f"host {socket.gethostname()}")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            print(f"device {device}: torch sees no CUDA device (torch {torch.__version__}, CUDA build "
                  f"{torch.version.cuda}); use --tiny for the CPU run", file=sys.stderr)
            return 1
        props = torch.cuda.get_device_properties(dev)
        print(f"device {device}: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
              f"{props.multi_processor_count} SMs, capability {props.major}.{props.minor}, "
              f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    else:
        print(f"device {device}")
    return 0


def cmd_methods() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from automix.methods import list_methods

    names = list(CORE) + [m for m in list_methods() if m not in CORE]
    print(",".join(names))
    return 0


def cmd_fake_cifar(folder: str, per_file: int) -> int:
    """CIFAR-10's pickle layout in ``folder``, ``per_file`` random images in each of its six files."""
    import numpy as np

    if per_file < 10:
        raise SystemExit(f"N must be >= 10 (one image per class at least), got {per_file}")
    out = Path(folder) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = g.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_file)]  # every class present in every file
        with open(out / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f, protocol=2)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}, f, protocol=2)
    print(out)
    return 0


def cmd_resize(device: str) -> int:
    """How far the per-batch resize the trainer's loader runs on ``device`` (CIFAR held at 32 px, trained at 224)
    is from the same resize on the CPU, where the tests check it bit for bit against a set resized at load: up
    (32 -> 224) and down (224 -> 32, antialiased). Prints the share of pixels that differ and by how many uint8
    levels at most; a measurement, not a pass / fail (a GPU's interpolation may round a pixel the other way)."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from automix.data import resize_images

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    small = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, generator=g)
    parts = []
    for src, size, what in ((small, 224, "32 -> 224"), (resize_images(small, 224), 32, "224 -> 32")):
        cpu = resize_images(src, size)
        there = resize_images(src.to(dev), size).cpu()
        diff = (cpu.int() - there.int()).abs()
        parts.append(f"{what}: {int((diff > 0).sum())} of {diff.numel()} px differ, max {int(diff.max())}")
    # one line (the stage's detail in the report): share of uint8 pixels that differ, largest difference in levels
    print(f"resize on {device} vs the CPU, 128 images: " + "; ".join(parts))
    return 0


# ---------------------------------------------------------------------------------------------- report
def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _step_rows(runs: list[dict]) -> dict[str, dict]:
    """method -> its first-width stats merged over step-time runs (failed ones as {"failed": text})."""
    rows: dict[str, dict] = {}
    for run in runs:
        width = run["widths"][0]
        for name in run["methods"]:
            if name in width["methods"]:
                rows[name] = width["methods"][name]
            elif name in width.get("failed", {}):
                rows.setdefault(name, {"failed": width["failed"][name]})
    return rows


def _step_table(work: Path, lines: list[str]) -> None:
    eager = _load(work / "steps-eager.json")
    compiled = [r for r in (_load(work / "steps-compiled.json"), _load(work / "steps-compiled-rest.json")) if r]
    if eager is None and not compiled:
        lines += ["No step-time results (see the stages above).", ""]
        return
    first = eager or compiled[0]
    s, w = first["setting"], first["widths"][0]
    width = "" if w["width"] is None else f", width {w['width']}"
    lines += [f"`{s['model']}`{width}, batch {first['batch_size']}x3x{s['img_size']}x{s['img_size']}, "
              f"{s['amp'] or 'float32'} autocast, {'channels_last' if s['channels_last'] else 'NCHW'}; median of "
              f"{w['steps']} steps after {w['warmup']} warm-up, each between two device synchronisations; "
              f"compiled: `model.compile(backend=\"{compiled[0]['setting']['compile'] if compiled else '?'}\")`, "
              "its compilation in the warm-up. × vanilla: over vanilla's step in the same run.", "",
              "| method | eager ms/step | eager × vanilla | eager peak MiB | compiled ms/step | compiled × vanilla "
              "| compiled / eager |", "|---|---:|---:|---:|---:|---:|---:|"]
    eager_rows = _step_rows([eager] if eager else [])
    comp_rows = _step_rows(compiled)
    # Ratios of compiled steps are to the compiled vanilla of the same run (the rest run has its own vanilla).
    names = list(dict.fromkeys([*(eager["methods"] if eager else []), *(n for r in compiled for n in r["methods"])]))
    notes = []
    for name in names:
        e, c = eager_rows.get(name), comp_rows.get(name)
        cells = [_label(name)]
        for st in (e, c):
            if st is None:
                cells += ["–", "–"] + (["–"] if st is e else [])
            elif "failed" in st:
                cells += ["not timed", "–"] + (["–"] if st is e else [])
                notes.append(f"- {_label(name)} ({'eager' if st is e else 'compiled'}): {st['failed']}")
            else:
                cells += [_ms(st["median"]), f"{st['ratio']:.2f}"]
                if st is e:
                    cells.append(f"{st['peak_mib']:.0f}" if "peak_mib" in st else "–")
        both = e is not None and c is not None and "median" in e and "median" in c
        cells.append(f"{c['median'] / e['median']:.2f}" if both else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if notes:
        lines += ["Not timed:", *notes, ""]


def _backbone_table(work: Path, lines: list[str]) -> None:
    files = sorted(work.glob("backbone-*.json"))
    skipped = (work / "backbones-skipped.txt").read_text().strip().splitlines() \
        if (work / "backbones-skipped.txt").is_file() else []
    if not files and not skipped:
        lines += ["No backbone results (see the stages above).", ""]
        return
    if files:
        lines += ["| backbone | batch | vanilla ms/step | AutoMix ms/step | AutoMix × vanilla | AutoMix peak MiB |",
                  "|---|---:|---:|---:|---:|---:|"]
    notes = []
    for path in files:
        run = _load(path)
        if run is None:
            continue
        s, w = run["setting"], run["widths"][0]
        van, am = w["methods"].get("none"), w["methods"].get("automix")
        cells = [f"`{s['model']}`", f"{run['batch_size']}x3x{s['img_size']}x{s['img_size']}",
                 _ms(van["median"]) if van else "–"]
        if am is None:
            cells += ["not timed", "–", "–"]
            notes.append(f"- `{s['model']}`: AutoMix not timed: {w.get('failed', {}).get('automix', '?')}")
        else:
            cells += [_ms(am["median"]), f"{am['ratio']:.2f}", f"{am['peak_mib']:.0f}" if "peak_mib" in am else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + notes + [f"- skipped: {line}" for line in skipped] + [""]


def _sync_table(work: Path, lines: list[str]) -> None:
    runs = sorted((p for p in work.glob("train-*") if p.is_dir()), key=lambda p: (p.name != "train-none", p.name))
    if not runs:
        lines += ["No training runs (see the stages above).", ""]
        return
    lines += ["| method | epochs | val top-1 (random labels: chance) | steps checked | host syncs | syncs / step "
              "| verdict |", "|---|---:|---:|---:|---:|---:|---|"]
    wheres = []
    for run in runs:
        method = run.name[len("train-"):]
        metrics = _load(run / "metrics.json")
        if metrics is None:
            lines.append(f"| {_label(method)} | – | – | – | – | – | no metrics.json (the run failed) |")
            continue
        sync = metrics.get("sync_debug") or {}
        steps, syncs = sync.get("steps", 0), sync.get("syncs", 0)
        if not sync.get("checked"):
            verdict = f"not checked ({sync.get('device', '?')}: no CUDA)"
        else:
            verdict = "**no host sync**" if syncs == 0 else "**syncs**"
        lines.append(f"| {_label(method)} | {metrics.get('epochs')} | {metrics.get('val_top1', float('nan')):.2f} | "
                     f"{steps} | {syncs} | {syncs / steps if steps else 0:.2f} | {verdict} |")
        for where, count in (sync.get("where") or {}).items():
            wheres.append(f"- {_label(method)}: `{where}` x {count}")
    lines.append("")
    if wheres:
        lines += ["Where (region: file:line, count; `batch` = fetching the batch, `step` = forward, backward, "
                  "optimiser step, after_step):", *wheres, ""]


def cmd_report(work: str, out: str, command: str) -> int:
    work_dir = Path(work)
    stages = []
    if (work_dir / "stages.tsv").is_file():
        stages = [line.split("\t") for line in (work_dir / "stages.tsv").read_text().splitlines() if line.strip()]
    env = (work_dir / "env.txt").read_text().strip() if (work_dir / "env.txt").is_file() else "?"
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# GPU check", "", f"Command: `{command}`", "", f"- Date: {date}; host {socket.gethostname()}",
             *[f"- {line}" for line in env.splitlines()],
             f"- Stages (each under its own `timeout`, all within the script's time budget): "
             f"{sum(float(s[2]) for s in stages if len(s) > 2):.0f} s", "",
             "| stage | status | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {s[0]} | {s[1]} | {s[2] if len(s) > 2 else ''} | {s[3] if len(s) > 3 else ''} |" for s in stages]
    lines += ["", "## Step time of every method", ""]
    _step_table(work_dir, lines)
    lines += ["## AutoMix on other backbones (224 px)", ""]
    _backbone_table(work_dir, lines)
    lines += ["## Host synchronisation in the training step (`automix train --sync-debug warn`, 2 epochs)", ""]
    _sync_table(work_dir, lines)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
    print(f"wrote {path}")
    return 0


def main(argv: list[str]) -> int:
    usage = "usage: _gpu_check.py env DEVICE | methods | fake-cifar DIR N | resize DEVICE | report WORK OUT COMMAND"
    if not argv:
        raise SystemExit(usage)
    cmd, rest = argv[0], argv[1:]
    if cmd == "env" and len(rest) == 1:
        return cmd_env(rest[0])
    if cmd == "methods" and not rest:
        return cmd_methods()
    if cmd == "fake-cifar" and len(rest) == 2:
        return cmd_fake_cifar(rest[0], int(rest[1]))
    if cmd == "resize" and len(rest) == 1:
        return cmd_resize(rest[0])
    if cmd == "report" and len(rest) == 3:
        return cmd_report(*rest)
    raise SystemExit(usage)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    sys.exit(main(sys.argv[1:]))
