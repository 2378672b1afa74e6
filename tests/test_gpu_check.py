"""benchmarks/gpu_check.sh: its CPU rehearsal (--tiny) runs every stage and writes the results file; without a CUDA
device the real check stops at its first stage; bad options and failed stages are reported."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="gpu_check.sh needs bash and coreutils' timeout")


def check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_tiny_rehearsal_runs_every_stage_and_writes_one_file(tmp_path):
    out = tmp_path / "check.md"
    proc = check("--tiny", "--out", str(out), timeout=900)  # a few minutes on 2 idle cores
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"results in {out}" in proc.stdout
    text = out.read_text()
    stages = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in text.splitlines()
              if line.startswith("| ") and line.count(" | ") == 3 and not line.startswith("| stage")}
    assert {"env", "eager", "train-none", "train-automix", "resize", "train-vit", "compiled",
            "compiled-rest"} <= set(stages), stages
    # on the CPU the per-batch resize is the CPU's own: no pixel differs
    assert re.search(r"32 -> 224: 0 of \d+ px differ, max 0; 224 -> 32: 0 of \d+ px differ, max 0", text), text
    assert {k for k, v in stages.items() if v != "ok"} <= {k for k in stages if k.startswith("backbone-")}
    for name in ("timm:resnet50", "timm:vit_small_patch16_224", "torchvision:resnet18"):
        assert stages[f"backbone-{name}"] in ("ok", "skipped")  # skipped when its library is not installed
    steps, _, syncs = text.split("## Step time")[1].partition("## Host synchronisation")
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in steps.splitlines() if line.startswith("| ")}
    for label in ("vanilla", "mixup", "cutmix", "AutoMix", "SAMix"):  # timed eager and compiled
        assert float(rows[label][1]) > 0 and float(rows[label][4]) > 0, rows[label]
    assert len(rows) >= 16  # every registered method has its row
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in syncs.splitlines() if line.startswith("| ")}
    for label in ("vanilla", "AutoMix"):  # two epochs, each step counted (no CUDA here to check)
        assert rows[label][1] == "2" and int(rows[label][3]) > 0 and "not checked (cpu: no CUDA)" in rows[label][-1]


def test_without_cuda_the_check_stops_at_env(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the check would run")
    proc = check("--out", str(tmp_path / "x.md"), timeout=120)
    assert proc.returncode == 1 and "torch sees no CUDA device" in proc.stderr
    assert not (tmp_path / "x.md").exists()


def test_bad_options_are_named():
    for args, message in ((["--budget", "30"], "--budget must be at least 60 seconds, got 30"),
                          (["--budget", "x"], "--budget must be a whole number of seconds, got 'x'"),
                          (["--fast"], "unknown option '--fast'")):
        proc = check(*args, timeout=30)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_report_shows_failed_and_timed_out_stages(tmp_path):
    (tmp_path / "stages.tsv").write_text("env\tok\t3\tdevice cuda\neager\ttimed out after 100s\t100\tround 2/10\n"
                                         "train-automix\tfailed (exit 2)\t7\tautomix train: error: boom\n")
    (tmp_path / "train-automix").mkdir()
    proc = subprocess.run([sys.executable, "benchmarks/_gpu_check.py", "report", str(tmp_path), str(tmp_path / "r.md"),
                           "cmd"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "r.md").read_text()
    assert "| eager | timed out after 100s | 100 | round 2/10 |" in text
    assert "| train-automix | failed (exit 2) | 7 | automix train: error: boom |" in text
    assert "No step-time results" in text and "no metrics.json (the run failed)" in text
