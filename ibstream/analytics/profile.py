"""Volume profile (placeholder: the value area only, until the full module lands)."""

from __future__ import annotations

import numpy as np


def value_area(
    prices: np.ndarray, volumes: np.ndarray, fraction: float = 0.70
) -> tuple[float, float, float]:
    """(poc, value_area_low, value_area_high) of one period's levels (`prices` ascending):
    the point of control is the level of most volume (the lowest of equal ones); the area
    grows from it two levels at a time toward the side with more volume (up on a tie) until
    it holds `fraction` of the volume. NaN triple when there is no volume."""
    prices = np.asarray(prices, np.float64)
    volumes = np.nan_to_num(np.asarray(volumes, np.float64), nan=0.0)
    total = volumes.sum()
    if not len(volumes) or not total > 0:
        return (np.nan, np.nan, np.nan)
    poc = int(np.argmax(volumes))
    low = high = poc
    held, wanted = volumes[poc], fraction * total
    while held < wanted and (low > 0 or high < len(volumes) - 1):
        up = volumes[high + 1 : high + 3].sum()
        down = volumes[max(low - 2, 0) : low].sum()
        if high < len(volumes) - 1 and (up >= down or low == 0):
            high, held = min(high + 2, len(volumes) - 1), held + up
        else:
            low, held = max(low - 2, 0), held + down
    return (float(prices[poc]), float(prices[low]), float(prices[high]))
