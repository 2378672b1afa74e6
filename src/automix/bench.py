"""``automix bench``: a grid of (method, seed) training runs, cached and resumable, and its report.

A protocol is a YAML file::

    name: cifar10-cpu
    base: {dataset: cifar10, data_dir: ..., subset: 4000, epochs: 50, ...}   # any Config keys
    methods:                                                                # name -> Config overrides
      vanilla: {method: none}
      cutmix: {method: cutmix, alpha: 0.2}
    seeds: [0, 1, 2]

A protocol can ``extends: other.yaml`` (a path relative to it): it then takes the other's ``base`` (its own
``base`` entries win), ``name`` and ``seeds`` unless it gives them, and its methods can name the other's: a
method written ``mixup:`` with no value is the other protocol's ``mixup``, and ``{from: automix, min_lr:
0.05}`` is its ``automix`` with one change. Keeping the other's ``name`` shares its run directory, so its
finished runs are reused; ``section`` then keeps the two reports apart in the report file. A run whose
recorded ``bench.yaml`` disagrees with the protocol is refused rather than reused.

Each (method, seed) is its own ``automix train`` run in a child process, in
``<root>/<protocol>/<method>/seed<k>``. A run with ``metrics.json`` is done and skipped; one with a
``last.pt`` is resumed (``--resume auto``), so the grid can be finished over several sittings and
survives a kill. ``run_grid`` runs them one after another on this machine; ``automix.cluster`` submits them
as a SLURM job array instead (``automix bench --launcher slurm``, or ``launcher: {kind: slurm, ...}`` in the
protocol), with the same run folders, caching and results file.

Finished runs are gathered into one results file per protocol name, ``<root>/<protocol>.json``
(``aggregate``): per run its method, seed, ``config_hash`` (``config_hash``: the resolved training config
without the keys that only say where and how verbosely it ran), the config itself, ``metrics.json`` and
every ``summary.csv`` column per epoch. The report is made from that file alone, and a cell whose config
hash is in it is skipped like a finished run folder, so a copy of the results file (without the run
folders) is enough to report, and to extend the grid without retraining what it holds. ``report`` turns
the results into a markdown table (top-1 mean +- std over seeds for the evaluated network, the online
network and the weight-EMA copy; images/s; seconds per epoch; cost relative to vanilla) and a PNG of
accuracy against training cost.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plot import COLOURS, nice_ticks
from .train.config import LEGACY_SWITCH_DEFAULTS, from_dict, load_yaml, set_sources, to_yaml, validate


@dataclass
class Protocol:
    name: str
    base: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    seeds: list[int]
    path: str
    section: str = ""
    notes: str = ""
    launcher: dict[str, Any] = field(default_factory=dict)  # where the runs go: automix.cluster.launcher_options

    def __post_init__(self) -> None:
        self.section = self.section or self.name


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``b`` over ``a``; dict values (``method_opts``) are merged one level deep."""
    out = dict(a)
    for key, value in b.items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_protocol(path: str | Path, _seen: tuple[Path, ...] = ()) -> Protocol:
    data = load_yaml(path)
    keys = ("name", "base", "methods", "seeds", "notes", "extends", "section", "launcher")
    unknown = set(data) - set(keys)
    if unknown:
        hints = [f"{k} (did you mean {near[0]}?)" if (near := difflib.get_close_matches(str(k), keys, n=1)) else str(k)
                 for k in sorted(unknown, key=str)]
        raise ValueError(f"protocol {path}: unknown key(s) {'; '.join(hints)}")
    parent = None
    if "extends" in data:
        ext = data["extends"]
        if not isinstance(ext, str):
            raise TypeError(f"protocol {path}: extends must be a path (str), got {ext!r}")
        parent_path = (Path(path).parent / ext).resolve()
        if parent_path in _seen or parent_path == Path(path).resolve():
            raise ValueError(f"protocol {path}: extends {ext!r} makes a cycle")
        if not parent_path.is_file():
            raise ValueError(f"protocol {path}: extends {ext!r}: no such file {parent_path}")
        parent = load_protocol(parent_path, (*_seen, Path(path).resolve()))
        base = data.get("base") or {}
        if not isinstance(base, dict):
            raise TypeError(f"protocol {path}: base must be a dict, got {base!r}")
        launcher = data.get("launcher") or {}
        if not isinstance(launcher, dict):
            raise TypeError(f"protocol {path}: launcher must be a dict, got {launcher!r}")
        data = {"name": parent.name, "seeds": parent.seeds, **data, "base": _merge(parent.base, base),
                "launcher": {**parent.launcher, **launcher}}
    for key, kind in (("name", str), ("base", dict), ("methods", dict), ("seeds", list)):
        if not isinstance(data.get(key), kind):
            raise TypeError(f"protocol {path}: {key} must be a {kind.__name__}, got {data.get(key)!r}")
    section = data.get("section", data["name"])
    if not isinstance(section, str) or not section:
        raise TypeError(f"protocol {path}: section must be a non-empty str, got {section!r}")
    methods: dict[str, dict[str, Any]] = {}
    for name, entry in data["methods"].items():
        if entry is None and parent is not None and name in parent.methods:
            entry = parent.methods[name]
        elif isinstance(entry, dict) and "from" in entry:
            pool = {**(parent.methods if parent else {}), **methods}
            if entry["from"] not in pool:
                raise ValueError(f"protocol {path}: method {name}: from {entry['from']!r} is not one of "
                                 f"{sorted(pool)}")
            entry = _merge(pool[entry["from"]], {k: v for k, v in entry.items() if k != "from"})
        if entry is not None and not isinstance(entry, dict):
            raise TypeError(f"protocol {path}: method {name} must be a dict of config keys, got {entry!r}")
        methods[name] = entry or {}
    notes = data.get("notes", "") or ""
    if not isinstance(notes, str):
        raise TypeError(f"protocol {path}: notes must be text, got {notes!r}")
    launcher = data.get("launcher") or {}
    if not isinstance(launcher, dict):
        raise TypeError(f"protocol {path}: launcher must be a dict, got {launcher!r}")
    from .cluster import launcher_options

    launcher_options(launcher, {}, f"protocol {path}: launcher")  # a mistyped key fails here, not at submission
    proto = Protocol(data["name"], data["base"], methods, [int(s) for s in data["seeds"]], str(path), section,
                     notes.strip(), launcher)
    from .train.build import check_method_options
    from .train.setup import check_before_data

    for method in proto.methods:  # every cell must make a valid config and method before anything runs
        cfg = run_config(proto, method, proto.seeds[0], Path("."))
        try:
            check_method_options(cfg)
            # and its model and method on the images' side, as each cell's run checks before loading data
            check_before_data(cfg)  # a timm: / torchvision: model is left to the cell's run (no import here)
        except (ValueError, TypeError) as err:
            raise type(err)(f"protocol {path}: method {method}: {err}") from err
    return proto


