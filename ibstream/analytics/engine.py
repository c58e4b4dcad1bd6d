"""The incremental delta engine: feed tick batches as they arrive, read the delta study live.

`DeltaEngine` gives the same numbers as the batch functions (`summary`, `cumulative_delta`,
`rolling`, `bars`, `footprint`) on all ticks fed so far, bit for bit: it carries the running
sums those functions compute left to right and continues them (see `grouping.running_sums`):
buy, sell and neutral volume, the trade count, and signed volume (the cumulative delta).

Two paths feed it. Frames go through the vectorised one (numpy over the batch). Wire rows
go through the per-tick one: the classifier's `live` path, and per contract the running
totals and rolling window of `running` in Python floats, so that a batch of a few ticks
costs microseconds; their trades wait in a bounded list and join the vectorised state
(bars, footprint, the trades kept) in one pass when it is read or the list is full. Any
split, through either path, gives the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from ibstream.analytics.arrival import SORT_HINT
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
from ibstream.analytics.kernels import (
    NO_TRADES,
    TradeArrays,
    to_nanos,
    to_time_index,
    trade_arrays,
)
from ibstream.analytics.live import Trade, trades_frame
from ibstream.analytics.lookahead import LOOKAHEAD_TIMEOUT
from ibstream.analytics.running import Now, Running

__all__ = ["DeltaEngine"]
_COMPACT_AT = 32  # closed-bar parts gathered before they are joined and trimmed
JOIN_AT = 4096  # trades of the per-tick path that wait before they join the vectorised state


class DeltaEngine:
    """Classifies ticks incrementally (`TradeClassifier`) and keeps the delta study current.

    Memory is bounded, not growing with the trades seen: per contract the running totals,
    the open bar and its footprint cells, the trades inside the rolling `window` and the
    closed bars (the newest `max_bars` per contract; all when None) with their footprint
    cells, plus the newest `max_trades` trades for `trades`, plus at most `JOIN_AT` trades
    of the per-tick path not joined yet. A frame costs O(batch + window); wire rows
    (`feed_rows`) cost a few microseconds a tick. Receive times must not go back within a
    contract (the server's stamps never do); a batch that does (or that has an infinite
    price or size) raises ValueError and leaves the engine as it was, classifier included.
    With `method="lookahead"` a trade counts once its contract's next quote (or `timeout`)
    decides it; `release` and `flush` decide the waiting ones (see `TradeClassifier`).
    """

    def __init__(
        self,
        method: str | None = None,
        window: object = "60s",
        bar_interval: object = "1min",
        max_bars: int | None = None,
        tick_size: float | None = None,
        max_trades: int | None = 100_000,
        timeout: object = LOOKAHEAD_TIMEOUT,
    ) -> None:
        for name, value in (("max_bars", max_bars), ("max_trades", max_trades)):
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        price_levels(np.zeros(1), tick_size)  # validates tick_size
        self.classifier = TradeClassifier(method, timeout)
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
        self._open = bar_rows(trade_arrays(NO_TRADES), self._step, np.zeros(0))
        self._open_cells = level_rows(trade_arrays(NO_TRADES), self._step, tick_size)
        self._closed: list[BarState] = [self._open]  # closed bars, in parts
        self._closed_cells: list[LevelState] = [self._open_cells]
        self._trades: list[pd.DataFrame] = []
        self._trade_rows = 0
        self._running: dict[int, Running] = {}  # per contract, current unless stale:
        self._stale: set[int] = set()  # contracts whose running totals a frame moved on
        self._waiting: list[Trade] = []  # per-tick trades not in the vectorised state yet
        self.join_at = JOIN_AT  # how many of them may wait

    def feed(self, ticks: pd.DataFrame | Mapping | Iterable[Mapping]) -> pd.DataFrame | list[Trade]:
        """Classify a batch of ticks and update the state. A tick frame in, its classified
        trades as a trades frame out (vectorised); tick `data` dicts as on the wire in, their
        trades as `Trade` records out (the per-tick path: microseconds, no frame built, see
        `feed_rows`). A batch that raises changes nothing (the classifier moves on only once
        the trades are taken)."""
        if isinstance(ticks, pd.DataFrame):
            return self.classifier.update(ticks, accept=self.feed_trades)
        return self.feed_rows(ticks)

    def feed_rows(self, rows: Mapping | Iterable[Mapping]) -> list[Trade]:
        """`feed` of wire rows without pandas, for a live feed: the batch's trades as
        `Trade` records (side and quote as codes of SIDES and QUOTE_STATES;
        `trades_frame(records)` makes them a trades frame)."""
        return self.classifier.classify_rows(rows, accept=self._take)

    def release(self, now: int | None = None) -> list[Trade]:
        """`lookahead`: count the trades that waited longer than the timeout for their
        contract's next quote by `now` (ns, UTC; None: the wall clock), decided by Lee-Ready
        (see `TradeClassifier.release`); returns them."""
        return self.classifier.release(now, accept=self._take)

    def flush(self) -> list[Trade]:
        """`lookahead`: count every waiting trade, decided by Lee-Ready; returns them."""
        return self.classifier.flush(accept=self._take)

    def feed_trades(self, trades: pd.DataFrame) -> None:
        """Update the state with already classified trades (a trades frame)."""
        self._join()
        a = trade_arrays(trades)
        if not len(a.time):
            return
        self._check_order(a)
        self._advance(a, trades)
        self._stale.update(np.unique(a.contract).tolist())

    def now(self, contract_id: int) -> Now | None:
        """The delta study of `contract_id` at its last trade (None before its first): a
        cheap read for a live display, equal to the last rows of `cumulative_delta`,
        `summary` and `rolling`."""
        running = self._running_of(contract_id)
        return None if running is None else running.now()

    def _running_of(self, contract: int) -> Running | None:
        """A contract's running totals, taken from the vectorised state if that moved on
        since (a frame was fed)."""
        if contract in self._stale:
            self._stale.discard(contract)
            mine = self._recent["contract"] == contract
            at = int(np.searchsorted(self._contracts, contract))
            running = self._running.setdefault(contract, Running(self._span))
            running.reset_to(
                self._totals[at], self._recent["time"][mine], self._recent["before"][mine]
            )
        return self._running.get(contract)

    def _take(self, trades: list[Trade]) -> None:
        """The per-tick path: check the trades, then count them (see the module doc)."""
        last: dict[int, int] = {}
        for t in trades:
            if t.price in _INFINITE or t.size in _INFINITE:
                name = "price" if t.price in _INFINITE else "size"
                count = sum(getattr(x, name) in _INFINITE for x in trades)
                raise ValueError(f"trades have {count} infinite {name}s")
            since = last.get(t.contract_id)
            if since is None:
                running = self._running_of(t.contract_id)
                since = _EARLIEST if running is None else running.time
            if t.time < since:
                raise ValueError(
                    f"trade times go back within contract {t.contract_id}; feed ticks in "
                    "arrival order"
                )
            last[t.contract_id] = t.time
        for t in trades:
            running = self._running.get(t.contract_id)
            if running is None:
                running = self._running[t.contract_id] = Running(self._span)
            running.add(t.time, t.side, t.size)
        self._waiting.extend(trades)
        if len(self._waiting) >= self.join_at:
            self._join()

    def _join(self) -> None:
        """The waiting per-tick trades into the vectorised state (their running totals
        are counted already)."""
        if self._waiting:
            trades, self._waiting = trades_frame(self._waiting), []
            self._advance(trade_arrays(trades), trades)

    def _advance(self, a: TradeArrays, trades: pd.DataFrame) -> None:
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
        self._join()
        if not self._trades:
            return empty_trades()
        if len(self._trades) > 1:
            self._trades = [pd.concat(self._trades)]
        frame = self._trades[0]
        return frame if self.max_trades is None else frame.iloc[-self.max_trades :]

    def summary(self) -> pd.DataFrame:
        """As `delta.summary` of every trade fed."""
        self._join()
        return summary_frame(self._contracts, self._totals[:, :4])

    @property
    def cumulative_delta(self) -> pd.Series:
        """Per contract (index `contract_id`), the cumulative delta at its last trade."""
        ids = sorted(self._running.keys() | self._stale)
        values = [self._running_of(c).delta for c in ids]
        index = pd.Index(np.array(ids, np.int64), name="contract_id")
        return pd.Series(np.array(values, np.float64), index=index, name="cumulative_delta")

    def rolling(self) -> pd.DataFrame:
        """Per contract, `delta.rolling` at its last trade (one row each, by contract_id)."""
        self._join()
        r = self._recent
        stats = window_stats(r["time"], r["contract"], r["upto"], r["before"], self._span)
        last = group_rows(r["contract"]).last
        return rolling_frame(to_time_index(r["time"][last]), r["contract"][last], stats[last])

    def bars(self) -> pd.DataFrame:
        """As `bars.bars` of every trade fed (the open bar last per contract), limited to the
        newest `max_bars` per contract."""
        self._join()
        self._compact()
        state = concat_states(*self._closed, self._open)
        return finish_bars(take(state, _by_time(state)))

    def footprint(self) -> pd.DataFrame:
        """As `footprint.footprint` of every trade fed, for the bars `bars()` returns."""
        self._join()
        self._compact()
        state = concat_states(*self._closed_cells, self._open_cells)
        return finish_levels(take(state, _by_time(state, "price")))

    @property
    def retained(self) -> dict[str, int]:
        """Rows held now, per kind: what bounds the engine's memory."""
        self._join()
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
                f"{', '.join(map(str, np.unique(a.contract[back])))}; feed ticks in arrival "
                f"order: {SORT_HINT}"
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


_INFINITE = (np.inf, -np.inf)
_EARLIEST = int(EARLIEST)
