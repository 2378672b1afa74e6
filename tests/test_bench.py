"""A tiny smoke of the accuracy-benchmark runner: runs, caching, resume of a killed cell, the report."""

from __future__ import annotations

import json
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


def test_dry_run_writes_nothing(tmp_path, capsys):
    report = tmp_path / "bench.md"
    assert main(["bench", str(protocol(tmp_path)), "--root", str(tmp_path / "runs"), "--report", str(report),
                 "--dry-run"]) == 0
    assert capsys.readouterr().err.count("bench: ") == 4  # 2 methods x 2 seeds listed
    assert not (tmp_path / "runs").exists() and not report.exists() and not (tmp_path / "tiny-cost.png").exists()


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
        bench.Protocol(**{**vars(proto), "notes": "a note"}), bench.collect(proto, tmp_path / "none"), "cmd", None)
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
             ({"name": "t", "base": {}, "methods": {}, "seeds": [0], "bogus": 1}, "unknown key")]
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
    cell = asdict(bench.run_config(fit, "automix_fit_min_lr_0.05", 0, Path("x")))
    recipe = asdict(from_dict(load_yaml(ROOT / "configs" / "cpu" / "cifar10_automix_w16.yaml")))
    cosmetic = {"output", "seed", "eval_batch_size", "progress", "save_images"}
    assert {k: v for k, v in cell.items() if k not in cosmetic} == {k: v for k, v in recipe.items() if k not in cosmetic}


def test_cost_is_robust_to_one_slowed_seed(tmp_path):
    proto = bench.load_protocol(protocol(tmp_path))
    proto.seeds = [0, 1, 2]
    for method, scale in (("vanilla", 1.0), ("cutmix", 2.0)):
        for seed, times in enumerate(([1.0, 1.0, 9.0], [1.1, 1.2, 1.1], [5.0, 6.0, 7.0])):  # seed 2: a busy machine
            out = bench.run_dir(tmp_path / "runs", proto, method, seed)
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(json.dumps({"val_top1": 50.0 + seed}))
            rows = "".join(f"{e},{t * scale},{100 / (t * scale)}\n" for e, t in enumerate(times))
            (out / "summary.csv").write_text("epoch,epoch_time,img_per_s\n" + rows)
    rows = {r["method"]: r for r in bench.collect(proto, tmp_path / "runs")}
    assert rows["vanilla"]["epoch_s"] == 1.1 and rows["cutmix"]["epoch_s"] == 2.2  # the middle seed's median
    assert rows["cutmix"]["cost"] == 2.0 and rows["vanilla"]["val_top1"] == (51.0, 1.0)
