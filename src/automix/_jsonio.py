"""Strict JSON: what automix writes parses with any JSON reader.

Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON (``jq``, JavaScript and strict
parsers reject the file). A value that does not exist (no validation split, an empty split) is
written as ``null`` instead, and ``allow_nan=False`` turns any we missed into an error here rather
than a broken file.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (nested in dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
