"""The `taken` tie-break's search without a scan of the second's quotes per trade.

`order._matched` walks, for each trade, the quotes of its second from where the trade before
it went until one shows the trade taken (the trade's price on its bid or ask, and the next
quote with that side's size less by the trade's size, or moved away with no more than the
trade's size on it). At thousands of events a second that walk is most of the work. Here the
quotes that show something taken are indexed once, in numpy, by what they show (the side's
price and the size that left it; the price alone for a side that moved away), so each trade
looks up the first such quote at or after where its search starts: a few dictionary look-ups
and bisections a trade instead of a walk. Prices and sizes are keyed on a 1e-5 grid (ten
times the tolerance `PRICE_TOLERANCE` compares within; a value near a cell's edge looks in
the neighbour cell too) and every hit is checked with the tolerance.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

TOL = 1e-6  # order.PRICE_TOLERANCE
_SCALE = 1e5  # the key grid: TOL is a tenth of it, so values within TOL key at most 1 apart
_NEAR = 0.5 - 2 * TOL * _SCALE  # a value this far from its key may have a neighbour's


def _keys(values: np.ndarray) -> np.ndarray:
    return np.rint(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0) * _SCALE).astype(np.int64)


def _near(value: float) -> tuple[int, ...]:
    """The keys a value within TOL of `value` can have."""
    x = value * _SCALE
    k = round(x)
    if x - k > _NEAR:
        return (k, k + 1)
    if k - x > _NEAR:
        return (k, k - 1)
    return (k,)


def _index(where: np.ndarray, *keys: np.ndarray) -> dict:
    """key (one column's value, or a tuple of several) -> the ascending quote indices
    `where` holds with that key: sorted by key in numpy, each key's indices one slice."""
    rows = np.flatnonzero(where)
    if not len(rows):
        return {}
    columns = [k[rows] for k in keys]
    by_key = np.lexsort((rows, *reversed(columns)))  # key, then index (ascending)
    columns, rows = [c[by_key] for c in columns], rows[by_key]
    new = np.zeros(len(rows), bool)
    new[0] = True
    for c in columns:
        new[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(new)
    bounds = [*starts.tolist(), len(rows)]
    heads = [c[starts].tolist() for c in columns]
    keyed = heads[0] if len(heads) == 1 else zip(*heads, strict=True)
    ordered = rows.tolist()
    return {key: ordered[bounds[i] : bounds[i + 1]] for i, key in enumerate(keyed)}


class Evident:
    """The quotes that show a trade taken from their bid or ask, indexed by what they show."""

    def __init__(self, quote: tuple[np.ndarray, ...], q_contract: np.ndarray) -> None:
        bid, bid_size, ask, ask_size = quote
        n = len(bid)
        nxt = np.minimum(np.arange(n) + 1, n - 1)
        follows = (np.arange(n) < n - 1) & (q_contract[nxt] == q_contract)
        self.bid, self.ask = bid.tolist(), ask.tolist()
        self.sides = []
        for price, size, away in ((ask, ask_size, 1), (bid, bid_size, -1)):
            after, size_after = price[nxt], size[nxt]
            with np.errstate(invalid="ignore"):
                same = follows & (np.abs(after - price) <= TOL)
                moved = follows & ~same & ((after - price) * away > 0)
            left = size - size_after
            price_keys = _keys(price)
            exact = _index(same, price_keys, _keys(left))
            gone = _index(moved, price_keys)
            self.sides.append((exact, gone, size.tolist(), price.tolist(), left.tolist()))

    def first(self, target: float, size: float, start: int, stop: int) -> int:
        """The first quote index in [start, stop) that shows a trade of `size` at `target`
        taken (-1: none)."""
        best = stop
        prices_near, sizes_near = _near(target), _near(size)
        for exact, gone, sizes, prices, left in self.sides:
            for pk in prices_near:
                for sk in sizes_near:
                    found = exact.get((pk, sk))
                    if found:
                        i = bisect_left(found, start)
                        while i < len(found) and found[i] < best:
                            k = found[i]
                            if abs(prices[k] - target) <= TOL and abs(left[k] - size) <= TOL:
                                best = k
                                break
                            i += 1
                found = gone.get(pk)
                if found:
                    i = bisect_left(found, start)
                    while i < len(found) and found[i] < best:
                        k = found[i]
                        if abs(prices[k] - target) <= TOL and sizes[k] <= size + TOL:
                            best = k
                            break
                        i += 1
        return best if best < stop else -1

    def at_ask(self, k: int, target: float) -> bool:
        return abs(self.ask[k] - target) <= TOL
