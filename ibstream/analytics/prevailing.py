"""Each trade's prevailing quote and tick-test direction, per contract, from carried state.

This is the stateful half of classification. For one contract nothing moves; for a few
(`contract_rows`) the rows stay in arrival order and per-contract counts number each trade's
last quote; for many the ticks are put in contract order (`grouping.group_rows`) and a
cumsum over the quote rows numbers it. A trade that comes before its contract's first quote
in the batch gets the quote earlier batches left (kept in the `book`, one per contract). The
tick test (`tick_test`) is the sign of the last price change, a contract's first trade
compared with its carried last price; it is read for every trade or only for the few the
quote rules leave undecided. Each contract's last quote, price and direction are the state
carried to the next batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.analytics.contract_rows import Contracts, Counts, members
from ibstream.analytics.grouping import EARLIEST
from ibstream.analytics.tick_test import ArrivalTicks, TickTest, part_starts

STATE_COLUMNS = {
    "bid": "float64",
    "ask": "float64",
    "price": "float64",
    "tick": "int8",
    "time": "int64",
    "all_last": "bool",
}


def empty_state() -> pd.DataFrame:
    """The carried state before any tick (index contract_id; bid, ask: last quote; price:
    last trade price; tick: last nonzero price change, +1 or -1, 0 while none; time: last
    receive time in ns; all_last: whether its all_last trades have begun)."""
    return pd.DataFrame(
        {c: pd.Series(dtype=d) for c, d in STATE_COLUMNS.items()},
        index=pd.Index([], dtype="int64", name="contract_id"),
    )


# what a contract that nothing carries starts from
_NONE = {"bid": np.nan, "ask": np.nan, "price": np.nan, "tick": 0, "time": EARLIEST, "all_last": 0}


def carried(state: pd.DataFrame | None, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The `state` columns of the contracts `ids` as arrays in that order (what none carried:
    NaN prices, tick 0, time EARLIEST, all_last False), and `known`: whether one is carried.
    A first batch (no state) builds no frame: pandas' fixed costs add up on small batches."""
    at = np.full(len(ids), -1) if state is None or not len(state) else state.index.get_indexer(ids)
    known = at >= 0
    out = {"known": known}
    for name, dtype in STATE_COLUMNS.items():
        out[name] = np.full(len(ids), _NONE[name], dtype=dtype)
        if known.any():
            out[name][known] = state[name].fillna(_NONE[name]).to_numpy(dtype).take(at[known])
    return out


@dataclass(frozen=True)
class Book:
    """A batch's trades in arrival order, with what the classification rules read."""

    rows: np.ndarray  # their rows in the tick frame
    price: np.ndarray
    bid: np.ndarray  # the prevailing quote of the trade's contract (NaN if none)
    ask: np.ndarray
    ticks: TickTest | ArrivalTicks  # in contract order, or arrival order (back None)
    back: np.ndarray | None  # each trade's place in contract order (None: the same)
    state: dict[str, np.ndarray]  # per contract after the batch: bid, ask, price, tick
    next_row: np.ndarray | None = None  # row of the contract's next quote, -1 if none (asked)
    code: np.ndarray | None = None  # each one's contract code (a few contracts: `g.codes`)

    def tick(self, trades: np.ndarray | None = None) -> np.ndarray:
        """Tick-test direction (int8 +1, -1 or 0) of the trades at these positions in arrival
        order (all if None)."""
        if trades is None:
            tick = self.ticks.all()
            return tick if self.back is None else tick.take(self.back)
        return self.ticks.at(trades if self.back is None else self.back.take(trades))


def prevailing(
    is_quote: np.ndarray,
    is_trade: np.ndarray,
    g: Contracts,
    price: np.ndarray,
    bid: np.ndarray,
    ask: np.ndarray,
    init: Mapping[str, np.ndarray],
    look_ahead: bool = False,
) -> Book:
    """The trades among the ticks (arrival order) with their prevailing quote and tick-test
    direction, continuing the carried state of the contracts `g.ids` (`init`, see `carried`).
    The returned state has bid, ask, price and tick.
    With `look_ahead`, `Book.next_row` holds each trade's next quote of its contract in
    the batch."""
    if g.codes is not None:
        return _in_arrival_order(is_quote, is_trade, g, price, (bid, ask), init, look_ahead)
    if g.order is not None:
        kind = (is_quote.view(np.int8) + 2 * is_trade.view(np.int8)).take(g.order)
        is_quote, is_trade = kind == 1, kind == 2
    quotes, trades = np.flatnonzero(is_quote), np.flatnonzero(is_trade)  # in contract order
    quote_ends, trade_ends = np.searchsorted(quotes, g.ends), np.searchsorted(trades, g.ends)
    quote_starts, trade_starts = part_starts(quote_ends), part_starts(trade_ends)
    book = len(quotes) + np.arange(g.size)  # the book: quotes, then the carried ones
    quoted = g.rows(quotes)
    book_bid = _book(bid, quoted, init["bid"])
    book_ask = _book(ask, quoted, init["ask"])
    seen = _quotes_before(is_quote, quotes, trades).astype(np.intp, copy=False)
    quote_at = seen - 1  # quotes before each trade (nondecreasing) -> its last quote,
    # unless that is another contract's:
    own = np.searchsorted(quote_at, quote_starts, side="left")  # first trade that has its own
    unquoted = np.minimum(np.maximum(own, trade_starts), trade_ends) - trade_starts
    quote_at[_ranges(trade_starts, unquoted)] = np.repeat(book, unquoted)
    last_quote = np.where(quote_ends > quote_starts, quote_ends - 1, book)
    rows = g.rows(trades)
    traded = price.take(rows)
    if g.order is None:  # one contract: arrival order, the tick test read where needed
        ticks = ArrivalTicks(traded, np.zeros(len(traded), dtype=np.uint8), *_carried(init))
    else:
        ticks = TickTest(traded, trade_ends, *_carried(init))
    state = _state((book_bid.take(last_quote), book_ask.take(last_quote)), ticks)
    next_at = None
    if look_ahead:  # the quote after each trade: the next one counted, if its own
        next_at = seen
        own = next_at < np.repeat(quote_ends, trade_ends - trade_starts)
        quoted = quoted if len(quotes) else np.zeros(1, dtype=np.intp)
        next_at = np.where(own, quoted.take(np.where(own, next_at, 0)), -1)
    back = None
    if g.order is not None:  # contract order -> arrival order
        back = np.argsort(rows, kind="stable")
        rows, quote_at = rows.take(back), quote_at.take(back)
        next_at = None if next_at is None else next_at.take(back)
        traded = price.take(rows)
    bid, ask = book_bid.take(quote_at), book_ask.take(quote_at)
    return Book(rows, traded, bid, ask, ticks, back, state, next_at)


