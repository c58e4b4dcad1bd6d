"""One contract's running delta totals and rolling window, trade by trade, in Python floats.

The delta engine's live reads (cumulative delta, the rolling window at the last trade) come
from here, so that a trade fed alone costs a few additions, not a pass of numpy calls. The
sums are the ones `grouping.running_sums` makes (left to right; each trade adds its buy,
sell and neutral size, one of them its size and the others 0.0, and its count), and the
window is what `delta.window_stats` reads at the last trade: the running totals minus the
totals before the window's first trade. Same operations in the same order: same bits.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

Totals = tuple[float, float, float, float]  # buy, sell, neutral volume, trade count
_SIGN = (1, -1, 0)  # per side code: buy, sell, neutral


class Now(NamedTuple):
    """One contract's delta study at its last trade (`time`, ns UTC): all trades since the
    start, and those of the rolling window up to that trade."""

    time: int
    cumulative_delta: float
    buy_volume: float
    sell_volume: float
    neutral_volume: float
    trade_count: float
    window: Totals


class Running:
    """Running totals of one contract's trades, and the totals before each trade of the
    rolling window (`span_ns`) that ends at its last trade."""

    __slots__ = ("delta", "span", "time", "totals", "window")

    def __init__(self, span_ns: int) -> None:
        self.span = span_ns
        self.totals: Totals | None = None  # None before the first trade
        self.delta = 0.0
        self.time = 0
        self.window: deque[tuple[int, Totals]] = deque()

    def add(self, time: int, side: int, size: float) -> None:
        """One trade (side code 0 buy, 1 sell, 2 neutral; a NaN size counts as 0)."""
        if size != size:
            size = 0.0
        flows = (size if side == 0 else 0.0, size if side == 1 else 0.0,
                 size if side == 2 else 0.0, 1.0)  # fmt: skip
        signed = size * _SIGN[side]
        before = self.totals
        if before is None:  # a running sum starts at its first value
            self.totals, self.delta, before = flows, signed, (0.0, 0.0, 0.0, 0.0)
        else:
            self.totals = (before[0] + flows[0], before[1] + flows[1],
                           before[2] + flows[2], before[3] + flows[3])  # fmt: skip
            self.delta += signed
        self.time = time
        window = self.window
        window.append((time, before))
        edge = time - self.span
        while window[0][0] <= edge:
            window.popleft()

    def reset_to(self, totals: np.ndarray, times: np.ndarray, befores: np.ndarray) -> None:
        """Take the state the vectorised engine holds: totals (buy, sell, neutral, count,
        delta) and its window's trades (times, and totals before each)."""
        self.totals = (float(totals[0]), float(totals[1]), float(totals[2]), float(totals[3]))
        self.delta = float(totals[4])
        self.time = int(times[-1]) if len(times) else self.time
        self.window = deque(zip(times.tolist(), map(tuple, befores.tolist()), strict=True))

    def now(self) -> Now:
        totals = self.totals or (0.0, 0.0, 0.0, 0.0)
        first = self.window[0][1] if self.window else totals
        window = (totals[0] - first[0], totals[1] - first[1],
                  totals[2] - first[2], totals[3] - first[3])  # fmt: skip
        return Now(self.time, self.delta, *totals, window)
