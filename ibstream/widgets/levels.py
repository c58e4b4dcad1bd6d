"""Volume per bar and price level over the dashboard's window, kept incrementally: the
profile and footprint panels read it.

Each step adds its trades to the cells of their bars and to the window's per-level totals,
and subtracts the bars that left the window, so a step costs O(batch + cells in the
window), never O(session). Levels are integer multiples of the contract's min tick, floored
as `ibstream.analytics.footprint` floors them; cells equal its rows for the window's bars.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.analytics.footprint import price_levels
from ibstream.analytics.imbalance import imbalances

SUMS = ("buy_volume", "sell_volume", "neutral_volume", "trade_count")


@dataclass(frozen=True)
class Cells:
    """One bar's levels (tick numbers, ascending) and their sums (columns as `SUMS`)."""

    start: int
    level: np.ndarray
    sums: np.ndarray


class LevelBook:
    """Cells per (bar, level) of the bars from `first` on (see `trim`), and their totals
    per level; `tick` is the level grid (the contract's min tick)."""

    def __init__(self, bar_ns: int, tick: float) -> None:
        self.bar_ns, self.tick = int(bar_ns), float(tick)
        self.bars: deque[Cells] = deque()
        self.base = 0  # tick number of the first row of `totals`
        self.totals = np.zeros((0, len(SUMS)))

    def add(self, time: np.ndarray, price: np.ndarray, side: np.ndarray, size: np.ndarray) -> None:
        """Trades in arrival order (stamps never going back, as the model holds them); side
        codes 0 buy, 1 sell, 2 neutral; a trade without a price has no level."""
        priced = ~np.isnan(price)
        if not priced.any():
            return
        time, price, side, size = time[priced], price[priced], side[priced], size[priced]
        level = np.rint(price_levels(price, self.tick) / self.tick).astype(np.int64)
        flows = np.zeros((len(level), len(SUMS)))
        flows[np.arange(len(level)), np.clip(side, 0, 2)] = size
        flows[:, 3] = 1.0
        self._add_totals(level, flows)
        start = time - time % self.bar_ns
        if self.bars:  # a stamp before the newest bar joins it
            start = np.maximum(start, self.bars[-1].start)
        cuts = np.flatnonzero(np.diff(start)) + 1
        for rows in np.split(np.arange(len(start)), cuts):
            self._add_cells(int(start[rows[0]]), level[rows], flows[rows])

    def _add_cells(self, start: int, level: np.ndarray, flows: np.ndarray) -> None:
        if self.bars and self.bars[-1].start == start:
            old = self.bars.pop()
            level, flows = np.concatenate([old.level, level]), np.concatenate([old.sums, flows])
        keys, where = np.unique(level, return_inverse=True)
        sums = np.zeros((len(keys), len(SUMS)))
        np.add.at(sums, where, flows)
        self.bars.append(Cells(start, keys, sums))

    def _add_totals(self, level: np.ndarray, flows: np.ndarray) -> None:
        low, high = int(level.min()), int(level.max())
        if not len(self.totals):
            self.base, self.totals = low, np.zeros((high - low + 1, len(SUMS)))
        elif low < self.base or high >= self.base + len(self.totals):
            base = min(low, self.base)
            grown = np.zeros((max(high, self.base + len(self.totals) - 1) - base + 1, len(SUMS)))
            grown[self.base - base : self.base - base + len(self.totals)] = self.totals
            self.base, self.totals = base, grown
        np.add.at(self.totals, level - self.base, flows)

    def trim(self, first: int) -> None:
        """Drop the bars that start before `first`, their volume off the totals; a level
        with no trade left is exactly zero and the totals shrink to the levels traded."""
        gone = False
        while self.bars and self.bars[0].start < first:
            old = self.bars.popleft()
            np.subtract.at(self.totals, old.level - self.base, old.sums)
            gone = True
        if not gone:
            return
        empty = self.totals[:, 3] < 0.5
        self.totals[empty] = 0.0
        kept = np.flatnonzero(~empty)
        if not len(kept):
            self.base, self.totals = 0, np.zeros((0, len(SUMS)))
            return
        self.base += int(kept[0])
        self.totals = self.totals[kept[0] : kept[-1] + 1]

    def prices(self, levels: np.ndarray) -> np.ndarray:
        """The prices of tick numbers (rounded to the tick's decimals, as the footprint)."""
        return price_levels(levels * self.tick, self.tick)

    def profile(self) -> tuple[np.ndarray, np.ndarray]:
        """(prices ascending, sums per level): every level from the lowest traded to the
        highest, zero where nothing traded."""
        return self.prices(self.base + np.arange(len(self.totals))), self.totals

    def grid(self, bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last `bars` bars as a dense grid: (bar starts, level prices ascending, sums
        of shape (levels, bars, len(SUMS)))."""
        recent = list(self.bars)[-bars:] if bars > 0 else []
        if not recent:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0, len(SUMS)))
        low = min(int(c.level[0]) for c in recent)
        high = max(int(c.level[-1]) for c in recent)
        out = np.zeros((high - low + 1, len(recent), len(SUMS)))
        for column, cells in enumerate(recent):
            out[cells.level - low, column] = cells.sums
        starts = np.array([c.start for c in recent], np.int64)
        return starts, self.prices(np.arange(low, high + 1)), out

    def frame(self) -> pd.DataFrame:
        """The cells as footprint-like rows (time = bar start, price, the sums)."""
        bars = list(self.bars)
        time = np.concatenate([np.full(len(c.level), c.start) for c in bars] or [[]])
        level = np.concatenate([c.level for c in bars] or [[]]).astype(np.int64)
        sums = np.concatenate([c.sums for c in bars] or [np.zeros((0, len(SUMS)))])
        columns = {"time": time.astype(np.int64), "price": self.prices(level)}
        return pd.DataFrame(columns | {k: sums[:, i] for i, k in enumerate(SUMS)})


def imbalance_marks(
    buy: np.ndarray, sell: np.ndarray, traded: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Diagonal and stacked imbalances of a footprint grid (rows: levels one tick apart,
    ascending; columns: bars), flagged exactly as `analytics.footprint` flags them
    (`analytics.imbalance.imbalances` over the grid's cells that `traded`, default: those
    with buy or sell volume; its default ratio, minimum and stack). Returns (buy, sell, buy
    stacked, sell stacked) boolean grids."""
    traded = (buy > 0) | (sell > 0) if traded is None else traded
    bars, levels = np.nonzero(traded.T)  # the footprint's cell order: bar, then price
    cells = {
        "time": bars,
        "contract_id": np.zeros_like(bars),
        "price": levels.astype(np.float64),
        "tick": np.ones(len(levels)),  # rows are one tick apart
        "buy_volume": buy[levels, bars],
        "sell_volume": sell[levels, bars],
    }
    flags = imbalances(cells)
    out = []
    for name in ("buy_imbalance", "sell_imbalance", "stacked_buy", "stacked_sell"):
        grid = np.zeros(buy.shape, dtype=bool)
        grid[levels, bars] = flags[name]
        out.append(grid)
    return out[0], out[1], out[2], out[3]


def coarsen(rows: int, most: int) -> int:
    """How many levels to draw as one row so that `rows` levels fit in `most` rows."""
    return max(1, -(-rows // most))
