"""The incremental delta engine: feed tick batches as they arrive, read the delta study live.

`DeltaEngine` gives the same numbers as the batch functions (`summary`, `cumulative_delta`,
`rolling`, `bars`, `footprint`) on all ticks fed so far, bit for bit: it carries the running
sums those functions compute left to right and continues them (see `grouping.running_sums`):
buy, sell and neutral volume, the trade count, and signed volume (the cumulative delta).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from ibstream.analytics.bars import BarState, bar_rows, concat_states, finish_bars, merge_bars, take
from ibstream.analytics.classifier import TradeClassifier
from ibstream.analytics.classify import empty_trades
from ibstream.analytics.delta import rolling_frame, summary_frame, window_stats
from ibstream.analytics.footprint import (
    LevelState,
    finish_levels,
    level_rows,
    merge_levels,
    price_levels,
)
from ibstream.analytics.grouping import (
    EARLIEST,
    goes_back,
    group_rows,
    positions,
    previous_in_group,
    running_sums,
)
from ibstream.analytics.kernels import TradeArrays, to_nanos, to_time_index, trade_arrays

__all__ = ["DeltaEngine"]
_COMPACT_AT = 32  # closed-bar parts gathered before they are joined and trimmed


class DeltaEngine:
    """Classifies ticks incrementally (`TradeClassifier`) and keeps the delta study current.

    Memory is bounded, not growing with the trades seen: per contract the running totals,
    the open bar and its footprint cells, the trades inside the rolling `window` and the
    closed bars (the newest `max_bars` per contract; all when None) with their footprint
    cells, plus the newest `max_trades` trades for `trades`. A feed costs O(batch + window).
    Trade times must not go back within a contract (the server's receive stamps never do);
    a batch that does (or that has an infinite price or size) raises ValueError and leaves
    the engine as it was, classifier included.
    """

    def __init__(
        self,
        method: str | None = None,
        window: object = "60s",
        bar_interval: object = "1min",
        max_bars: int | None = None,
        tick_size: float | None = None,
        max_trades: int | None = 100_000,
    ) -> None:
        for name, value in (("max_bars", max_bars), ("max_trades", max_trades)):
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        price_levels(np.zeros(1), tick_size)  # validates tick_size
        self.classifier = TradeClassifier(method)
        self.window, self.bar_interval = window, bar_interval
        self._span, self._step = to_nanos(window, "window"), to_nanos(bar_interval, "interval")
        self.max_bars, self.tick_size, self.max_trades = max_bars, tick_size, max_trades
        self._contracts = np.zeros(0, dtype=np.int64)  # sorted; per contract:
        self._totals = np.zeros((0, 5))  # running buy, sell, neutral volume, count, delta
        self._last_time = np.zeros(0, dtype=np.int64)
        self._recent: dict[str, np.ndarray] = {
            "time": np.zeros(0, dtype=np.int64),
            "contract": np.zeros(0, dtype=np.int64),
            "upto": np.zeros((0, 4)),
            "before": np.zeros((0, 4)),
        }
        self._open = bar_rows(trade_arrays(_NO_TRADES), self._step, np.zeros(0))
        self._open_cells = level_rows(trade_arrays(_NO_TRADES), self._step, tick_size)
        self._closed: list[BarState] = [self._open]  # closed bars, in parts
        self._closed_cells: list[LevelState] = [self._open_cells]
        self._trades: list[pd.DataFrame] = []
        self._trade_rows = 0

    def feed(self, ticks: pd.DataFrame | Mapping | Iterable[Mapping]) -> pd.DataFrame:
        """Classify a batch of ticks (tick frame, or tick `data` dicts as on the wire) and
        update the state; returns the batch's classified trades. A batch that raises changes
        nothing (the classifier moves on only once the trades are taken)."""
        return self.classifier.update(ticks, accept=self.feed_trades)

    def feed_trades(self, trades: pd.DataFrame) -> None:
        """Update the state with already classified trades (a trades frame)."""
        a = trade_arrays(trades)
        if not len(a.time):
            return
        self._check_order(a)
        upto, before = self._advance_totals(a)
        self._advance_window(a, upto, before)
        self._advance_bars(a, upto[:, 4])
        self._trades.append(trades)
        self._trade_rows += len(trades)
        if self.max_trades is not None and self._trade_rows > 2 * self.max_trades:
            self._trades = [pd.concat(self._trades).iloc[-self.max_trades :]]
            self._trade_rows = self.max_trades

    @property
    def trades(self) -> pd.DataFrame:
        """The newest `max_trades` classified trades (all of them if max_trades is None)."""
        if not self._trades:
            return empty_trades()
        if len(self._trades) > 1:
            self._trades = [pd.concat(self._trades)]
        frame = self._trades[0]
        return frame if self.max_trades is None else frame.iloc[-self.max_trades :]

    def summary(self) -> pd.DataFrame:
        """As `delta.summary` of every trade fed."""
        return summary_frame(self._contracts, self._totals[:, :4])

    @property
    def cumulative_delta(self) -> pd.Series:
        """Per contract (index `contract_id`), the cumulative delta at its last trade."""
        index = pd.Index(self._contracts, name="contract_id")
        return pd.Series(self._totals[:, 4], index=index, name="cumulative_delta")

    def rolling(self) -> pd.DataFrame:
        """Per contract, `delta.rolling` at its last trade (one row each, by contract_id)."""
        r = self._recent
        stats = window_stats(r["time"], r["contract"], r["upto"], r["before"], self._span)
        last = group_rows(r["contract"]).last
        return rolling_frame(to_time_index(r["time"][last]), r["contract"][last], stats[last])

    def bars(self) -> pd.DataFrame:
        """As `bars.bars` of every trade fed (the open bar last per contract), limited to the
        newest `max_bars` per contract."""
        self._compact()
        state = concat_states(*self._closed, self._open)
        return finish_bars(take(state, _by_time(state)))

    def footprint(self) -> pd.DataFrame:
        """As `footprint.footprint` of every trade fed, for the bars `bars()` returns."""
        self._compact()
        state = concat_states(*self._closed_cells, self._open_cells)
        return finish_levels(take(state, _by_time(state, "price")))

    @property
    def retained(self) -> dict[str, int]:
        """Rows held now, per kind: what bounds the engine's memory."""
        return {
            "window_trades": len(self._recent["time"]),
            "bars": sum(len(s["time"]) for s in self._closed) + len(self._open["time"]),
            "footprint_cells": sum(len(s["time"]) for s in self._closed_cells)
            + len(self._open_cells["time"]),
            "trades": self._trade_rows,
        }

    def _check_order(self, a: TradeArrays) -> None:
        g = group_rows(a.contract)
        pos = positions(self._contracts, g.keys[0])
        since = np.full(g.size, EARLIEST)  # each contract's last time fed before
        since[pos >= 0] = self._last_time[pos[pos >= 0]]
        back = goes_back(a.time, g, since)
        if back.any():
            raise ValueError(
                "trade times go back within contract(s) "
                f"{', '.join(map(str, np.unique(a.contract[back])))}; feed ticks in arrival order"
            )

    def _advance_totals(self, a: TradeArrays) -> tuple[np.ndarray, np.ndarray]:
        """Continue the per-contract running sums; the new trades' values with and without
        themselves (buy, sell, neutral volume, count; and with themselves the delta too)."""
        n = len(self._contracts)
        g = group_rows(np.concatenate([self._contracts, a.contract]))
        flows = np.column_stack([a.flows(), a.signed()])
        run = running_sums(np.vstack([self._totals, flows]), g)
        before = previous_in_group(run[:, :4], g)
        self._contracts, self._totals = g.keys[0], run[g.last]
        self._last_time = np.concatenate([self._last_time, a.time])[g.last]
        return run[n:], before[n:]

    def _advance_window(self, a: TradeArrays, upto: np.ndarray, before: np.ndarray) -> None:
        r = self._recent
        new = {"time": a.time, "contract": a.contract, "upto": upto[:, :4], "before": before}
        r = {k: np.concatenate([r[k], new[k]]) for k in r}
        latest = self._last_time[np.searchsorted(self._contracts, r["contract"])]
        self._recent = {k: v[r["time"] > latest - self._span] for k, v in r.items()}

    def _advance_bars(self, a: TradeArrays, cum_delta: np.ndarray) -> None:
        bars, idle = _merge_open(self._open, bar_rows(a, self._step, cum_delta), merge_bars)
        g = group_rows(bars["contract_id"])  # a contract's newest bar is its open one
        newest = np.zeros(len(bars["time"]), dtype=bool)
        newest[g.last] = True
        self._open = _close(bars, newest, idle, self._closed)
        cells = level_rows(a, self._step, self.tick_size)
        cells, idle = _merge_open(self._open_cells, cells, merge_levels)
        open_time = bars["time"][g.last][positions(g.keys[0], cells["contract_id"])]
        self._open_cells = _close(cells, cells["time"] == open_time, idle, self._closed_cells)
        if len(self._closed) > _COMPACT_AT:
            self._compact()

    def _compact(self) -> None:
        """Join the closed parts and drop bars (and their cells) beyond `max_bars`."""
        closed = concat_states(*self._closed)
        cells = concat_states(*self._closed_cells)
        if self.max_bars is not None:
            g = group_rows(closed["contract_id"])  # a contract's bars close in time order
            ends = np.repeat(g.starts + g.lengths, g.lengths)
            rank = np.empty(len(g.order), dtype=np.int64)  # 0 for the newest bar
            rank[g.order] = ends - 1 - np.arange(len(g.order))
            closed = take(closed, rank < self.max_bars - 1)  # the open bar is one of them
            g = group_rows(closed["contract_id"])
            oldest = g.reduce(np.minimum, closed["time"])
            pos = positions(g.keys[0], cells["contract_id"])
            kept = pos >= 0
            kept[kept] = cells["time"][kept] >= oldest[pos[kept]]
            cells = take(cells, kept)
        self._closed, self._closed_cells = [closed], [cells]


def _merge_open(open_state: BarState, rows: BarState, merge: Callable) -> tuple[BarState, BarState]:
    """`rows` merged with the open rows of their contracts; and the other open rows."""
    touched = np.isin(open_state["contract_id"], rows["contract_id"])
    return merge(concat_states(take(open_state, touched), rows)), take(open_state, ~touched)


def _close(merged: BarState, current: np.ndarray, idle: BarState, closed: list) -> BarState:
    """The open rows: `idle` and the `current` merged ones; the others join `closed`."""
    if not current.all():
        closed.append(take(merged, ~current))
    return concat_states(idle, take(merged, current))


def _by_time(state: dict[str, np.ndarray], *then: str) -> np.ndarray:
    """Row order by time, then contract, then the `then` columns."""
    return np.lexsort([state[k] for k in ("time", "contract_id", *then)][::-1])


_NO_TRADES = pd.DataFrame(
    {"contract_id": np.zeros(0, np.int64), "price": [], "size": [], "side": []},
    index=pd.DatetimeIndex([], tz="UTC", name="time"),
)
