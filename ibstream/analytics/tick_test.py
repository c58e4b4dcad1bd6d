"""The tick test of a batch's trades per contract, continuing carried state.

Each trade's direction is the sign of the last price change of its contract up to it (Lee &
Ready 1991): `TickTest` computes it for every trade at once, in contract order.
`ArrivalTicks` answers for trades in arrival order (one contract, or a few interleaved): the
quote rules leave only a handful of trades to the tick test, so it looks back from just those
trades over a window of their neighbours, widened until the contract's last price change is
in it, and builds the whole test only when asked for most trades (the `tick` method) or when
the windows would cost as much.
"""

from __future__ import annotations

import numpy as np

from ibstream.analytics.contract_rows import members

_WINDOW = 16  # trades looked back at first


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
        starts = part_starts(ends)
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


def part_starts(ends: np.ndarray) -> np.ndarray:
    """Where each contract's part begins, from where each ends."""
    return np.concatenate([[0], ends[:-1]]).astype(ends.dtype)


def _place(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`values` at the True places of `where`, zeros elsewhere."""
    out = np.zeros(len(where), dtype=values.dtype)
    out[where] = values
    return out


class ArrivalTicks:
    """The tick test of trades in arrival order, `code` each one's contract (0..k-1), from
    the carried `start_price` / `start_tick` per contract (see `TickTest`)."""

    def __init__(
        self, price: np.ndarray, code: np.ndarray, start_price: np.ndarray, start_tick: np.ndarray
    ) -> None:
        self.price, self.code = price, code
        self.start_price, self.start_tick = start_price, start_tick
        self.priced = ~np.isnan(price)
        k = len(start_price)
        self.firsts = np.array([_edge(code, c, self.priced, False) for c in range(k)])
        lasts = np.array([_edge(code, c, self.priced, True) for c in range(k)])
        traded = lasts >= 0
        change = price.take(self.firsts[traded]) - start_price[traded]  # as `TickTest`
        self.first_step = start_tick.copy()
        self.first_step[traded] = np.where(
            change > 0, 1, np.where(change < 0, -1, start_tick[traded])
        )
        self.last_price, self.last_tick = start_price.copy(), start_tick.copy()
        self.last_price[traded] = price.take(lasts[traded])
        self.last_tick[traded] = self.at(lasts[traded])

    def all(self) -> np.ndarray:
        """Every trade's direction (`TickTest` in contract order, put back)."""
        if len(self.start_price) == 1:
            ends = np.array([len(self.price)])
            return TickTest(self.price, ends, self.start_price, self.start_tick).all()
        parts = members(self.code, len(self.start_price))
        order = np.concatenate(parts)
        ends = np.cumsum([len(part) for part in parts])
        ticks = TickTest(self.price.take(order), ends, self.start_price, self.start_tick)
        out = np.empty(len(order), dtype=np.int8)
        out[order] = ticks.all()
        return out

    def at(self, trades: np.ndarray) -> np.ndarray:
        """The direction of the trades at these (arrival-order) positions: per trade the
        last change between consecutive priced trades of its contract in a window back from
        it; none there, the contract's first step if the window holds its first trade, else
        a four times wider window."""
        return self.look_back(trades, len(self.price) // 8)

    def look_back(self, trades: np.ndarray, most: int) -> np.ndarray:
        """`at`, by windows while they span at most `most` trades in all, then by `all`."""
        out = np.zeros(len(trades), dtype=np.int8)
        todo = np.flatnonzero(self.priced.take(trades))  # no price: 0
        width = _WINDOW
        while len(todo):
            if len(todo) * width > most:  # as costly as all: all
                out[todo] = self.all().take(trades.take(todo))
                break
            found, step = self._look_back(trades.take(todo), width)
            out[todo[found]] = step
            todo = todo[~found]
            width *= 4
        return out

    def _look_back(self, trades: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Whether each trade's direction is decided within `width` trades back, and the
        directions of those decided."""
        code = self.code.take(trades)
        back = trades[:, None] - np.arange(width)  # newest first
        np.maximum(back, 0, out=back)
        mine = (self.code.take(back) == code[:, None]) & self.priced.take(back)
        mine[:, 1:] &= back[:, 1:] < back[:, :-1]  # not row 0 again
        places = np.flatnonzero(mine)  # each trade's own trades, newest first
        row, price = places // width, self.price.take(back.ravel().take(places))
        pair = (row[:-1] == row[1:]) & (price[:-1] != price[1:])
        hits = np.flatnonzero(pair)
        first = np.ones(len(hits), dtype=bool)
        first[1:] = row[hits[1:]] != row[hits[:-1]]
        hits = hits[first]  # each trade's newest change
        step = (price[hits] > price[hits + 1]).view(np.int8) - (price[hits] < price[hits + 1])
        found = np.zeros(len(trades), dtype=bool)
        found[row[hits]] = True
        direction = np.zeros(len(trades), dtype=np.int8)
        direction[row[hits]] = step
        whole = ~found & (trades - width < self.firsts.take(code))  # the window holds all
        direction[whole] = self.first_step.take(code[whole])
        found |= whole
        return found, direction[found]


def _edge(code: np.ndarray, c: int, priced: np.ndarray, last: bool) -> int:
    """The first (or `last`) priced trade of contract `c`, -1 if none; searched in growing
    blocks from that end (a contract's trades are seldom far from either end)."""
    n, step, done = len(code), 4096, 0
    while done < n:
        lo, hi = (n - done - step, n - done) if last else (done, done + step)
        lo = max(lo, 0)
        found = np.flatnonzero((code[lo:hi] == c) & priced[lo:hi])
        if len(found):
            return lo + int(found[-1] if last else found[0])
        done, step = done + step, step * 4
    return -1
