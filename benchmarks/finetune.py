"""Fine-tuning on CPU with no download: pretrain on six CIFAR-10 classes, fine-tune on the other four.

Exact command (paths, here and in the options, are relative to the repository root):

    PYTHONPATH=src python benchmarks/finetune.py

What it does, reusing every finished run (``automix bench``'s cache: run folders and the results files):

1. builds two image folders of symlinks to ``../shared/data/cifar10/train`` under ``<root>/data/``:
   ``pretrain/<class>`` holds every training image of airplane, automobile, bird, cat, deer and dog (30,000),
   and ``finetune/train/<class>`` + ``finetune/val/<class>`` hold 125 + 250 images of each of frog, horse, ship
   and truck (a seeded pick, disjoint): a user's small train/ + val/ folder (500 + 1,000 images) of classes the
   network has never seen;
2. pretrains a width-16 PreAct-ResNet-18 once on ``pretrain/`` (vanilla, 12 epochs; protocol
   ``finetune-pretrain``) and copies its ``best.pt`` (chosen on 10% of ``pretrain/`` held out) to
   ``<root>/data/pretrained-<config hash>.pt``, so that the fine-tuning runs' config hashes change whenever
   the pretraining does;
3. fine-tunes it with ``--initial-checkpoint`` (a new 4-class head, ``--lr 0.01 --head-lr-scale 10``, 30
   epochs) with vanilla, mixup, cutmix, AutoMix and SAMix over seeds 0, 1, 2, plus vanilla from scratch for
   scale (protocol ``finetune-cpu``), each run evaluated on the 1,000 ``val/`` images;
4. gathers the finished runs into ``<root>/finetune-cpu.json`` and ``<root>/finetune-pretrain.json``
   (``automix.bench.aggregate``) and rewrites the section ``<!-- accuracy-finetune-cpu:start -->`` of
   docs/benchmarks.md (mean ± std over seeds, with this command) from the results file alone.

Why held-apart CIFAR classes rather than the built-in digits: the digits are 8x8 greyscale, so a network
pretrained on CIFAR could not take them, and one pretrained on half the digits would transfer between ten
near-identical glyph sets; six natural-image classes to four others at the same resolution is the situation
of a user fine-tuning a pretrained network on a small folder of their own, and it needs no download. Six and
four, not five and five: with the same class count the pretrained head would be loaded as it is, its classes
mapped onto the new ones by position; with another count it is re-initialised, as for a user's own classes.

Options:
    --root DIR       where data, runs and results files go (default benchmarks/results/finetune).
    --tiny           a smoke run (< 2 minutes on 2 cores): 20 pretraining images per class, 10 + 10 per
                     fine-tuning class, width 4, one epoch each, seed 0; protocol names end in ``-tiny`` and the
                     report goes to ``<root>/finetune.md``, never to docs/benchmarks.md.
    --methods a b    only these fine-tuning cells (default: all).
    --seeds 0 1      only these seeds (default 0 1 2).
    --report-only    train nothing; rewrite the report from the results files.
    --no-report      train, gather, write no report.
    --threads N      OMP_NUM_THREADS of the training processes (default: as this process's environment).
    --source DIR     the CIFAR-10 ImageFolder (default ../shared/data/cifar10/train).

Full run: pretraining 30,000 images x 12 epochs, then 18 fine-tuning runs of 500 images x 30 epochs (evaluated
every 5 epochs). At the speeds of docs/benchmarks.md on 2 quiet cores (width 16: vanilla ~1,000 img/s, AutoMix
~300 img/s) that is about 7 minutes of pretraining and 10 of fine-tuning (vanilla-like runs ~20 s, AutoMix and
SAMix ~60 s, plus ~5 s to start each process): about 20 minutes. Under other load it stretches accordingly: with
a load average of 8 on the 2 cores, vanilla ran at ~100 img/s, which makes it about 2 to 3 hours.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    from automix import bench
except ImportError:  # run without PYTHONPATH=src
    sys.path.insert(0, str(ROOT / "src"))
    from automix import bench

COMMAND = "PYTHONPATH=src python benchmarks/finetune.py"
DOC = ROOT / "docs" / "benchmarks.md"
PRETRAIN_CLASSES = slice(0, 6)   # airplane, automobile, bird, cat, deer, dog (sorted folder names)
FINETUNE_CLASSES = slice(6, 10)  # frog, horse, ship, truck

FULL = {"pretrain_per_class": None, "train_per_class": 125, "val_per_class": 250, "width": 16,
        "pretrain_epochs": 12, "epochs": 30, "seeds": [0, 1, 2], "suffix": "", "pretrain_batch": 100, "batch": 50}
TINY = {"pretrain_per_class": 20, "train_per_class": 10, "val_per_class": 10, "width": 4,
        "pretrain_epochs": 1, "epochs": 1, "seeds": [0], "suffix": "-tiny", "pretrain_batch": 16, "batch": 10}

NOTES = ("Fine-tuning from a network pretrained on the other six CIFAR-10 classes (protocol in the docstring of "
         "benchmarks/finetune.py): {train} training images ({per} per class: frog, horse, ship, truck), "
         "evaluated on {val} others of the same classes (the val/ folder). `vanilla_scratch` is the same network "
         "and schedule without the pretrained weights.")


def build_folders(source: Path, out: Path, sizes: dict) -> tuple[Path, Path]:
    """``out/pretrain/<class>`` and ``out/finetune/{train,val}/<class>`` of symlinks into ``source``.

    A seeded pick per class (Python's ``random.Random``, stable across versions); rebuilt only when the pick
    would differ (a ``.pick.json`` beside the folders records it).
    """
    classes = sorted(e.name for e in os.scandir(source) if e.is_dir() and not e.name.startswith("."))
    if len(classes) != 10:
        raise ValueError(f"--source {source}: expected the 10 CIFAR-10 class folders, found {len(classes)}")
    pick = {"source": str(source.resolve()), **{k: sizes[k] for k in ("pretrain_per_class", "train_per_class",
                                                                     "val_per_class")}}
    record = out / ".pick.json"
    pre, fine = out / "pretrain", out / "finetune"
    if record.is_file() and json.loads(record.read_text()) == pick:
        return pre, fine
    for folder in (pre, fine):
        shutil.rmtree(folder, ignore_errors=True)
    for index, name in enumerate(classes):
        files = sorted(f for f in os.listdir(source / name) if not f.startswith("."))
        random.Random(1000 + index).shuffle(files)
        if name in classes[PRETRAIN_CLASSES]:
            groups = {pre / name: files[: sizes["pretrain_per_class"]]}
        else:
            n_train, n_val = sizes["train_per_class"], sizes["val_per_class"]
            groups = {fine / "train" / name: files[:n_train], fine / "val" / name: files[n_train:n_train + n_val]}
        for folder, chosen in groups.items():
            folder.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                os.symlink((source / name / f).resolve(), folder / f)
    record.write_text(json.dumps(pick))
    return pre, fine


def common(sizes: dict) -> dict:
    return {"dataset": "imagefolder", "model": "preact_resnet18", "width": sizes["width"], "opt": "sgd",
            "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005, "min_lr": 0.0, "eval_interval": 5,
            "save_images": False, "progress": False}


def pretrain_protocol(data: Path, sizes: dict) -> bench.Protocol:
    base = {**common(sizes), "data_dir": str(data), "val_split": 0.1, "split_seed": 0,
            "epochs": sizes["pretrain_epochs"], "batch_size": sizes["pretrain_batch"], "lr": 0.1}
    return bench.Protocol(name="finetune-pretrain" + sizes["suffix"], base=base,
                          methods={"vanilla": {"method": "none"}}, seeds=[0], path=f"{__file__} (pretraining)")


def finetune_protocol(data: Path, start: Path, sizes: dict) -> bench.Protocol:
    base = {**common(sizes), "data_dir": str(data), "initial_checkpoint": str(start), "epochs": sizes["epochs"],
            "batch_size": sizes["batch"], "eval_batch_size": 500, "lr": 0.01, "head_lr_scale": 10.0, "model_ema": True,
            "model_ema_decay": 0.98}
    methods = {"vanilla": {"method": "none"}, "mixup": {"method": "mixup", "alpha": 0.2},
               "cutmix": {"method": "cutmix", "alpha": 1.0}, "automix": {"method": "automix", "alpha": 2.0},
               "samix": {"method": "samix", "alpha": 2.0},
               # The same run without the pretrained weights (a from-scratch lr for every layer): what they are worth.
               "vanilla_scratch": {"method": "none", "initial_checkpoint": None, "lr": 0.1, "head_lr_scale": 1.0}}
    return bench.Protocol(name="finetune-cpu" + sizes["suffix"], base=base, methods=methods, seeds=sizes["seeds"],
                          path=__file__, notes=NOTES.format(train=4 * sizes["train_per_class"],
                                                            per=sizes["train_per_class"],
                                                            val=f"{4 * sizes['val_per_class']:,}"))


def run_and_gather(proto: bench.Protocol, root: Path, methods=None, seeds=None, train: bool = True) -> dict:
    if train:
        bench.run_grid(proto, root, methods, seeds)
    return bench.aggregate(root, proto)


def pretrained_copy(root: Path, proto: bench.Protocol, data_out: Path, copy: bool = True) -> Path:
    """The pretraining run's best.pt under a name carrying its config hash (copied there when ``copy``)."""
    cfg = bench.run_config(proto, "vanilla", 0, bench.run_dir(root, proto, "vanilla", 0))
    best = bench.run_dir(root, proto, "vanilla", 0) / "best.pt"
    target = data_out / f"pretrained-{bench.config_hash(cfg)}.pt"
    if copy and not target.is_file():
        if not best.is_file():
            raise FileNotFoundError(f"the pretraining run left no {best}")
        shutil.copyfile(best, target)
    return target


def write_report(proto: bench.Protocol, results: dict, doc: Path, command: str) -> None:
    if any(r["method"] == m for r in results["runs"] for m in proto.methods):
        bench.report(proto, results, doc, command)  # with its cost plot beside the report
    else:  # nothing finished yet: the table says so, and no empty plot is written or linked
        body = bench.markdown(proto, bench.collect(proto, results), command, None)
        bench.write_section(doc, f"accuracy-{proto.section}", body, f"## Accuracy: {proto.section}")
    print(f"wrote the section accuracy-{proto.section} of {doc}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="benchmarks/results/finetune")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=None)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--source", default="../shared/data/cifar10/train")
    args = ap.parse_args(argv)
    os.chdir(ROOT)  # the protocols' paths are relative to the repository root, as the runs record them
    sizes = TINY if args.tiny else FULL
    root, source = Path(args.root), Path(args.source)
    # The training runs are child processes (automix bench): they import this checkout's automix.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    data_out = root / "data"
    pre_dir, fine_dir = build_folders(source, data_out, sizes) if not args.report_only else \
        (data_out / "pretrain", data_out / "finetune")
    pre = pretrain_protocol(pre_dir, sizes)
    if args.tiny:  # a smoke run keeps its decoded images beside it, not in the user's cache
        pre.base["cache_dir"] = str(root / "cache")
    run_and_gather(pre, root, train=not args.report_only)
    start = pretrained_copy(root, pre, data_out, copy=not args.report_only)
    fine = finetune_protocol(fine_dir, start, sizes)
    if args.tiny:
        fine.base["cache_dir"] = str(root / "cache")
    bad = [m for m in args.methods or [] if m not in fine.methods]
    if bad:
        raise SystemExit(f"--methods {bad}: not cells of {fine.name}: {list(fine.methods)}")
    results = run_and_gather(fine, root, args.methods, args.seeds, train=not args.report_only)
    if not args.no_report:
        doc = root / "finetune.md" if args.tiny else DOC
        command = COMMAND + (" --tiny" if args.tiny else "")
        command += f" --root {args.root}" if args.root != ap.get_default("root") else ""
        write_report(fine, results, doc, command)
    done = [f"{r['method']} seed {r['seed']}: {r['metrics'].get('val_top1', float('nan')):.2f}"
            for r in results["runs"]]
    print(f"{fine.name}: {len(done)} finished runs" + (": " + "; ".join(done) if done else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
