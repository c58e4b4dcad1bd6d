"""The simulator's own past: every trade, quote and midpoint a contract's market produced.

IB's historical data service (HMDS) answers `reqHistoricalTicks` from what the exchange
printed whether or not anyone was subscribed, so the feed records each event here as its
market makes it, paused or not (a 1100 loses live data, never history). Each series keeps the
last `limit` rows (amortised trimming, times kept sorted for bisection) with IB's one-second
time. `page` selects what one request returns, as IB does: `number` ticks forward from a
start or back from an end, widened to every tick of the boundary second.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from ibstream.gateway.instrument import SimContract
from ibstream.gateway.market import Quote, Trade
from ibstream.gateway.recorded import RecordedTick

DEFAULT_LIMIT = 500_000  # rows per series: hours of a busy contract (0: keep nothing)
# regular trading hours by security type: (time zone, open, close); None: all day
_RTH = {
    "STK": ("US/Eastern", time(9, 30), time(16, 0)),
    "FUT": ("US/Central", time(8, 30), time(15, 0)),
}


@dataclass
class Series:
    """Rows of one kind in time order, `times[i]` the IB second of `rows[i]`."""

    limit: int
    times: list[int] = field(default_factory=list)
    rows: list[object] = field(default_factory=list)  # a Trade, a Quote or a tuple of fields
    horizon: int | None = None  # the earliest second still complete, once rows were dropped

    def add(self, second: int, row: object) -> None:
        self.times.append(second)
        self.rows.append(row)
        if len(self.times) > self.limit + self.limit // 8:  # trim now and then, not per row
            cut = len(self.times) - self.limit
            self.horizon = self.times[cut - 1] + 1
            del self.times[:cut], self.rows[:cut]

    def page(
        self,
        number: int,
        start: int | None,
        end: int | None,
        keep: Callable[[int], bool] | None = None,
    ) -> list[tuple[int, object]]:
        """Up to `number` (second, row)s from `start` forward or from `end` back (inclusive),
        whole seconds: the boundary second comes complete even past `number`."""
        times = self.times
        if start is not None:
            indices: Iterable[int] = range(bisect_left(times, start), len(times))
        else:
            indices = range(bisect_right(times, end) - 1, -1, -1)
        out: list[tuple[int, object]] = []
        for i in indices:
            second = times[i]
            if len(out) >= number and second != out[-1][0]:
                break
            if keep is None or keep(second):
                out.append((second, self.rows[i]))
        return out if start is not None else out[::-1]


class Tape:
    """One contract's trades, quotes and midpoints as IB's HMDS keeps them."""

    def __init__(self, contract: SimContract, limit: int = DEFAULT_LIMIT) -> None:
        self.contract = contract
        self.enabled = limit > 0
        self.series = {kind: Series(limit) for kind in ("TRADES", "BID_ASK", "MIDPOINT")}
        self._decimals = contract.decimals
        self._mid: float | None = None
        self._recorded_trade_code = 2  # AllLast when the recording has it, else Last
        rth = _RTH.get(contract.sec_type)
        self._rth = (ZoneInfo(rth[0]), rth[1], rth[2]) if rth else None

    def record(self, events: Iterable[Quote | Trade | RecordedTick]) -> None:
        """Keep a batch of the market's events (the events themselves: no copy per tick)."""
        if not self.enabled:
            return
        trades, quotes = self.series["TRADES"], self.series["BID_ASK"]
        tape = self.contract.reports_trades
        for event in events:
            if isinstance(event, RecordedTick):
                self._record_replayed(event)
            elif isinstance(event, Trade):
                if tape:
                    trades.add(int(event.time), event)
            else:
                second = int(event.time)
                quotes.add(second, event)
                self._add_mid(second, round(event.mid, self._decimals + 1))

    def use_recorded_trades(self, code: int) -> None:
        """Which recorded trade stream is the tape: 2 (AllLast) or 1 (Last)."""
        self._recorded_trade_code = code

    def _record_replayed(self, tick: RecordedTick) -> None:
        f = tick.fields
        if tick.code == self._recorded_trade_code:
            self.series["TRADES"].add(int(f[1]), (f[2], f[3], f[5], f[6]))
        elif tick.code == 3:
            self.series["BID_ASK"].add(int(f[1]), (f[2], f[3], f[4], f[5]))
            self._add_mid(int(f[1]), round((f[2] + f[3]) / 2, self._decimals + 1))

    def _add_mid(self, second: int, mid: float) -> None:
        if mid != self._mid:  # as IB's midpoint stream: a tick when the midpoint moves
            self._mid = mid
            self.series["MIDPOINT"].add(second, (mid,))

    def regular_hours(self, second: int) -> bool:
        """Whether an IB second falls in the contract's regular trading hours."""
        if self._rth is None:
            return True
        zone, opens, closes = self._rth
        local = datetime.fromtimestamp(second, UTC).astimezone(zone)
        return local.weekday() < 5 and opens <= local.time() < closes

    def page(
        self, what: str, number: int, start: int | None, end: int | None, use_rth: bool
    ) -> list[tuple[int, tuple]]:
        """(IB second, fields) of one request's ticks: (price, size, exchange, conditions),
        (bid, ask, bid size, ask size) or (mid,)."""
        keep = self.regular_hours if use_rth else None
        return [(s, _fields(row)) for s, row in self.series[what].page(number, start, end, keep)]


def _fields(row: object) -> tuple:
    if isinstance(row, Trade):
        return (row.price, row.size, row.exchange, row.conditions)
    if isinstance(row, Quote):
        return (row.bid, row.ask, row.bid_size, row.ask_size)
    assert isinstance(row, tuple)
    return row