def run_config(proto: Protocol, method: str, seed: int, out: Path):
    values = {**proto.base, **(proto.methods[method] or {}), "seed": seed, "output": str(out)}
    source = f"protocol {proto.path} method {method}"
    return validate(set_sources(from_dict(values, source=source), {k: source for k in values}))


def check_recorded(out: Path, cfg) -> None:
    """Refuse a run directory whose ``bench.yaml`` was written for other settings than ``cfg``."""
    import yaml

    recorded = out / "bench.yaml"
    if not recorded.is_file():
        return
    old, new = (_switch_as_before(d) for d in (load_yaml(recorded), yaml.safe_load(to_yaml(cfg))))
    differ = sorted(k for k in set(old) & set(new) if k != "output" and old[k] != new[k])
    if differ:
        raise ValueError(f"run {out} was made with other settings than the protocol asks for: "
                         + ", ".join(f"{k}: {old[k]!r} there, {new[k]!r} now" for k in differ)
                         + "; use another --root or protocol name, or delete the run")


def run_dir(root: Path, proto: Protocol, method: str, seed: int) -> Path:
    return root / proto.name / method / f"seed{seed}"


def is_done(out: Path) -> bool:
    return (out / "metrics.json").is_file()


# Config keys that say where a run wrote and how it printed or was watched, not what it computed: left out of
# the hash.
HASH_IGNORES = ("output", "resume", "progress", "sync_debug")
# Keys added after results were recorded, whose default runs exactly what ran before (the default lambda
# draw is golden-tested): left out of the hash at that default, so recorded runs keep their hashes.
HASH_IF_SET = {"mixup_lam": None, "pretrained": False, "initial_checkpoint": None, "head_lr_scale": 1.0,
               "mixup_off_epoch": 0, "model_opts": {}}  # no model options: the model built as before