def _in_arrival_order(
    is_quote: np.ndarray,
    is_trade: np.ndarray,
    g: Contracts,
    price: np.ndarray,
    quotes: tuple[np.ndarray, np.ndarray],
    init: Mapping[str, np.ndarray],
    look_ahead: bool,
) -> Book:
    """`prevailing` for a few contracts (`g.codes`), rows left in arrival order. The book
    holds per contract its carried quote, then its quotes; `Counts` gives each trade the
    slot of its contract's last quote before it; the tick test looks back from the trades
    that need it (`ArrivalTicks`)."""
    quoted, trades = np.flatnonzero(is_quote), np.flatnonzero(is_trade)
    code = g.codes.take(quoted)
    parts = members(code, g.size)
    book = Counts(code, np.array([len(part) for part in parts]), gap=1)
    rows = np.empty(len(quoted) + g.size, dtype=np.intp)  # each slot's row, carried: -1
    rows[book.starts - 1] = -1
    for at, end, part in zip(book.starts, book.ends, parts, strict=True):
        quoted.take(part, out=rows[at:end], mode="clip")  # clip: no buffered copy
    code = g.codes.take(trades)
    quote_at = book.at(code, _quotes_before(is_quote, quoted, trades))
    traded = price.take(trades)
    ticks = ArrivalTicks(traded, code, *_carried(init))
    carried = (init["bid"], init["ask"])
    state = _state(_quoted(rows.take(book.ends - 1), quotes, carried, np.arange(g.size)), ticks)
    next_at = None
    if look_ahead:  # the quote after each trade: the next slot, if its contract's
        own = quote_at < book.ends.take(code) - 1
        next_at = np.where(own, rows.take(np.where(own, quote_at + 1, 0)), -1)
    bid, ask = _quoted(rows.take(quote_at), quotes, carried, code, _unquoted(book, rows, trades))
    return Book(trades, traded, bid, ask, ticks, None, state, next_at, code)


def _unquoted(book: Counts, rows: np.ndarray, trades: np.ndarray) -> int:
    """How many of the first trades may come before their contract's first quote (all, if
    a contract has none): those before the latest of the contracts' first quotes."""
    if not len(trades) or (book.counts == 0).any():
        return len(trades)
    return int(np.searchsorted(trades, rows.take(book.starts).max()))


def _carried(init: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The carried last price and last direction per contract, as the tick test reads them."""
    return init["price"], init["tick"]


def _quotes_before(is_quote: np.ndarray, quoted: np.ndarray, trades: np.ndarray) -> np.ndarray:
    """How many quotes come before each trade (rows in any one order). When every row is a
    quote or a trade, trade i (row r) has r - i of them; else they are counted."""
    if len(quoted) + len(trades) == len(is_quote):
        before = np.arange(len(trades))
        return np.subtract(trades, before, out=before)
    return np.cumsum(is_quote, dtype=np.int32).take(trades)


def _quoted(
    rows: np.ndarray,
    quotes: tuple[np.ndarray, np.ndarray],
    carried: tuple[np.ndarray, np.ndarray],
    code: np.ndarray,
    upto: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask of the quotes at `rows`; where a row is -1 (only in the first `upto`, if
    given), the carried quote of the contract `code` (the same place in `code`)."""
    bid, ask = quotes[0].take(rows), quotes[1].take(rows)  # -1: the last row, replaced
    early = np.flatnonzero(rows[:upto] < 0)
    if len(early):
        mine = code.take(early)
        bid[early], ask[early] = carried[0].take(mine), carried[1].take(mine)
    return bid, ask


def _state(last: tuple[np.ndarray, np.ndarray], ticks: TickTest | ArrivalTicks) -> dict:
    """The carried state of the contracts after the batch (time and all_last aside):
    `last` the bid and ask of each one's last quote."""
    return {"bid": last[0], "ask": last[1], "price": ticks.last_price, "tick": ticks.last_tick}


def _book(values: np.ndarray, rows: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """`values` at `rows`, then the `carried` ones."""
    out = np.empty(len(rows) + len(carried), dtype=values.dtype)
    values.take(rows, out=out[: len(rows)], mode="clip")  # clip: no buffered copy
    out[len(rows) :] = carried
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions starts[i] .. starts[i] + lengths[i] - 1, for every i, concatenated."""
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(len(offsets))
