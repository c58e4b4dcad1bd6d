"""What the profile and footprint panels draw, read off a `LevelBook` (no widgets).

Both are bounded by the window, not by the session: the profile has one row per traded
level of the window (levels merged into rows of several ticks past `PROFILE_ROWS`), the
footprint the last `FOOTPRINT_BARS` bars of it (past `FOOTPRINT_ROWS` levels, the same).
Point of control and value area come from `ibstream.analytics.profile.value_area` on the
levels of one tick; imbalances from `levels.imbalance_marks`, on one tick too, a merged row
marked when any of its levels is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ibstream.analytics.profile import value_area
from ibstream.widgets.levels import LevelBook, coarsen, imbalance_marks

PROFILE_ROWS = 80
FOOTPRINT_BARS = 12
FOOTPRINT_ROWS = 32
VALUE_AREA = 0.70


@dataclass(frozen=True)
class ProfilePlot:
    """Volume per row of the window (`price`: each row's low edge, ascending; `row`: its
    height in price), and the window's point of control and value area."""

    price: np.ndarray
    row: float
    buy: np.ndarray
    sell: np.ndarray
    neutral: np.ndarray
    poc: float
    value_low: float
    value_high: float


@dataclass(frozen=True)
class FootprintPlot:
    """The last bars × rows: bar starts (`M8[ns]`, and `end` of the last), row low edges,
    volume grids (rows, bars) and imbalance flags of the same shape."""

    start: np.ndarray
    end: np.datetime64
    price: np.ndarray
    row: float
    buy: np.ndarray
    sell: np.ndarray
    trades: np.ndarray
    buy_imbalance: np.ndarray
    sell_imbalance: np.ndarray
    buy_stacked: np.ndarray
    sell_stacked: np.ndarray


def profile_plot(book: LevelBook, fraction: float = VALUE_AREA) -> ProfilePlot:
    price, sums = book.profile()
    poc, low, high = value_area(price, sums[:, :3].sum(axis=1), fraction)
    step = coarsen(len(price), PROFILE_ROWS)
    price, sums = _rows(price, step), _sum_rows(sums, step)
    return ProfilePlot(price, step * book.tick, *sums[:, :3].T, poc, low, high)


def footprint_plot(book: LevelBook, bars: int = FOOTPRINT_BARS) -> FootprintPlot:
    starts, price, sums = book.grid(bars)
    buy, sell = sums[..., 0], sums[..., 1]
    flags = imbalance_marks(buy, sell, sums[..., 3] > 0)
    step = coarsen(len(price), FOOTPRINT_ROWS)
    merged = [_sum_rows(grid, step) for grid in (buy, sell, sums[..., 3])]
    marks = [_sum_rows(f.astype(np.int64), step) > 0 for f in flags]
    end = np.datetime64(int(starts[-1]) + book.bar_ns if len(starts) else 0, "ns")
    times = starts.view("M8[ns]")
    return FootprintPlot(times, end, _rows(price, step), step * book.tick, *merged, *marks)


def _rows(price: np.ndarray, step: int) -> np.ndarray:
    return price[::step]


def _sum_rows(values: np.ndarray, step: int) -> np.ndarray:
    if step == 1 or not len(values):
        return values
    return np.add.reduceat(values, np.arange(0, len(values), step), axis=0)
