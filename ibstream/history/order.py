"""The order of IB's historical ticks merged across BID_ASK, TRADES and MIDPOINT: numpy only,
so the server (which never imports the client) and `merge.merge_history` (which builds the
tick frame) share it. The tie-breaks within a second are documented in `merge`.
"""

from __future__ import annotations

import numpy as np

from ibstream.history.taken import Evident

TIE_BREAKS = ("taken", "at_price", "spread", "quotes_first", "trades_first")
DEFAULT_TIE_BREAK = "taken"
SECOND = 1_000_000_000
PRICE_TOLERANCE = 1e-6  # as classification: a price within this of a quote's side is at it
LOOKUP = True  # `taken` looks the quote up (`taken.Evident`); False: walks (the reference)


def history_order(
    contract_id: np.ndarray, ib_ns: np.ndarray, kind: np.ndarray, trade: tuple[np.ndarray, ...],
    quote: tuple[np.ndarray, ...], tie_break: str = DEFAULT_TIE_BREAK,
) -> np.ndarray:  # fmt: skip
    """The merged order of rows given in stream order (quotes kind 0, trades 1, midpoints 2):
    by IB second, contract, then the tie-break's place within the second; each stream's own
    order kept. `trade` holds the trade price and size, `quote` the bid, bid size, ask and ask
    size (a price NaN: a missing side)."""
    seconds = ib_ns // SECOND
    first = np.lexsort((np.arange(len(kind)), kind, seconds, contract_id))  # streams in order
    groups = np.r_[True, (np.diff(seconds[first]) != 0) | (np.diff(contract_id[first]) != 0)]
    group = np.cumsum(groups) - 1
    rank, count = _rank(group, kind[first])
    quotes_in = count[:, 0][group]  # m: the group's quotes
    is_trade = kind[first] == 1
    place = np.where(kind[first] == 0, rank + 1.0, quotes_in + 1.0)  # after `rank` quotes
    n, i, m = count[group[is_trade], 1], rank[is_trade], quotes_in[is_trade]
    spread = ((i + 1) * m * 2 + n + 1) // (2 * (n + 1))  # round half up, in integers
    if tie_break == "quotes_first":
        before = m
    elif tie_break == "trades_first":
        before = np.zeros_like(m)
    elif tie_break == "spread":
        before = spread
    else:
        before = _matched(
            first, group, kind[first], trade, quote, spread, contract_id,
            tie_break == "taken",
        )  # fmt: skip
    place[is_trade] = before + 0.5  # after `before` quotes, before the next one
    return first[np.lexsort((np.arange(len(first)), place, contract_id[first], seconds[first]))]


def _rank(group: np.ndarray, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's rank among its group's rows of the same kind, and per group the count of
    each kind (rows sorted by group, then kind)."""
    n_groups = int(group[-1]) + 1
    count = np.zeros((n_groups, 3), np.int64)
    np.add.at(count, (group, kind), 1)
    starts = np.cumsum(count.ravel()) - count.ravel()  # first row of each (group, kind)
    return np.arange(len(group)) - starts[group * 3 + kind], count


def _matched(
    first: np.ndarray, group: np.ndarray, kind: np.ndarray, trade: tuple[np.ndarray, ...],
    quote: tuple[np.ndarray, ...], spread: np.ndarray, contract_id: np.ndarray, consumed: bool,
) -> np.ndarray:  # fmt: skip
    """For each trade (in merged order), how many of its second's quotes go before it under
    `at_price` (`consumed`: `taken`). Candidate p = 0 is the contract's last quote of an
    earlier second, if any."""
    before = spread.copy()
    quote_rows, trade_rows = first[kind == 0], first[kind == 1]
    if not len(quote_rows):  # trades alone (no quotes asked, or IB refused them)
        return before
    q_group, t_group = group[kind == 0], group[kind == 1]
    bid, bid_size, ask, ask_size = (a[quote_rows] for a in quote)
    price, size = (a[trade_rows] for a in trade)
    q_contract = contract_id[quote_rows]
    lo = np.searchsorted(q_group, t_group, side="left")
    hi = np.searchsorted(q_group, t_group, side="right")
    earlier = (lo > 0) & (q_contract[np.maximum(lo - 1, 0)] == contract_id[trade_rows])
    last = len(bid) - 1
    todo = np.flatnonzero(hi > lo)
    lookup = consumed and LOOKUP
    evident_at = Evident((bid, bid_size, ask, ask_size), q_contract) if lookup else None
    # Python lists from here: the loop reads single values, which lists hand out several
    # times faster than numpy arrays do (numpy scalars)
    bid, bid_size, ask, ask_size = (a.tolist() for a in (bid, bid_size, ask, ask_size))
    price, size, q_contract = price.tolist(), size.tolist(), q_contract.tolist()
    lo, hi, earlier, t_group = lo.tolist(), hi.tolist(), earlier.tolist(), t_group.tolist()
    spread_of = spread.tolist()
    previous_group, placed, sweep = -1, 0, None
    for t in todo.tolist():  # trades in a second with quotes
        if t_group[t] != previous_group:
            previous_group, placed, sweep = t_group[t], 0, None
        a, target = lo[t], price[t]
        if sweep is not None and (target - sweep[1]) * sweep[0] > PRICE_TOLERANCE:
            before[t], sweep = sweep[2], (sweep[0], target, sweep[2])  # further through the book
            continue
        sweep = None
        found = evident = -1
        start = a - 1 + placed if placed or earlier[t] else a
        if evident_at is not None:  # `taken`: the first quote that shows it, looked up
            k = evident_at.first(target, size[t], start, hi[t])
            if k >= 0:
                evident = k - a + 1
                sweep = (1 if evident_at.at_ask(k, target) else -1, target, evident)
        for k in range(start, hi[t]) if evident_at is None else ():
            at_bid = abs(bid[k] - target) <= PRICE_TOLERANCE
            at_ask = abs(ask[k] - target) <= PRICE_TOLERANCE
            if not (at_bid or at_ask):
                continue
            if found < 0:
                found = k - a + 1
                if not consumed:
                    break
            if (
                k < last
                and q_contract[k + 1] == q_contract[k]
                and (  # the quote after shows it
                    (at_ask and _took(ask[k], ask_size[k], ask[k + 1], ask_size[k + 1], size[t], 1))
                    or (
                        at_bid
                        and _took(bid[k], bid_size[k], bid[k + 1], bid_size[k + 1], size[t], -1)
                    )
                )
            ):
                evident = k - a + 1
                sweep = (1 if at_ask else -1, target, evident)
                break
        if consumed:
            chosen = evident if evident >= 0 else placed
        else:
            chosen = found if found >= 0 else int(spread_of[t])
        placed = max(placed, chosen)
        before[t] = placed
        if evident >= 0:  # the next quote shows this trade: the next trade comes after it
            placed = min(placed + 1, hi[t] - a)
    return before


def _took(
    price: float, size: float, after: float, size_after: float, trade: float, away: int
) -> bool:
    """Does a quote side going from (`price`, `size`) to (`after`, `size_after`) show a trade
    of size `trade` taken from it: the same price with exactly that much less, or the level
    gone (`away`: the way the side moves, +1 for the ask) with no more than that on it."""
    if abs(after - price) <= PRICE_TOLERANCE:
        return abs(size - size_after - trade) <= PRICE_TOLERANCE
    return (after - price) * away > 0 and size <= trade + PRICE_TOLERANCE