def _switch_as_before(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a config as plain data) with each unset timm switch flag as versions before unset ones wrote it
    (``config.LEGACY_SWITCH_DEFAULTS``): a method that takes them has them set (``validate``), so unset ones are
    unused, and a run recorded before keeps its hash and its bench.yaml."""
    return {k: LEGACY_SWITCH_DEFAULTS[k] if k in LEGACY_SWITCH_DEFAULTS and v is None else v for k, v in data.items()}


def config_record(cfg) -> dict[str, Any]:
    """The resolved config of a run as plain data (YAML/JSON types), without ``HASH_IGNORES`` (nor a
    ``HASH_IF_SET`` key at its default); unset timm switch flags as they were written before they could be unset."""
    import yaml

    data = _switch_as_before(yaml.safe_load(to_yaml(cfg)))
    return {k: v for k, v in data.items()
            if k not in HASH_IGNORES and not (k in HASH_IF_SET and v == HASH_IF_SET[k])}


def config_hash(cfg) -> str:
    """12 hex digits of the SHA-256 of ``config_record(cfg)`` as sorted, compact JSON.

    Every key of the resolved config counts (a changed default changes the hash), except ``HASH_IGNORES`` and a
    ``HASH_IF_SET`` key left at its default.
    """
    text = json.dumps(config_record(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def results_path(root: Path, proto: Protocol) -> Path:
    """The protocol's results file: ``<root>/<name>.json``, beside the ``<root>/<name>/`` run folders."""
    return Path(root) / f"{proto.name}.json"


def load_results(path: Path) -> dict[str, Any]:
    """The results file at ``path`` (``{"protocol": name, "runs": [...]}``), or an empty one if there is none."""
    path = Path(path)
    if not path.is_file():
        return {"protocol": path.stem, "runs": []}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"results file {path} is not a bench results file (no 'runs' list)")
    return data


def _summary_columns(path: Path) -> dict[str, list[float | None]]:
    """``summary.csv`` as columns; an empty or non-numeric cell is None."""
    import csv

    with path.open() as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float | None]] = {}
    for i, row in enumerate(rows):
        for key, text in row.items():
            try:
                value = float(text) if text not in ("", None) else None
            except ValueError:
                value = None
            if value is not None and not math.isfinite(value):
                value = None
            columns.setdefault(key, [None] * i).append(value)
    if "epoch" in columns:
        columns["epoch"] = [None if v is None else int(v) for v in columns["epoch"]]
    return columns


def run_record(out: Path, method: str, seed: int) -> dict[str, Any]:
    """One finished run folder (``bench.yaml``, ``metrics.json``, ``summary.csv``) as a results-file entry."""
    cfg = from_dict(load_yaml(out / "bench.yaml"), source=str(out / "bench.yaml"))
    summary = out / "summary.csv"
    return {"method": method, "seed": seed, "config_hash": config_hash(cfg),
            "metrics": json.loads((out / "metrics.json").read_text()),
            "summary": _summary_columns(summary) if summary.is_file() else {},
            "config": config_record(cfg)}


