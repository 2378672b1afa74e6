"""A tiny smoke of the accuracy-benchmark runner: runs, caching, resume of a killed cell, the report."""

from __future__ import annotations

from pathlib import Path

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
