"""The per-tick path of classification: the rules of `classify` on Python floats.

A live feed hands over a few ticks at a time, and the vectorised path pays its fixed cost
(a frame, grouping, dozens of numpy calls) on every batch: about a millisecond and a half
whatever its size. Here a tick costs a few microseconds. Both paths carry the same state per
contract (`Carried`) and apply the same rules with the same float operations in the same
order, so they give the same bits; `TradeClassifier` takes wire rows this way and frames
the other, and the tests check any mix of them against one `classify` call.

For `lookahead` a trade waits in its contract's `pending` list until the contract's next
quote decides it, or until a tick of the contract (or `release`, by the wall clock) comes more
than the timeout after it: Lee-Ready then decides, as `classify` does for a trade whose next
quote is further away. Trades leave in the order they are decided (arrival order within a
contract), so any split of the ticks gives each contract's rows of one `classify` call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from ibstream.analytics import lookahead as ahead
from ibstream.analytics.arrival import receive_times, warn_doubled, went_back
from ibstream.analytics.classify import (
    CLNV_BAND,
    EQUAL_WITHIN,
    QUOTE_DTYPE,
    SIDE_DTYPE,
    empty_trades,
)
from ibstream.analytics.grouping import EARLIEST
from ibstream.analytics.prevailing import empty_state
from ibstream.analytics.quotes import quote_price, tick_type_of
from ibstream.model import TickType

NAN = math.nan
QUOTE, LAST, ALL_LAST, OTHER = range(4)
_KINDS = {TickType.BID_ASK: QUOTE, TickType.LAST: LAST, TickType.ALL_LAST: ALL_LAST}
_KIND_OF: dict[object, int] = {}  # tick type name as sent -> kind (filled as names come)
_SIDE_OF_DIRECTION = {1: 0, -1: 1, 0: 2}  # +1 buy, -1 sell, 0 neutral -> side code
_LATEST = 2**63  # a time (ns) after any other
_ROW_COLUMNS = (
    "contract_id", "tick_type", "sequence", "price", "size", "exchange",
    "bid_price", "bid_size", "ask_price", "ask_size",
)  # fmt: skip


class Trade(NamedTuple):
    """One classified trade: a row of `classify`'s output (codes index SIDES and
    QUOTE_STATES; `time` is the receive time in ns since the epoch, UTC)."""

    time: int
    contract_id: int
    sequence: int
    price: float
    size: float
    exchange: str | None
    bid: float
    ask: float
    quote: int
    side: int


class Carried:
    """What classification carries per contract (the columns of `empty_state`)."""

    __slots__ = ("all_last", "ask", "bid", "pending", "price", "tick", "time")

    def __init__(
        self,
        bid: float = NAN,
        ask: float = NAN,
        price: float = NAN,
        tick: int = 0,
        time: int = EARLIEST,
        all_last: bool = False,
        pending: list[Trade] | None = None,
    ) -> None:
        self.bid, self.ask, self.price, self.tick = bid, ask, price, tick
        self.time, self.all_last = time, all_last
        self.pending = [] if pending is None else pending  # lookahead: trades not decided

    def copy(self) -> Carried:
        return Carried(
            self.bid, self.ask, self.price, self.tick, self.time, self.all_last, list(self.pending)
        )


def classify_rows(
    rows: Iterable[Mapping], books: Mapping[int, Carried], method: str, wait: int = 0
) -> tuple[list[Trade], dict[int, Carried]]:
    """The trades among wire tick rows (arrival order) and the books they leave, per
    contract touched (`books` itself is not changed: the caller commits). For `lookahead`
    the trades decided by these rows (`wait`: the timeout in ns), see the module doc."""
    look = method == ahead.LOOKAHEAD
    method = "lee_ready" if look else method
    touched: dict[int, Carried] = {}
    trades: list[Trade] = []
    doubled: dict[int, int] = {}
    for i, row in enumerate(rows):
        c = row.get("contract_id", 0)
        book = touched.get(c)
        if book is None:
            book = touched[c] = books[c].copy() if c in books else Carried()
        time = row.get("recv_ns", 0)
        if time < book.time:
            raise went_back([c], i, time, book.time)
        book.time = time
        if book.pending:
            _expire(book.pending, time - wait, trades)
        name = row.get("tick_type")
        kind = _KIND_OF.get(name)
        if kind is None:
            kind = _KIND_OF.setdefault(name, _KINDS.get(tick_type_of(name), OTHER))
        if kind == QUOTE:
            book.bid = quote_price(_num(row, "bid_price"), _num(row, "bid_size"))
            book.ask = quote_price(_num(row, "ask_price"), _num(row, "ask_size"))
            if book.pending:
                after = (book.bid, book.ask)
                trades.extend(
                    p._replace(side=ahead.side(p.side, p.price, (p.bid, p.ask), after))
                    for p in book.pending
                )
                book.pending.clear()
        elif kind == ALL_LAST or (kind == LAST and not book.all_last):
            book.all_last = book.all_last or kind == ALL_LAST
            (book.pending if look else trades).append(_trade(row, c, time, book, method))
        elif kind == LAST:
            doubled[c] = doubled.get(c, 0) + 1
    if doubled:
        warn_doubled(sorted(doubled), sum(doubled.values()))
    return trades, touched


def _expire(pending: list[Trade], before: int, out: list[Trade]) -> None:
    """Move the pending trades older than `before` (ns) to `out`, undecided: Lee-Ready's."""
    n = 0
    while n < len(pending) and pending[n].time < before:
        n += 1
    out.extend(pending[:n])
    del pending[:n]