def aggregate(root: Path, proto: Protocol, path: Path | None = None) -> dict[str, Any]:
    """Fold every finished run folder of ``<root>/<name>/`` into the results file and return its contents.

    Entries are keyed by (method, seed), the run folder: a folder replaces its entry, and entries whose
    folder is not here (a fresh copy of the repository, a deleted run) are kept. The file is rewritten only
    when its contents change, sorted by method and seed, so running this again changes nothing.
    """
    path = Path(path) if path is not None else results_path(root, proto)
    data = load_results(path)
    runs = {(r["method"], r["seed"]): r for r in data["runs"]}
    base = Path(root) / proto.name
    for metrics in sorted(base.glob("*/seed*/metrics.json")) if base.is_dir() else []:
        out = metrics.parent
        seed_text = out.name[len("seed"):]
        if not seed_text.isdigit() or not (out / "bench.yaml").is_file():
            continue
        runs[(out.parent.name, int(seed_text))] = run_record(out, out.parent.name, int(seed_text))
    new = {"protocol": proto.name,
           "about": "automix bench results: one entry per finished (method, seed) run, with its config_hash "
                    "(automix.bench.config_hash), resolved config, metrics.json and summary.csv columns",
           "runs": [runs[k] for k in sorted(runs, key=lambda k: (k[0], k[1]))]}
    if new != data or not path.is_file():
        if new["runs"] or path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(dumps_results(new))
    return new


