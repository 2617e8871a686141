"""Constructor-argument checks shared by the environments: a bad value is a ``ValueError``
that names the argument, the accepted range and what was given."""

from __future__ import annotations

import math
from typing import Any


def integer(name: str, value: Any, low: int) -> int:
    """An integer ``>= low`` (``True``/``False`` and ``2.5`` are refused)."""
    try:
        whole = int(value) == value
    except (TypeError, ValueError):
        whole = False
    if isinstance(value, bool) or not whole or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    positive: bool = False,
) -> float:
    """A finite float within ``[low, high]`` (either bound optional), ``> 0`` if ``positive``."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    below = (low is not None and x < low) or (positive and x <= 0)
    if not math.isfinite(x) or below or (high is not None and x > high):
        lo = "0 (exclusive)" if positive and low is None else (low if low is not None else "-inf")
        bounds = f"in [{lo}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return x
