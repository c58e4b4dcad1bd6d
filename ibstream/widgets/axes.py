"""Value axes worked out in Python: a finite, non-empty domain and round tick values.

Left to itself bqplot derives a y domain from the marks; an empty `Bars` or a line of one
value gives a zero-width domain, and an axis with `num_ticks` then has no ticks and fails
to format them (`invalid format: .undefinedg`), leaving the figure half drawn. Here every
value axis gets `min`/`max` and `tick_values` from the data, never NaN and never zero wide.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)  # tick steps per power of ten
TICKS = 5  # about this many ticks per axis
MAX_DECIMALS = 8


def extent(
    *arrays: np.ndarray, least: float, include: tuple[float, ...] = ()
) -> tuple[float, float]:
    """(low, high) of the finite values (and `include`), at least `least` wide around their
    middle; (-least/2, least/2) when there is none."""
    parts = [np.asarray(a, np.float64).ravel() for a in arrays] + [np.asarray(include, float)]
    values = np.concatenate(parts)
    values = values[np.isfinite(values)]
    low, high = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
    if high - low < least:
        middle = (low + high) / 2
        low, high = middle - least / 2, middle + least / 2
    return low, high


def ticks(low: float, high: float, quantum: float = 0.0, count: int = TICKS) -> np.ndarray:
    """Round tick values from at or below `low` to at or above `high` (`high > low`), their
    step 1, 2, 2.5 or 5 times a power of ten and a multiple of `quantum` if one is given;
    the first and last are the domain to show."""
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in STEPS if m * power >= raw * (1 - 1e-9))
    if quantum > 0:
        step = math.ceil(step / quantum - 1e-9) * quantum
    first = math.floor(low / step + _slack(low, step)) * step
    last = math.ceil(high / step - _slack(high, step)) * step
    values = first + step * np.arange(round((last - first) / step) + 1)
    return np.round(values, MAX_DECIMALS + 2) + 0.0  # + 0.0: no "-0" label


def _slack(value: float, step: float) -> float:
    """Rounding noise to forgive in `value / step`, never more than `value`'s own (a tiny
    `value` under a big step must not round onto the next tick)."""
    return 1e-9 * min(1.0, max(1.0, abs(value)) / step)


def fit_axis(axis: Any, span: tuple[float, float], quantum: float = 0.0) -> None:
    """Give a bqplot value `axis` round ticks over `span`, their ends as its scale's domain."""
    values = ticks(*span, quantum)
    if axis.tick_values is not None and np.array_equal(axis.tick_values, values):
        return
    with axis.scale.hold_sync():
        axis.scale.min, axis.scale.max = float(values[0]), float(values[-1])
    axis.tick_values = values
