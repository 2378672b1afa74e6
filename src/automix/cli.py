"""``automix`` command line: train, eval, show, plot, list.

Usage:
    automix train                                   # AutoMix on the built-in digits, offline, ~3 min on CPU
    automix train --config configs/quickstart.yaml --epochs 5
    automix train --dataset cifar10 --data-dir ../shared/data/cifar10/train --method cutmix --alpha 0.2
    torchrun --nproc_per_node=2 -m automix train ...   # DDP, one process per GPU (or CPU slot)
    automix eval runs/automix                       # accuracy JSON of the run's best.pt (or name a .pt file)
    automix show --method fmix --output fmix.png    # a picture of mixed samples
    automix show --checkpoint runs/automix          # the run's mixes, into runs/automix/show-automix.png
    automix plot runs/a runs/b --output curves.png  # default: curves.png next to the runs
    automix list
    automix bench configs/bench/cifar10_cpu.yaml     # the accuracy grid (cached, resumable)
    automix bench PROTOCOL --launcher slurm --slurm-partition gpu --slurm-time 240 --array-parallelism 8
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import signal
import sys
from pathlib import Path

from ._jsonio import dumps
from ._paths import make_dir, make_parent


def _cmd_train(ns: argparse.Namespace) -> int:
    from .train import distributed as dist_util
    from .train import fit
    from .train.args import config_from_args

    metrics = fit(config_from_args(ns))
    if dist_util.env_rank() == 0:  # under torchrun one summary, rank 0's: the others hold no evaluation
        print(dumps(metrics, indent=2))
    return 0


def _cmd_eval(ns: argparse.Namespace) -> int:
    import torch

    from .train.inference import evaluate_checkpoint

    if ns.threads is not None:
        torch.set_num_threads(ns.threads)
    results = evaluate_checkpoint(ns.checkpoint, ns.split, ns.data_dir, ns.device, ns.batch_size)
    text = dumps({k: v for k, v in results.items() if k != "config"}, indent=2)
    if ns.output:
        make_parent(ns.output, "--output").write_text(dumps(results, indent=2) + "\n")
    print(text)
    return 0


def _cmd_show(ns: argparse.Namespace) -> int:
    import torch

    from . import viz
    from .train import checkpoint as ckpt
    from .train.args import config_from_args
    from .train.build import build_method, build_model, image_side
    from .train.config import Config
    from .train.inference import load_trained
    from .train.loader import eval_batches
    from .train.setup import check_before_data, load_data

    # Training flags default to "not given"; --output here is the picture (show has no run-dir flag).
    flags = argparse.Namespace(**{k: v for k, v in vars(ns).items() if k != "output"})
    given = {k: v for k, v in vars(flags).items() if k in Config.__dataclass_fields__}
    if ns.config is not None:
        given["config"] = ns.config
    if "threads" in given:
        torch.set_num_threads(given.pop("threads"))
    if ns.checkpoint:
        ignored = sorted(set(given) - {"data_dir", "cache_dir"})
        if ignored:
            flag = "--" + ignored[0].replace("_", "-")
            raise ValueError(f"{flag} {given[ignored[0]]!r} is not used with --checkpoint (the run's own config "
                             "is; only --data-dir and --cache-dir override it); drop one of the two")
        path = ckpt.find(ns.checkpoint)
        cfg, data, idx, method, _ = load_trained(str(path), given)
        idx = idx if len(idx) else torch.arange(len(data))
        out = ns.output or path.parent / f"show-{cfg.method}.png"  # next to the run's other files
    else:
        cfg = config_from_args(flags)
        check_before_data(cfg)  # a bad model or method option before any image is decoded
        data, idx, _, _ = load_data(cfg)
        in_chans = data.images.shape[1] if data.images is not None else 3
        model = build_model(cfg, data.num_classes, in_chans, image_side(data, cfg))
        method = build_method(cfg, model, data.num_classes, 1, cfg.seed)
        out = ns.output or Path("runs") / "show" / f"{cfg.method}.png"
    if not method.mixes:
        raise ValueError("method: vanilla training mixes nothing to show; pick a mixing method")
    # Classes in turn: a class-sorted folder's first files would all be one class.
    picked = viz.spread_over_classes(data.labels[idx], ns.n)
    x, y = next(eval_batches(data, idx[picked], ns.n, torch.device("cpu"), img_size=cfg.img_size))
    path = viz.save_mix_grid(make_parent(out, "--output"), method, x, y, n=ns.n, mean=data.mean, std=data.std)
    print(path)
    return 0


def _cmd_plot(ns: argparse.Namespace) -> int:
    from .plot import plot_runs

    out = ns.output
    if out is None:  # next to the runs: one run's folder, or the folder that holds them all
        try:
            common = Path(os.path.commonpath([os.path.normpath(r) for r in ns.runs]))
        except ValueError:  # relative and absolute paths mixed
            common = Path(os.path.commonpath([os.path.abspath(r) for r in ns.runs]))
        out = (Path(ns.runs[0]) if common.is_absolute() and common == Path(common.anchor) else common) / "curves.png"
    print(plot_runs(ns.runs, make_parent(out, "--output"), metrics=ns.metrics))
    return 0


def _cmd_bench(ns: argparse.Namespace) -> int:
    from . import bench

    proto = bench.load_protocol(ns.protocol)
    root = Path(ns.root)
    launcher = ns.launcher or proto.launcher.get("kind", "local")
    flags = {name: getattr(ns, name, None) for name in _SLURM_FLAGS}  # absent: not given
    if flags["sbatch"] is not None:
        flags["sbatch"] = dict(flags["sbatch"])
    problems: list[str] = []
    if launcher == "local":
        from .cluster import FLAGS

        given = [FLAGS[k] for k, v in flags.items() if v is not None] + (["--wait"] if ns.wait else [])
        if given:
            raise ValueError(f"{given[0]} is an option of --launcher slurm; the local launcher runs the grid here "
                             "(add --launcher slurm, or drop it)")
    if not ns.report_only and not ns.dry_run:
        make_dir(root, "--root")
    if launcher == "slurm":
        from . import cluster

        options = cluster.launcher_options(proto.launcher, flags, f"protocol {ns.protocol}: launcher")
        submitted = [] if ns.report_only else cluster.submit_grid(proto, root, options, ns.methods, ns.seeds,
                                                                  dry_run=ns.dry_run)
        if ns.wait:
            problems = cluster.wait_for(submitted)
        elif submitted:
            print("bench: run the same command when the jobs have ended to collect their results (or add --wait)",
                  file=sys.stderr)
    elif not ns.report_only:
        bench.run_grid(proto, root, ns.methods, ns.seeds, dry_run=ns.dry_run)
    if ns.dry_run:
        return 0
    results = bench.aggregate(root, proto)  # finished run folders into <root>/<name>.json; the report reads that
    report = make_parent(ns.report or root / f"{proto.name}.md", "--report")
    print(bench.report(proto, results, report, f"automix bench {ns.protocol} --root {ns.root}"))
    if problems:
        raise RuntimeError(f"{len(problems)} run(s) did not finish: " + "; ".join(problems)
                           + "; run the same command again to resubmit them")
    return 0


# ``automix bench`` flags of the slurm launcher: dest -> automix.cluster.SlurmOptions field.
_SLURM_FLAGS = ("time", "partition", "gpus_per_run", "cpus_per_run", "mem_gb", "array_parallelism", "account", "qos",
                "constraint", "setup", "sbatch", "max_requeues", "folder", "executor")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {text!r}")
    return key, value


def _cmd_list(ns: argparse.Namespace) -> int:
    from .data import list_datasets
    from .methods import list_methods
    from .models import list_models

    print("methods:  " + ", ".join(list_methods()))
    print("models:   " + ", ".join(list_models()) + ", timm:<name>, torchvision:<name>")
    print("datasets: " + ", ".join(list_datasets()))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


SHOW_MAX = 64  # automix show -n: one row per sample in one picture; beyond this it is a poster, not a preview


def _show_count(text: str) -> int:
    value = _positive_int(text)
    if value > SHOW_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {SHOW_MAX} (one picture row per sample), got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that name the subcommand and suggest the nearest option or choice.

    Plain argparse reports a mistyped flag of ``automix train`` with the top-level usage and no hint.
    """

    commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extra = self.parse_known_args(args, namespace)
        if extra:  # report it from the subcommand, whose options the suggestion comes from
            self.commands.get(getattr(ns, "command", None), self).error(f"unrecognized arguments: {' '.join(extra)}")
        return ns

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}{self._suggestion(message)} (see {self.prog} --help)\n")

    def _suggestion(self, message: str) -> str:
        choice = re.search(r"invalid choice: '?([^' ]+?)'? \(choose from (.*)\)", message)
        if choice:
            options = [c.strip(" '\"") for c in choice.group(2).split(",")]
            near = difflib.get_close_matches(choice.group(1), options, n=1, cutoff=0.5)
        elif message.startswith("unrecognized arguments: "):
            flags = [t.split("=")[0] for t in message.split(": ", 1)[1].split() if t.startswith("-")]
            options = [o for o in self._option_string_actions if o.startswith("--")]
            near = [m for f in flags for m in difflib.get_close_matches(f, options, n=1, cutoff=0.6)][:1]
        else:
            return ""
        return f"; did you mean {near[0]}?" if near else ""