def release(books: Mapping[int, Carried], before: int | None) -> list[Trade]:
    """Take the pending trades received before `before` (ns; None: all) out of `books`,
    decided by Lee-Ready, in receive-time order (`lookahead` by the wall clock, or at the
    end of a feed)."""
    out: list[Trade] = []
    for book in books.values():
        _expire(book.pending, before if before is not None else _LATEST, out)
    out.sort(key=lambda trade: trade.time)
    return out


def frame_rows(ticks: pd.DataFrame) -> list[dict]:
    """A tick frame as wire rows (`recv_ns` from its time index), for the per-tick path."""
    names = [c for c in _ROW_COLUMNS if c in ticks.columns]
    rows = ticks[names].to_dict("records")
    stamps = receive_times(ticks.index)
    if stamps is not None:
        for row, stamp in zip(rows, stamps.tolist(), strict=True):
            row["recv_ns"] = stamp
    return rows


def _num(row: Mapping, name: str) -> float:
    value = row.get(name)
    return NAN if value is None else float(value)


def _trade(row: Mapping, c: int, time: int, book: Carried, method: str) -> Trade:
    price = _num(row, "price")
    if price == price:  # the tick test moves on priced trades only
        if price > book.price:
            book.tick = 1
        elif price < book.price:
            book.tick = -1
        book.price = price
        tick = book.tick
    else:
        tick = 0
    bid, ask = book.bid, book.ask
    side, quote = _decide(method, price, bid, ask, tick)
    sequence = row.get("sequence")
    return Trade(
        time, c, 0 if sequence is None else sequence, price, _num(row, "size"),
        row.get("exchange"), bid, ask, quote, side,
    )  # fmt: skip


def _decide(method: str, price: float, bid: float, ask: float, tick: int) -> tuple[int, int]:
    """Side and quote-state codes of one trade: `classify._rules` on floats."""
    spread = ask - bid
    quote = 3 if spread != spread else 2 if spread < 0 else 1 if spread == 0 else 0
    if method == "quote":
        tol = abs(spread) * EQUAL_WITHIN
        direction = (price >= ask - tol) - (price <= bid + tol)
    elif method == "tick" or quote:
        direction = tick
    else:
        tol = EQUAL_WITHIN * spread
        if method == "lee_ready":
            off = price - (bid + ask) * 0.5
            decided, sell = abs(off) > tol, off < 0
        elif method == "emo":
            buy, sell = abs(price - ask) <= tol, abs(price - bid) <= tol
            decided = buy or sell
        else:  # clnv
            band = CLNV_BAND * spread + tol
            buy = price >= ask - band and price <= ask + tol
            sell = price <= bid + band and price >= bid - tol
            decided = buy or sell
        direction = (-1 if sell else 1) if decided else tick
    return _SIDE_OF_DIRECTION[direction], quote


def trades_frame(trades: list[Trade]) -> pd.DataFrame:
    """Trade records -> the trades frame `classify` returns."""
    if not trades:
        return empty_trades()
    time, contract, sequence, price, size, exchange, bid, ask, quote, side = zip(
        *trades, strict=True
    )
    index = pd.DatetimeIndex(np.array(time, np.int64).view("M8[ns]"), name="time")
    return pd.DataFrame(
        {
            "contract_id": np.array(contract, np.int64),
            "sequence": np.array(sequence, np.int64),
            "price": np.array(price, np.float64),
            "size": np.array(size, np.float64),
            "exchange": pd.array(exchange, dtype=pd.StringDtype()),
            "bid": np.array(bid, np.float64),
            "ask": np.array(ask, np.float64),
            "quote": pd.Categorical.from_codes(np.array(quote, np.int8), dtype=QUOTE_DTYPE),
            "side": pd.Categorical.from_codes(np.array(side, np.int8), dtype=SIDE_DTYPE),
        },
        index=index.tz_localize("UTC"),
        copy=False,
    )


def books_frame(books: Mapping[int, Carried]) -> pd.DataFrame:
    """Books -> the carried state frame of `classify_with_state` (see `empty_state`)."""
    if not books:
        return empty_state()
    ids = list(books)
    values = list(books.values())
    return pd.DataFrame(
        {
            "bid": np.array([b.bid for b in values], np.float64),
            "ask": np.array([b.ask for b in values], np.float64),
            "price": np.array([b.price for b in values], np.float64),
            "tick": np.array([b.tick for b in values], np.int8),
            "time": np.array([b.time for b in values], np.int64),
            "all_last": np.array([b.all_last for b in values], bool),
        },
        index=pd.Index(np.array(ids, np.int64), name="contract_id"),
    )


def frame_books(state: pd.DataFrame) -> dict[int, Carried]:
    """The carried state frame -> books."""
    return {
        int(c): Carried(bid, ask, price, int(tick), int(time), bool(all_last))
        for c, bid, ask, price, tick, time, all_last in zip(
            state.index.tolist(), *(state[k].tolist() for k in state.columns), strict=True
        )
    }
