"""The first training steps of AutoMix, SAMix, mixup and cutmix match the golden file bit for bit (CPU).

``tests/golden/steps.txt`` holds, as float64 text, every logged term of the first 20 steps of each case on
a fixed tiny network; ``tests/golden/record_steps.py`` re-records it (its docstring says when that is allowed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).parent / "golden" / "record_steps.py"
_spec = importlib.util.spec_from_file_location("golden_record_steps", _SCRIPT)
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def _expected(case: str) -> list[str]:
    return [line for line in golden.GOLDEN.read_text().splitlines() if line.split(" ", 1)[0] == case]


@pytest.mark.parametrize("case", sorted(golden.CASES))
def test_steps_match_golden_file(case):
    expected = _expected(case)
    assert len(expected) > golden.STEPS, f"the golden file has no steps for {case}; re-record it"
    got = golden.run_case(case)
    diff = [f"golden: {a}\n   now: {b}" for a, b in zip(expected, got) if a != b]
    assert not diff and len(got) == len(expected), "\n".join(diff[:10]) or f"{len(got)} lines, {len(expected)} golden"
