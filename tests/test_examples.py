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
    assert "held-out MSE" in out
    rows = {line.rsplit(None, 1)[0].strip(): float(line.rsplit(None, 1)[1]) for line in out.splitlines()[1:]}
    # The write-up's settings (a fixed lam, lam from eps) beside Beta(alpha, alpha) and no mixing.
    assert list(rows) == ["no mixing", "mixup(alpha=0.4)", "mixup(lam=0.2)", "mixup(lam from eps)"], out
    assert all(v > 0 for v in rows.values()) and len(set(rows.values())) == 4, out


def test_classifier_example():
    out = run("classifier_loop.py", "--steps", "3")
    assert "step   2" in out
