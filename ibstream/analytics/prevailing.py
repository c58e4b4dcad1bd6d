"""Each trade's prevailing quote and tick-test direction, per contract, from carried state.

This is the stateful half of classification. The ticks are put in contract order (for
several contracts by `grouping.group_rows`; for one, nothing moves). A cumsum over the quote
rows then numbers each trade's last quote; a trade that comes before its contract's first
quote in the batch gets the quote earlier batches left (kept behind the batch's quotes in
the `book`, one per contract). The tick test is the sign of the last price change, a
contract's first trade compared with its carried last price; it is read for every trade or
only for the few the quote rules leave undecided. Each contract's last quote, price and
direction are the state carried to the next batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.analytics.grouping import group_rows

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


@dataclass(frozen=True)
class Book:
    """A batch's trades in arrival order, with what the classification rules read."""

    rows: np.ndarray  # their rows in the tick frame
    price: np.ndarray
    bid: np.ndarray  # the prevailing quote of the trade's contract (NaN if none)
    ask: np.ndarray
    ticks: TickTest  # in contract order
    back: np.ndarray | None  # each trade's place in contract order (None: the same)
    state: pd.DataFrame  # the carried state after the batch, for its contracts
    next_row: np.ndarray | None = None  # row of the contract's next quote, -1 if none (asked)

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
    init: pd.DataFrame,
    look_ahead: bool = False,
) -> Book:
    """The trades among the ticks (arrival order) with their prevailing quote and tick-test
    direction, continuing the carried state of the contracts `g.ids` (`init`, in that order;
    NaN where none, see `empty_state`). The returned state has bid, ask, price and tick.
    With `look_ahead`, `Book.next_row` holds each trade's next quote of its contract in
    the batch."""
    if g.order is not None:
        kind = (is_quote.view(np.int8) + 2 * is_trade.view(np.int8)).take(g.order)
        is_quote, is_trade = kind == 1, kind == 2
    seen = np.cumsum(is_quote, dtype=np.int32)  # quotes up to each row, in contract order
    quotes, trades = np.flatnonzero(is_quote), np.flatnonzero(is_trade)
    quote_ends, trade_ends = seen.take(g.ends - 1), np.searchsorted(trades, g.ends)
    quote_starts, trade_starts = _starts(quote_ends), _starts(trade_ends)
    book = len(quotes) + np.arange(g.size)  # the book: quotes, then the carried ones
    quoted = g.rows(quotes)
    book_bid = _book(bid, quoted, init["bid"].to_numpy(np.float64))
    book_ask = _book(ask, quoted, init["ask"].to_numpy(np.float64))
    quote_at = seen.take(trades).astype(np.intp)  # quotes up to each trade; nondecreasing
    quote_at -= 1  # -> its last quote, unless that is another contract's:
    own = np.searchsorted(quote_at, quote_starts, side="left")  # first trade that has its own
    unquoted = np.minimum(np.maximum(own, trade_starts), trade_ends) - trade_starts
    quote_at[_ranges(trade_starts, unquoted)] = np.repeat(book, unquoted)
    last_quote = np.where(quote_ends > quote_starts, quote_ends - 1, book)
    rows = g.rows(trades)
    traded = price.take(rows)
    ticks = TickTest(
        traded,
        trade_ends,
        init["price"].to_numpy(np.float64),
        init["tick"].fillna(0).to_numpy(np.int8),
    )
    state = pd.DataFrame(
        {
            "bid": book_bid.take(last_quote),
            "ask": book_ask.take(last_quote),
            "price": ticks.last_price,
            "tick": ticks.last_tick,
        },
        index=pd.Index(g.ids, name="contract_id"),
    )
    next_at = None
    if look_ahead:  # the quote after each trade: the next one counted, if its own
        next_at = seen.take(trades).astype(np.intp)
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


class Contracts:
    """The rows of a tick frame grouped by contract: `ids` the distinct contracts, `order`
    the rows in contract order (arrival order within one; None when there is one contract),
    `ends` where each contract's rows end in that order."""

    def __init__(self, contract: np.ndarray) -> None:
        if not len(contract) or contract.min() == contract.max():
            self.ids, self.order = contract[:1], None
            self.ends = np.array([len(contract)])
            return
        g = group_rows(contract, sort=False)
        self.ids, self.order, self.ends = g.keys[0], g.order, g.starts + g.lengths

    @property
    def size(self) -> int:
        return len(self.ids)

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Positions in contract order -> rows of the frame."""
        return positions if self.order is None else self.order.take(positions)


class TickTest:
    """The tick test of trades in contract order (contract i's ending at `ends[i]`): each
    trade's direction is the sign of the last price change up to it. A contract's first
    trade compares with its carried price (`start_price`, NaN if none) and keeps the carried
    `start_tick` on no change; a trade without a price gets 0 and does not move the test.
    `at` reads a few trades (the rules need the test only where the quote does not decide)."""

    def __init__(
        self, price: np.ndarray, ends: np.ndarray, start_price: np.ndarray, start_tick: np.ndarray
    ) -> None:
        nan = np.isnan(price)
        self.priced = None  # each trade's place among the priced ones, when some are not
        if nan.any():
            self.priced = np.where(nan, -1, np.cumsum(~nan) - 1)
            ends = np.concatenate([[0], np.cumsum(~nan)]).take(ends)
            price = price[~nan]
        starts = _starts(ends)
        traded = starts < ends
        firsts, lasts = starts[traded], ends[traded] - 1
        self.step = np.empty(len(price), dtype=np.int8)  # the sign of each price change
        up, down = price[1:] > price[:-1], price[1:] < price[:-1]
        np.subtract(up.view(np.int8), down.view(np.int8), out=self.step[1:])
        change = price.take(firsts) - start_price[traded]  # NaN without a carried price
        self.step[firsts] = np.where(change > 0, 1, np.where(change < 0, -1, start_tick[traded]))
        self.mark = self.step != 0
        self.mark[firsts] = True  # no contract's direction runs on into the next one's
        self.marks = np.flatnonzero(self.mark)
        self.last_price, self.last_tick = start_price.copy(), start_tick.copy()
        self.last_price[traded], self.last_tick[traded] = price.take(lasts), self._at(lasts)

    def all(self) -> np.ndarray:
        """Every trade's direction: a forward fill of the marked steps."""
        seen = np.cumsum(self.mark, dtype=np.intp)
        seen -= 1
        tick = self.step.take(self.marks).take(seen)
        return tick if self.priced is None else _place(tick, self.priced >= 0)

    def at(self, trades: np.ndarray) -> np.ndarray:
        """The direction of the trades at these (contract-order) positions."""
        if len(trades) * 8 > len(self.mark):  # many: filling all is cheaper
            return self.all().take(trades)
        if self.priced is None:
            return self._at(trades)
        where = self.priced.take(trades)
        return _place(self._at(where[where >= 0]), where >= 0)

    def _at(self, priced: np.ndarray) -> np.ndarray:
        """The direction at these places among the priced trades: the last marked step."""
        last = np.searchsorted(self.marks, priced, side="right") - 1
        return self.step.take(self.marks.take(last))


def _starts(ends: np.ndarray) -> np.ndarray:
    """Where each contract's part begins, from where each ends."""
    return np.concatenate([[0], ends[:-1]]).astype(ends.dtype)


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


def _place(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`values` at the True places of `where`, zeros elsewhere."""
    out = np.zeros(len(where), dtype=values.dtype)
    out[where] = values
    return out