def build_parser() -> argparse.ArgumentParser:
    from .train.args import add_config_arguments

    parser = _Parser(prog="automix", description="Mixup-family training, headlined by AutoMix.",
                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = sub.add_parser("train", help="train a classifier with a mixing method",
                       description="Train a classifier. Options come from --config YAML, then these flags.")
    add_config_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="accuracy of a checkpoint as JSON", formatter_class=fmt)
    p.add_argument("checkpoint", help="a last.pt / best.pt file, or a run folder (its best.pt, else last.pt)")
    p.add_argument("--split", default="val", choices=["val", "test"],
                   help="val: the run's validation images (its held-out share or val/ folder); test: the dataset's "
                        "test split (an image folder's test/)")
    p.add_argument("--data-dir", default=None, help="override the dataset folder stored in the checkpoint")
    p.add_argument("--device", default="cpu", help="device to evaluate on")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="evaluation batch size")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--output", default=None, help="also write the JSON (with the config) to this file")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("show", help="PNG grid of mixed samples and masks",
                       description="Picture of mixes for a config (training flags) or a checkpoint.")
    p.add_argument("--checkpoint", default=None, help="show the mixes of a trained run (a .pt file or a run folder)")
    p.add_argument("-o", "--output", "--image", dest="output", default=None,
                   help="PNG file to write (default: show-METHOD.png in the run folder with --checkpoint, "
                        "else runs/show/METHOD.png)")
    p.add_argument("-n", type=_show_count, default=8, help=f"samples to show (1 to {SHOW_MAX})")
    add_config_arguments(p, exclude=("output", "resume"))  # --output is the picture here, not a run dir
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("plot", help="training curves of run dirs as PNG", formatter_class=fmt)
    p.add_argument("runs", nargs="+", help="run dirs (each with a summary.csv)")
    p.add_argument("--output", default=None,
                   help="PNG file to write (default: curves.png in the run folder, or in the folder holding the runs)")
    p.add_argument("--metrics", nargs="+", default=["val_top1", "train_loss"], help="summary.csv columns to plot")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("bench", help="a cached, resumable grid of (method, seed) runs and its report",
                       formatter_class=fmt)
    p.add_argument("protocol", help="protocol YAML (base config, methods, seeds)")
    p.add_argument("--root", default="runs/bench", help="where the runs live (finished ones are reused)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods of the protocol")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="only these seeds")
    p.add_argument("--report", default=None,
                   help="markdown file whose section is rewritten (default: <root>/<protocol name>.md)")
    p.add_argument("--report-only", action="store_true", help="do not train; report the finished runs")
    p.add_argument("--dry-run", action="store_true",
                   help="check every cell's method and options, print the runs that would start; write nothing")
    p.add_argument("--launcher", choices=["local", "slurm"], default=None,
                   help="local: the runs one after another here (default, unless the protocol's launcher.kind says "
                        "slurm); slurm: each unfinished run as a task of a SLURM job array (needs automix[cluster])")
    unset = argparse.SUPPRESS  # a flag not given leaves the protocol's launcher: value
    g = p.add_argument_group("--launcher slurm (also settable under launcher: in the protocol; flags win)")
    g.add_argument("--slurm-time", dest="time", type=int, default=unset,
                   help="minutes of wall clock per run (required; a longer run is requeued and continues)")
    g.add_argument("--slurm-partition", dest="partition", default=unset, help="partition (default: the cluster's)")
    g.add_argument("--gpus-per-run", dest="gpus_per_run", type=int, default=unset,
                   help="GPUs per run (default 1; 0: CPU only; > 1: torch.distributed.run, batch_size per process)")
    g.add_argument("--cpus-per-run", dest="cpus_per_run", type=int, default=unset, help="CPU cores per run")
    g.add_argument("--mem-gb", dest="mem_gb", type=float, default=unset, help="memory per run, GB")
    g.add_argument("--array-parallelism", dest="array_parallelism", type=int, default=unset,
                   help="runs of the array running at once (default: submitit's 256)")
    g.add_argument("--slurm-account", dest="account", default=unset, help="account to charge")
    g.add_argument("--slurm-qos", dest="qos", default=unset, help="quality of service")
    g.add_argument("--slurm-constraint", dest="constraint", default=unset, help="node features, e.g. a100")
    g.add_argument("--slurm-setup", dest="setup", action="append", default=unset, metavar="LINE",
                   help="shell line run before each task (repeat: module load ..., source venv/bin/activate)")
    g.add_argument("--sbatch", dest="sbatch", action="append", type=_key_value, default=unset, metavar="KEY=VALUE",
                   help="any other #SBATCH option (repeat), e.g. --sbatch exclude=node7")
    g.add_argument("--max-requeues", dest="max_requeues", type=int, default=unset,
                   help="requeues of a run after hitting --slurm-time (default 3; preemptions do not count)")
    g.add_argument("--submitit-folder", dest="folder", default=unset,
                   help="submitit's scripts and logs (default: <root>/<protocol name>/.submitit)")
    g.add_argument("--submitit-executor", dest="executor", choices=["slurm", "local"], default=unset,
                   help="local: submitit's LocalExecutor runs every task at once on this machine (to try the job "
                        "array without a cluster)")
    g.add_argument("--wait", action="store_true", help="stay until the submitted runs have ended, then report")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("list", help="methods, models and datasets")
    p.set_defaults(func=_cmd_list)
    parser.commands = dict(sub.choices)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ._signals import Interrupted, sigterm_raises

    previous = sigterm_raises()  # first, so a SIGTERM while torch loads still ends in one line
    command = ""
    try:
        parser = build_parser()
        ns = parser.parse_args(argv)
        command = ns.command
        return ns.func(ns)
    except (Interrupted, KeyboardInterrupt) as exc:  # a stop, not an error: one line saying how to continue
        text = str(exc) if isinstance(exc, Interrupted) else "interrupted"
        if text in ("interrupted", "stopped by SIGTERM") and command in _CONTINUE:
            text += "; " + _CONTINUE[command]
        if text:  # empty on DDP ranks other than 0: rank 0 says it
            print(f"{_prog(command)}: {text}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, Interrupted) else 130
    except (ValueError, TypeError, OSError, ImportError, FloatingPointError, RuntimeError) as exc:
        print(f"{_prog(command)}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


_CONTINUE = {"train": "the last checkpoint written is intact; continue with --resume auto",
             "bench": "finished runs are kept and a stopped one saved its last.pt; run the same command to continue"}


def _prog(command: str) -> str:
    return f"automix {command}" if command else "automix"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:  # "[Errno 13] ..." from the OS: say what and where
        return f"{exc.strerror}: {exc.filename}"
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
