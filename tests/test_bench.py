"""A tiny smoke of the accuracy-benchmark runner: runs, caching, resume of a killed cell, the results file, the
report; and the repository's committed accuracy results against the protocols and docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from automix import bench
from automix.cli import main

ROOT = Path(__file__).resolve().parents[1]


def protocol(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny",
        "base": {"dataset": "digits", "subset": 64, "epochs": 1, "model": "preact_resnet18", "width": 4,
                 "batch_size": 16, "progress": False, "save_images": False, "model_ema": True,
                 "cache_dir": str(tmp_path / "cache")},
        "methods": {"vanilla": {"method": "none"}, "cutmix": {"method": "cutmix", "alpha": 0.2}},
        "seeds": [0, 1],
    }))
    return path


def test_grid_runs_caches_and_reports(tmp_path, capsys):
    proto_path = protocol(tmp_path)
    report = tmp_path / "bench.md"
    report.write_text("# Benchmarks\n\nkept text\n")
    args = ["bench", str(proto_path), "--root", str(tmp_path / "runs"), "--report", str(report)]
    assert main(args) == 0
    text = report.read_text()
    assert "kept text" in text and "| vanilla | 2/2 |" in text and "| cutmix | 2/2 |" in text
    assert f"automix bench {proto_path}" in text and (tmp_path / "tiny-cost.png").stat().st_size > 500
    done = tmp_path / "runs" / "tiny" / "cutmix" / "seed1" / "metrics.json"
    stamp = done.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0  # everything cached: nothing retrains
    assert done.stat().st_mtime_ns == stamp and "bench: cutmix seed 1: " not in capsys.readouterr().err
    assert text.count("accuracy-tiny:start") == 1 and report.read_text().count("accuracy-tiny:start") == 1
    # Every finished run is in the results file, with its config hash; the report is made from that file alone.
    results = json.loads((tmp_path / "runs" / "tiny.json").read_text())
    proto = bench.load_protocol(proto_path)
    assert sorted((r["method"], r["seed"]) for r in results["runs"]) == [("cutmix", 0), ("cutmix", 1),
                                                                        ("vanilla", 0), ("vanilla", 1)]
    entry = next(r for r in results["runs"] if (r["method"], r["seed"]) == ("cutmix", 1))
    assert entry["config_hash"] == bench.config_hash(bench.run_config(proto, "cutmix", 1, Path("elsewhere")))
    assert entry["metrics"] == json.loads(done.read_text()) and entry["summary"]["epoch"] == [0]
    assert entry["config"]["alpha"] == 0.2 and "output" not in entry["config"]
    # A fresh copy holds the results file and no run folders: nothing retrains, the report is the same.
    shutil.rmtree(tmp_path / "runs" / "tiny")
    report.write_text("# Benchmarks\n")
    capsys.readouterr()
    assert main(args) == 0
    assert not (tmp_path / "runs" / "tiny").exists() and "bench: " not in capsys.readouterr().err
    assert report.read_text().split("<!-- accuracy-tiny:start -->")[1] == text.split("<!-- accuracy-tiny:start -->")[1]
    assert json.loads((tmp_path / "runs" / "tiny.json").read_text()) == results


def test_results_entry_with_other_settings_is_refused(tmp_path):
    proto = bench.load_protocol(protocol(tmp_path))
    cfg = bench.run_config(proto, "vanilla", 0, Path("x"))
    entry = {"method": "vanilla", "seed": 0, "config_hash": "0" * 12, "metrics": {"val_top1": 50.0}, "summary": {},
             "config": {**bench.config_record(cfg), "epochs": 7}}
    results_file = bench.results_path(tmp_path / "runs", proto)
    results_file.parent.mkdir()
    results_file.write_text(bench.dumps_results({"protocol": "tiny", "runs": [entry]}))
    with pytest.raises(ValueError, match="vanilla seed 0 in .* epochs: 7 there, 1 now"):
        bench.run_grid(proto, tmp_path / "runs", ["vanilla"], [0], dry_run=True)
    with pytest.raises(ValueError, match="epochs: 7 there, 1 now"):
        bench.collect(proto, bench.load_results(results_file))
    entry.update(config_hash=bench.config_hash(cfg), config=bench.config_record(cfg))  # the same settings
    results_file.write_text(bench.dumps_results({"protocol": "tiny", "runs": [entry]}))
    rows = {r["method"]: r for r in bench.collect(proto, bench.load_results(results_file))}
    assert rows["vanilla"]["done"] == 1 and rows["vanilla"]["val_top1"] == (50.0, 0.0)
    assert rows["cutmix"]["done"] == 0


def test_config_hash_follows_what_changes_results():
    proto = bench.Protocol("p", {"dataset": "digits", "epochs": 1}, {"a": {"method": "mixup"}}, [0, 1], "p.yaml")
    one = bench.run_config(proto, "a", 0, Path("x"))
    assert bench.config_hash(one) == bench.config_hash(bench.run_config(proto, "a", 0, Path("y")))  # output
    assert bench.config_hash(one) != bench.config_hash(bench.run_config(proto, "a", 1, Path("x")))  # seed
    proto.methods["a"]["alpha"] = 0.5
    assert bench.config_hash(one) != bench.config_hash(bench.run_config(proto, "a", 0, Path("x")))
    assert len(bench.config_hash(one)) == 12


def test_dry_run_writes_nothing(tmp_path, capsys):
    report = tmp_path / "bench.md"
    assert main(["bench", str(protocol(tmp_path)), "--root", str(tmp_path / "runs"), "--report", str(report),
                 "--dry-run"]) == 0
    assert capsys.readouterr().err.count("bench: ") == 4  # 2 methods x 2 seeds listed
    assert not (tmp_path / "runs").exists() and not report.exists() and not (tmp_path / "tiny-cost.png").exists()


@pytest.mark.parametrize("cell, named", [
    ({"method": "adautomix", "method_opts": {"mix_sample": 3}}, "unknown option(s) ['mix_sample'] for method "
                                                                "'adautomix'"),
    ({"method": "transmx"}, "name must be one of"),
    ({"method": "cutmix", "method_opts": {"alpha": "big"}}, "alpha"),
    ({"method": "mixup", "mixup_lam": 0.3, "method_opts": {"alpha": 0.2}}, "alpha=0.2 is not used when lam=0.3"),
], ids=["unknown-option", "unknown-method", "wrong-type", "alpha-with-lam"])
def test_dry_run_checks_every_cells_method_and_options(tmp_path, capsys, cell, named):
    path = protocol(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["methods"]["bad"] = cell
    path.write_text(yaml.safe_dump(data))
    assert main(["bench", str(path), "--root", str(tmp_path / "runs"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"protocol {path}: method bad: " in err and named in err, err
    assert "bench: vanilla" not in err and not (tmp_path / "runs").exists()  # nothing listed or started
    with pytest.raises((ValueError, TypeError), match="method bad"):  # the real bench too, before any cell
        bench.load_protocol(path)


def test_unfinished_cell_is_resumed(tmp_path, capsys):
    proto = bench.load_protocol(protocol(tmp_path))
    out = bench.run_dir(tmp_path / "runs", proto, "vanilla", 0)
    out.mkdir(parents=True)
    bench.run_grid(proto, tmp_path / "runs", ["vanilla"], [0], dry_run=True)
    assert "--resume" not in capsys.readouterr().err
    (out / "last.pt").write_bytes(b"")  # a killed run leaves a checkpoint and no metrics.json
    bench.run_grid(proto, tmp_path / "runs", ["vanilla"], [0], dry_run=True)
    assert "--resume auto" in capsys.readouterr().err


def test_shipped_protocol_is_valid():
    proto = bench.load_protocol(ROOT / "configs" / "bench" / "cifar10_cpu.yaml")
    assert len(proto.methods) >= 10 and len(proto.seeds) >= 3
    cfg = bench.run_config(proto, "automix", 0, Path("x"))
    assert cfg.method_opts["momentum"] == 0.9 and cfg.model_ema


def test_extends_reuses_runs_and_derives_methods(tmp_path, capsys):
    parent = protocol(tmp_path)
    child = tmp_path / "sub" / "c.yaml"
    child.parent.mkdir()
    child.write_text(yaml.safe_dump({
        "extends": "../p.yaml", "section": "tiny-ablation", "base": {"epochs": 2},
        "methods": {"vanilla": None, "cutmix_a1": {"from": "cutmix", "alpha": 1.0},
                    "cutmix_a1_b": {"from": "cutmix_a1", "batch_size": 8}},
    }))
    proto = bench.load_protocol(child)
    assert (proto.name, proto.section, proto.seeds) == ("tiny", "tiny-ablation", [0, 1])
    assert proto.base["epochs"] == 2 and proto.base["width"] == 4
    assert proto.methods["vanilla"] == {"method": "none"}
    assert proto.methods["cutmix_a1_b"] == {"method": "cutmix", "alpha": 1.0, "batch_size": 8}
    assert proto.notes == "" and "a note" in bench.markdown(
        bench.Protocol(**{**vars(proto), "notes": "a note"}),
        bench.collect(proto, bench.load_results(tmp_path / "none.json")), "cmd", None)
    # The same name shares the run directory: a run recorded with other settings is refused, not reused.
    root = tmp_path / "runs"
    assert main(["bench", str(parent), "--root", str(root), "--methods", "vanilla", "--seeds", "0",
                 "--report", str(tmp_path / "r.md")]) == 0
    with pytest.raises(ValueError, match="epochs: 1 there, 2 now"):
        bench.run_grid(proto, root, ["vanilla"], [0], dry_run=True)


def test_method_opts_merge_one_level_deep(tmp_path):
    protocol(tmp_path)
    child = tmp_path / "c.yaml"
    child.write_text(yaml.safe_dump({"extends": "p.yaml", "methods": {
        "a": {"method": "automix", "method_opts": {"momentum": 0.9, "mask_loss": 0.2}},
        "b": {"from": "a", "method_opts": {"lam_concat": True}}}}))
    proto = bench.load_protocol(child)
    assert proto.methods["b"]["method_opts"] == {"momentum": 0.9, "mask_loss": 0.2, "lam_concat": True}
    assert proto.methods["a"]["method_opts"] == {"momentum": 0.9, "mask_loss": 0.2}  # not mutated


def test_bad_protocols_name_the_problem(tmp_path):
    protocol(tmp_path)
    cases = [({"extends": "nope.yaml", "methods": {}}, "no such file"),
             ({"extends": 3, "methods": {}}, "extends must be a path"),
             ({"extends": "p.yaml", "methods": {"x": {"from": "mixup"}}}, "from 'mixup' is not one of"),
             ({"extends": "p.yaml", "methods": {"x": [1]}}, "method x must be a dict"),
             ({"extends": "p.yaml", "section": "", "methods": {}}, "section must be"),
             ({"extends": "c.yaml", "methods": {}}, "cycle"),
             ({"extends": "p.yaml", "notes": ["x"], "methods": {}}, "notes must be text"),
             ({"name": "t", "base": {}, "methods": {}, "seeds": [0], "bogus": 1}, "unknown key"),
             # a cell whose model does not fit its images is refused before any cell runs (it would be refused by
             # its run before loading data; before, only once the data was decoded)
             ({"extends": "p.yaml", "methods": {"vit": {"method": "mixup", "model": "vit_tiny", "width": None,
                                                         "img_size": 36, "model_opts": {"patch_size": 8}}}},
              r"method vit: img_size must be a multiple of patch_size, got img_size=36 and patch_size=8")]
    for data, message in cases:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises((ValueError, TypeError), match=message):
            bench.load_protocol(path)


def test_shipped_ablation_protocol_reuses_the_grid():
    grid = bench.load_protocol(ROOT / "configs" / "bench" / "cifar10_cpu.yaml")
    abl = bench.load_protocol(ROOT / "configs" / "bench" / "cifar10_cpu_automix.yaml")
    assert abl.name == grid.name and abl.section != grid.section and abl.base == grid.base
    for method in ("vanilla", "mixup", "automix"):
        assert bench.run_config(abl, method, 0, Path("x")) == bench.run_config(grid, method, 0, Path("x"))
    assert bench.run_config(abl, "automix_min_lr_0.05", 0, Path("x")).min_lr == 0.05
    floor = bench.load_protocol(ROOT / "configs" / "bench" / "cifar10_cpu_min_lr.yaml")
    assert floor.name == grid.name and floor.seeds == [0, 1, 2]
    for method in ("vanilla", "mixup", "fmix", "automix", "samix"):  # the min_lr 0 rows are the grid's runs
        assert bench.run_config(floor, method, 0, Path("x")) == bench.run_config(grid, method, 0, Path("x"))
        variant = f"{method}_min_lr_0.05" + ("_ema_sched" if method == "vanilla" else "")
        assert bench.run_config(floor, variant, 0, Path("x")).min_lr == 0.05
    cell = bench.run_config(floor, "automix_min_lr_0.05", 1, Path("x"))
    assert cell == bench.run_config(abl, "automix_min_lr_0.05", 1, Path("x"))  # seeds 0, 1 ran in the ablation


def test_cpu_automix_recipe_is_the_benchmark_cell():
    from dataclasses import asdict

    from automix.train.config import from_dict, load_yaml

    fit = bench.load_protocol(ROOT / "configs" / "bench" / "cifar10_cpu_mask_fit.yaml")
    cell = asdict(bench.run_config(fit, "automix_sharp_min_lr_0.05", 0, Path("x")))
    recipe = asdict(from_dict(load_yaml(ROOT / "configs" / "cpu" / "cifar10_automix_w16.yaml")))
    cosmetic = {"output", "seed", "eval_batch_size", "progress", "save_images"}
    assert ({k: v for k, v in cell.items() if k not in cosmetic}
            == {k: v for k, v in recipe.items() if k not in cosmetic})


def test_cost_is_robust_to_one_slowed_seed(tmp_path):
    from automix.train.config import to_yaml

    proto = bench.load_protocol(protocol(tmp_path))
    proto.seeds = [0, 1, 2]
    for method, scale in (("vanilla", 1.0), ("cutmix", 2.0)):
        for seed, times in enumerate(([1.0, 1.0, 9.0], [1.1, 1.2, 1.1], [5.0, 6.0, 7.0])):  # seed 2: a busy machine
            out = bench.run_dir(tmp_path / "runs", proto, method, seed)
            out.mkdir(parents=True)
            (out / "bench.yaml").write_text(to_yaml(bench.run_config(proto, method, seed, out)))
            (out / "metrics.json").write_text(json.dumps({"val_top1": 50.0 + seed}))
            rows = "".join(f"{e},{t * scale},{100 / (t * scale)}\n" for e, t in enumerate(times))
            (out / "summary.csv").write_text("epoch,epoch_time,img_per_s\n" + rows)
    rows = {r["method"]: r for r in bench.collect(proto, bench.aggregate(tmp_path / "runs", proto))}
    assert rows["vanilla"]["epoch_s"] == 1.1 and rows["cutmix"]["epoch_s"] == 2.2  # the middle seed's median
    assert rows["cutmix"]["cost"] == 2.0 and rows["vanilla"]["val_top1"] == (51.0, 1.0)


# ---------------------------------------------------------------- the repository's committed accuracy results
RESULTS = ROOT / "benchmarks" / "results" / "accuracy"


def test_committed_results_give_the_docs_tables():
    """docs/benchmarks.md's accuracy sections are what benchmarks/accuracy_report.py makes from the results files."""
    proc = subprocess.run([sys.executable, "benchmarks/accuracy_report.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("checked section accuracy-") == len(list((ROOT / "configs" / "bench").glob("*.yaml")))


def test_committed_results_match_the_protocols():
    """Every entry of a results file is a cell of a shipped protocol with the config it asks for now."""
    cells = {}
    for path in sorted((ROOT / "configs" / "bench").glob("*.yaml")):
        proto = bench.load_protocol(path)
        for method in proto.methods:
            for seed in proto.seeds:
                cells[(proto.name, method, seed)] = bench.config_hash(bench.run_config(proto, method, seed, Path(".")))
    files = sorted(RESULTS.glob("*.json"))
    assert files, "no committed results file"
    for path in files:
        results = bench.load_results(path)
        assert results["runs"]
        for entry in results["runs"]:
            key = (path.stem, entry["method"], entry["seed"])
            assert cells.get(key) == entry["config_hash"], key
            assert {"val_top1", "val_top1_ema"} <= set(entry["metrics"]), key


def test_cpu_automix_recipe_is_a_recorded_cell():
    """configs/cpu/cifar10_automix_w16.yaml, with the protocol's seed and cosmetic keys, is a run in the results."""
    from dataclasses import replace

    from automix.train.config import from_dict, load_yaml

    fit = bench.load_protocol(ROOT / "configs" / "bench" / "cifar10_cpu_mask_fit.yaml")
    recipe = from_dict(load_yaml(ROOT / "configs" / "cpu" / "cifar10_automix_w16.yaml"))
    results = bench.load_results(bench.results_path(RESULTS, fit))
    by_hash = {r["config_hash"]: r for r in results["runs"]}
    cell = bench.run_config(fit, "automix_sharp_min_lr_0.05", 0, Path("x"))
    as_run = replace(recipe, seed=0, eval_batch_size=cell.eval_batch_size, save_images=cell.save_images)
    entry = by_hash.get(bench.config_hash(as_run))
    assert entry is not None and (entry["method"], entry["seed"]) == ("automix_sharp_min_lr_0.05", 0)
    assert entry["metrics"]["val_top1"] > 70


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def test_cost_plot_labels_never_overprint():
    """Points whose results coincide (the ViT pilot's vanilla_e10 and mixup_cutmix) get labels that neither
    overlap each other nor cover a marker, and all stay inside the image."""
    points = [(500.0, 200.0), (503.0, 201.0), (500.0, 199.0), (100.0, 50.0), (630.0, 300.0)]
    sizes = [(90.0, 10.0), (70.0, 10.0), (60.0, 10.0), (40.0, 10.0), (80.0, 10.0)]
    spots = bench.place_labels(points, sizes, (0, 0, 640, 420))
    boxes = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(spots, sizes)]
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[2] <= 640 and 0 <= a[1] and a[3] <= 420, (i, a)
        assert not any(_overlap(a, b) for b in boxes[i + 1:]), (i, boxes)
        assert not any(_overlap(a, (px - 4, py - 4, px + 4, py + 4)) for px, py in points), (i, a)
    assert spots[3] == (106.0, 44.0)  # a lone point keeps the usual spot, right of its marker
    assert spots[4][0] + sizes[4][0] <= 624  # no room on the right at the edge: the label goes left
    with pytest.raises(ValueError, match="5 points but 1 sizes"):
        bench.place_labels(points, sizes[:1], (0, 0, 640, 420))


def test_cost_plot_is_drawn_for_coinciding_points(tmp_path):
    rows = [{"method": m, "epoch_s": 50.0 + 0.5 * i, "val_top1": (36.9 + 0.01 * i, 0.0)}
            for i, m in enumerate(["vanilla_e10", "mixup_cutmix", "transmix"])]
    out = bench.plot_cost(rows, tmp_path / "cost.png")
    from PIL import Image

    assert Image.open(out).size == (640, 420)
