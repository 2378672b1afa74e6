"""The shipped examples run end to end (short settings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_regression_example():
    out = run("regression_mixup.py", "--steps", "30")
    assert "held-out MSE" in out and "mixup" in out


def test_classifier_example():
    out = run("classifier_loop.py", "--steps", "3")
    assert "step   2" in out
