"""Command-line faults (issue 13, items 7-15): each test feeds the exact input the issue names.

Every user error must be one line ``automix <cmd>: error: ...`` naming the option and the value.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from automix.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--subset", "64", "--epochs", "1", "--img-size", "8", "--width", "4", "--batch-size", "16",
        "--eval-batch-size", "128", "--no-progress", "--no-save-images", "--method", "cutmix"]


def train(tmp_path: Path, out: str, *args: str) -> int:
    return main(["train", *TINY, "--output", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *args])


def spawn(tmp_path: Path, out: str, *args: str, script: str = "") -> subprocess.Popen:
    """``automix train`` in a child process (one thread), after running ``script`` in it."""
    argv = ["train", *TINY, "--output", str(tmp_path / out), "--cache-dir", str(tmp_path / "cache"), *args]
    code = script + f"\nfrom automix.cli import main\nimport sys\nsys.exit(main({argv!r}))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT / 'tests'}"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def epochs_of(run: Path) -> list[str]:
    with (run / "summary.csv").open() as f:
        return [r["epoch"] for r in csv.DictReader(f)]


def one_error_line(err: str, cmd: str = "train") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"automix {cmd}: error: "), err
    return lines[0]


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


# ---------------------------------------------------------------- 7: one run per run dir


def test_rerun_into_a_run_dir_is_refused_and_resume_continues(tmp_path, capsys):
    """Item 7: a rerun without --resume would append a second epoch-0 row and overwrite the checkpoints."""
    assert train(tmp_path, "r") == 0
    before = (tmp_path / "r" / "last.pt").read_bytes()
    capsys.readouterr()
    assert train(tmp_path, "r") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "output" in line and str(tmp_path / "r") in line and "--resume auto" in line
    assert epochs_of(tmp_path / "r") == ["0"] and (tmp_path / "r" / "last.pt").read_bytes() == before
    assert train(tmp_path, "r", "--epochs", "2", "--resume", "auto") == 0
    assert epochs_of(tmp_path / "r") == ["0", "1"]


def test_a_run_dir_in_use_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, capsys):
    """Item 7: two runs at once into one --output; the lock dies with its process (kill -9 included)."""
    proc = spawn(tmp_path, "r", "--subset", "480", "--epochs", "50", "--checkpoint-interval", "2")
    try:
        wait_for(tmp_path / "r" / "last.pt", proc)
        for extra in ([], ["--resume", "auto"]):
            assert train(tmp_path, "r", *extra) == 2
            line = one_error_line(capsys.readouterr().err)
            assert f"in use by another automix run (pid {proc.pid})" in line and "--output" in line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    rows = epochs_of(tmp_path / "r") if (tmp_path / "r" / "summary.csv").exists() else []
    assert rows == [str(i) for i in range(len(rows))], "the refused runs wrote nothing"
    # The dead run holds no lock: its run continues from where it was killed.
    assert train(tmp_path, "r", "--subset", "480", "--checkpoint-interval", "2", "--resume", "auto") == 0
    assert epochs_of(tmp_path / "r") == ["0"]


def test_bench_restarts_a_cell_killed_before_its_first_checkpoint(tmp_path):
    """Item 7 keeps `automix bench` working: a cell with bench files and a stale summary but no last.pt."""
    import yaml

    from automix import bench

    proto_path = tmp_path / "p.yaml"
    proto_path.write_text(yaml.safe_dump({
        "name": "tiny", "base": {"dataset": "digits", "subset": 64, "epochs": 1, "img_size": 8, "width": 4,
                                 "batch_size": 16, "progress": False, "save_images": False,
                                 "cache_dir": str(tmp_path / "cache")},
        "methods": {"cutmix": {"method": "cutmix"}}, "seeds": [0]}))
    proto = bench.load_protocol(proto_path)
    out = bench.run_dir(tmp_path / "runs", proto, "cutmix", 0)
    out.mkdir(parents=True)
    (out / "summary.csv").write_text("epoch,train_loss\n0,9.9\n")  # killed between the row and last.pt
    (out / "args.yaml").write_text("stale: true\n")
    bench.run_grid(proto, tmp_path / "runs")
    assert epochs_of(out) == ["0"] and (out / "metrics.json").is_file()
    assert "9.9" not in (out / "summary.csv").read_text()


# ---------------------------------------------------------------- 9: an --output that cannot be made


def _read_only(tmp_path: Path, monkeypatch) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root ignores modes: make mkdir under it fail as the OS would
        real = Path.mkdir

        def mkdir(self, *a, **k):
            if ro in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self, *a, **k)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    return ro


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_output_that_cannot_be_created_is_one_line(tmp_path, capsys, monkeypatch, where):
    """Item 9: --output under a file or in a read-only folder."""
    if where == "under-a-file":
        (tmp_path / "f").write_text("a file")
        out, why = tmp_path / "f" / "run", "is a file"
    else:
        out, why = _read_only(tmp_path, monkeypatch) / "run", "denied"
    assert main(["train", *TINY, "--output", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("automix train: error: output:") and str(out) in line and why in line


def test_other_outputs_that_cannot_be_created_are_one_line(tmp_path, capsys):
    """Item 9, the same kind: plot --output, eval --output, bench --root."""
    assert train(tmp_path, "r") == 0
    (tmp_path / "f").write_text("a file")
    bad = str(tmp_path / "f" / "x.png")
    capsys.readouterr()
    cases = [("plot", [str(tmp_path / "r"), "--output", bad]),
             ("eval", [str(tmp_path / "r" / "last.pt"), "--output", bad]),
             ("bench", [str(ROOT / "configs" / "bench" / "cifar10_cpu.yaml"), "--root", str(tmp_path / "f" / "b")])]
    for cmd, args in cases:
        assert main([cmd, *args]) == 2, cmd
        line = one_error_line(capsys.readouterr().err, cmd)
        assert "is a file, not a folder" in line and ("--output" in line or "--root" in line), line