def dumps_results(data: Any, indent: int = 0) -> str:
    """JSON with one key per line and every list of numbers on one line (short diffs, readable files)."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(data, dict) and data:
        items = [f"{inner}{json.dumps(str(k))}: {dumps_results(v, indent + 1)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(data, list) and data and any(isinstance(v, (dict, list)) for v in data):
        return "[\n" + ",\n".join(f"{inner}{dumps_results(v, indent + 1)}" for v in data) + f"\n{pad}]"
    return json.dumps(data)


def recorded_hashes(results: dict[str, Any]) -> set[str]:
    return {r["config_hash"] for r in results["runs"]}


def check_entry(results: dict[str, Any], method: str, seed: int, cfg, source: str = "the results file") -> None:
    """Refuse a recorded (method, seed) whose config is not the one the protocol asks for now."""
    entry = next((r for r in results["runs"] if (r["method"], r["seed"]) == (method, seed)), None)
    if entry is None or entry["config_hash"] == config_hash(cfg):
        return
    old, new = entry["config"], config_record(cfg)
    differ = sorted(k for k in set(old) | set(new) if old.get(k, "(absent)") != new.get(k, "(absent)"))
    raise ValueError(f"{method} seed {seed} in {source} was made with other settings than the protocol asks for: "
                     + ", ".join(f"{k}: {old.get(k, '(absent)')!r} there, {new.get(k, '(absent)')!r} now"
                                 for k in differ)
                     + "; use another --root or protocol name, or delete the entry and its run folder")


@dataclass
class Cell:
    """One (method, seed) of a grid: its run folder, its resolved config, and whether it needs no training."""

    method: str
    seed: int
    out: Path
    cfg: Any
    done: bool


def grid_cells(proto: Protocol, root: Path, methods: list[str] | None = None,
               seeds: list[int] | None = None) -> list[Cell]:
    """The grid's cells in run order (seeds outer, methods inner), each checked against what is recorded.

    A cell is done when its run folder holds ``metrics.json`` or when the results file
    (``results_path(root, proto)``) holds a run with its config hash. A run folder or results entry made with
    other settings raises ``ValueError`` (``check_recorded``, ``check_entry``), before anything runs.
    """
    methods = methods or list(proto.methods)
    bad = [m for m in methods if m not in proto.methods]
    if bad:
        raise ValueError(f"methods {bad} are not in protocol {proto.path}: {list(proto.methods)}")
    results = load_results(results_path(root, proto))
    recorded = recorded_hashes(results)
    cells = []
    for seed in seeds if seeds is not None else proto.seeds:
        for method in methods:
            out = run_dir(root, proto, method, seed)
            cfg = run_config(proto, method, seed, out)
            check_recorded(out, cfg)
            if not is_done(out):
                check_entry(results, method, seed, cfg, str(results_path(root, proto)))
            cells.append(Cell(method, seed, out, cfg, is_done(out) or config_hash(cfg) in recorded))
    return cells


def train_command(out: Path, processes: int = 1) -> list[str]:
    """The ``automix train`` command line of the run in ``out`` (``--resume auto`` when it holds ``last.pt``).

    ``processes`` > 1 starts it under ``torch.distributed.run`` with that many processes on the machine (one
    per GPU); ``batch_size`` is per process.
    """
    if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
        raise ValueError(f"processes must be an int >= 1, got {processes!r}")
    cmd = [sys.executable, "-m", "automix", "train", "--config", str(out / "bench.yaml"), "--no-progress"]
    if processes > 1:
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "automix"]
    if (out / "last.pt").is_file():
        cmd += ["--resume", "auto"]
    return cmd


def clear_stranded(out: Path) -> None:
    """Delete the ``summary.csv`` of a run killed between its first summary row and its first checkpoint.

    Nothing can continue such a run, and train refuses a dir holding results, so the cell starts over.
    """
    if not (out / "last.pt").is_file() and (out / "summary.csv").is_file():
        (out / "summary.csv").unlink()


def run_grid(proto: Protocol, root: Path, methods: list[str] | None = None, seeds: list[int] | None = None,
             dry_run: bool = False) -> list[Path]:
    """Run every missing (method, seed) of the grid in turn; returns the run dirs.

    A cell is done when its run folder holds ``metrics.json`` or when the results file
    (``results_path(root, proto)``) holds a run with its config hash. dry_run lists the runs that would
    start and writes nothing.
    """
    cells = grid_cells(proto, root, methods, seeds)
    for cell in cells:
        method, seed, out = cell.method, cell.seed, cell.out
        if cell.done:
            continue
        cmd = train_command(out)
        if not dry_run:
            clear_stranded(out)
        print(f"bench: {method} seed {seed}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        if dry_run:  # list only: no run directory, no report
            continue
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.yaml").write_text(to_yaml(cell.cfg))
        t0 = time.time()
        with (out / "train.log").open("a") as log:
            code = _train(cmd, log)
        print(f"bench: {method} seed {seed}: exit {code} after {time.time() - t0:.0f}s", file=sys.stderr,
              flush=True)
        if code != 0:
            raise RuntimeError(f"run {out} failed with exit code {code}; see {out / 'train.log'}")
    return [cell.out for cell in cells]


def _train(cmd: list[str], log) -> int:
    """Run one cell; on Ctrl-C or SIGTERM let it stop cleanly (it saves last.pt) before bench stops."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        return proc.wait()
    except BaseException:
        # Ctrl-C reached the child too (same process group); a SIGTERM to bench did not. SIGTERM asks
        # for the same clean stop and, unlike a second SIGINT, never turns it into an abort.
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        raise


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(proto: Protocol, results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method with the statistics of its finished seeds, from a results file's contents.

    A (method, seed) counts when the results hold it with the config hash the protocol asks for; one held
    with another config is refused (``check_entry``).
    """
    by_hash = {r["config_hash"]: r for r in results["runs"]}
    rows = []
    for method in proto.methods:
        finals: dict[str, list[float]] = {"val_top1": [], "val_top1_online": [], "val_top1_ema": []}
        speed, epoch_s, done = [], [], 0
        for seed in proto.seeds:
            cfg = run_config(proto, method, seed, Path("."))
            entry = by_hash.get(config_hash(cfg))
            if entry is None:
                check_entry(results, method, seed, cfg)
                continue
            done += 1
            metrics = entry["metrics"]
            for key in finals:
                if key in metrics:
                    finals[key].append(metrics[key])
            # One median per seed: a seed slowed by other work moves it less.
            seed_speed = [v for v in entry["summary"].get("img_per_s", []) if v is not None]
            seed_time = [v for v in entry["summary"].get("epoch_time", []) if v is not None]
            if seed_speed and seed_time:
                speed.append(statistics.median(seed_speed))
                epoch_s.append(statistics.median(seed_time))
        row = {"method": method, "done": done, "seeds": len(proto.seeds),
               "img_per_s": statistics.median(speed) if speed else float("nan"),
               "epoch_s": statistics.median(epoch_s) if epoch_s else float("nan")}
        for key, values in finals.items():
            row[key] = _mean_std(values)
        rows.append(row)
    base = next((r for r in rows if r["method"] == "vanilla"), None)
    for row in rows:
        row["cost"] = row["epoch_s"] / base["epoch_s"] if base and base["epoch_s"] == base["epoch_s"] else float("nan")
    return rows


def _fmt(ms: tuple[float, float], n: int) -> str:
    mean, std = ms
    if mean != mean:
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f} (1 seed)"


def _num(value: float, fmt: str) -> str:
    return "–" if value != value else format(value, fmt)


def markdown(proto: Protocol, rows: list[dict[str, Any]], command: str, plot_name: str | None) -> str:
    lines = ["```bash", command, "```", "",
             "Top-1 % on the held-out validation images at the end of training, mean ± std over the finished "
             "seeds. Eval net: what the method evaluates (AutoMix / SAMix: the EMA encoder; others: the plain "
             "network). Online net: the plain network. Weight EMA: the EMA copy every method keeps. img/s and "
             "s / epoch: the median over seeds of each seed's median epoch (training only, so evaluation is not "
             "in it); cost: s / epoch over vanilla's.", "",
             "| method | seeds done | top-1 eval net | top-1 online net | top-1 weight EMA | img/s | s / epoch "
             "| cost vs vanilla |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n = r["done"]
        cost = _num(r["cost"], ".2f") + ("x" if r["cost"] == r["cost"] else "")
        lines.append(f"| {r['method']} | {n}/{r['seeds']} | {_fmt(r['val_top1'], n)} | {_fmt(r['val_top1_online'], n)} "
                     f"| {_fmt(r['val_top1_ema'], n)} | {_num(r['img_per_s'], '.0f')} | {_num(r['epoch_s'], '.1f')} "
                     f"| {cost} |")
    if proto.notes:
        lines += ["", proto.notes]
    if plot_name:
        lines += ["", f"![accuracy against training cost]({plot_name})"]
    return "\n".join(lines) + "\n"


def place_labels(points: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                 bounds: tuple[float, float, float, float], pad: float = 2.0) -> list[tuple[float, float]]:
    """Top-left corners for one text label per point, so that no two labels overlap and none covers a point.

    Args:
        points: (x, y) pixel centres of the markers.
        sizes: (width, height) in pixels of each point's label.
        bounds: (left, top, right, bottom) the labels must stay inside.
        pad: pixels kept free around each label.

    Returns:
        (x, y) per point, in the order given. Each label goes to the first free spot among: right of its point,
        left of it, then the same two sides moved up and down in steps of one label height (up to 8 steps), so
        points whose results coincide get stacked labels instead of overprinted ones. A label with no free spot
        in that range keeps the right-hand spot.
    """
    if len(points) != len(sizes):
        raise ValueError(f"place_labels: {len(points)} points but {len(sizes)} sizes")
    left, top, right, bottom = bounds
    markers = [(x - 4, y - 4, x + 4, y + 4) for x, y in points]  # as plot_cost draws them
    taken: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(points)

    def apart(a: tuple[float, float, float, float], b: tuple[float, float, float, float], gap: float) -> bool:
        return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]

    def free(box: tuple[float, float, float, float]) -> bool:
        if box[0] < left or box[1] < top or box[2] > right or box[3] > bottom:
            return False
        return all(apart(box, o, pad) for o in taken) and all(apart(box, m, 0.0) for m in markers)

    # Top to bottom, so that a stack of coinciding points reads in the order of their results.
    for i in sorted(range(len(points)), key=lambda j: (points[j][1], points[j][0])):
        (x, y), (w, h) = points[i], sizes[i]
        spots = [(x + 6, y - 6), (x - 6 - w, y - 6)]
        for k in range(1, 9):
            for dy in (-k * (h + pad + 1), k * (h + pad + 1)):
                spots += [(x + 6, y - 6 + dy), (x - 6 - w, y - 6 + dy)]
        chosen = next((sp for sp in spots if free((sp[0], sp[1], sp[0] + w, sp[1] + h))), spots[0])
        out[i] = chosen
        taken.append((chosen[0], chosen[1], chosen[0] + w, chosen[1] + h))
    return out


def plot_cost(rows: list[dict[str, Any]], out: Path) -> Path:
    """Scatter of mean top-1 (eval net) against seconds per epoch, one labelled point per method."""
    from PIL import Image, ImageDraw, ImageFont

    pts = [(r["epoch_s"], r["val_top1"][0], r["val_top1"][1], r["method"]) for r in rows
           if r["val_top1"][0] == r["val_top1"][0] and r["epoch_s"] == r["epoch_s"]]
    img = Image.new("RGB", (640, 420), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    left, top, right, bottom = 60, 20, 620, 370
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, bottom + 30), "seconds per epoch (training cost)", fill="black", font=font)
    draw.text((4, top - 14), "top-1 % (mean ± std over seeds)", fill="black", font=font)
    if pts:
        x0, x1 = 0.0, max(p[0] for p in pts) * 1.1
        y0, y1 = min(p[1] - p[2] for p in pts) - 0.5, max(p[1] + p[2] for p in pts) + 0.5

        def px(x: float, y: float) -> tuple[float, float]:
            return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

        for yv in nice_ticks(y0, y1):
            draw.text((4, px(0, yv)[1] - 6), f"{yv:g}", fill="black", font=font)
        for xv in nice_ticks(x0, x1):
            draw.text((px(xv, y0)[0] - 8, bottom + 6), f"{xv:g}", fill="black", font=font)
        centres = [px(x, y) for x, y, _, _ in pts]
        sizes = []
        for _, _, _, name in pts:
            x_lo, y_lo, x_hi, y_hi = draw.textbbox((0, 0), name, font=font)
            sizes.append((x_hi - x_lo, y_hi - y_lo))
        spots = place_labels(centres, sizes, (0, 0, img.width, img.height))
        for i, ((x, y, s, name), (cx, cy), (lx, ly)) in enumerate(zip(pts, centres, spots)):
            colour = COLOURS[i % len(COLOURS)]
            _, top_y = px(x, y + s)
            _, bot_y = px(x, y - s)
            draw.line([cx, top_y, cx, bot_y], fill=colour, width=2)
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
            w, h = sizes[i]
            if not (abs(lx - (cx + 6)) < 1 and abs(ly - (cy - 6)) < 1):  # moved off its point: a leader line back
                tx, ty = min(max(cx, lx), lx + w), min(max(cy, ly), ly + h)
                draw.line([cx, cy, tx, ty], fill=colour, width=1)
            draw.text((lx, ly), name, fill=colour, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def write_section(path: Path, key: str, body: str, heading: str) -> None:
    """Replace the text between ``<!-- key:start -->`` and ``<!-- key:end -->`` in ``path`` (or append it)."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def report(proto: Protocol, results: dict[str, Any], path: Path, command: str, plot: Path | None = None,
           write: bool = True) -> str:
    """The protocol's section of the markdown report at ``path``, and its cost plot; returns the section body.

    The section lies between ``<!-- accuracy-<section>:start -->`` and its end marker (the rest of the file is
    kept); the plot is ``plot`` (default: ``<section>-cost.png`` beside the report), linked relative to it.
    ``write=False`` only returns the body.
    """
    import os

    rows = collect(proto, results)
    path = Path(path)
    plot = Path(plot) if plot is not None else path.parent / f"{proto.section}-cost.png"
    body = markdown(proto, rows, command, Path(os.path.relpath(plot, path.parent)).as_posix())
    if write:
        plot_cost(rows, plot)
        write_section(path, f"accuracy-{proto.section}", body, f"## Accuracy: {proto.section}")
    return body
