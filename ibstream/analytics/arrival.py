"""What classification needs of a tick frame's rows, per contract: receive times that never
go back (the prevailing quote is the last one received before a trade, so a frame out of
order would be classified wrong), and one trade stream per contract.

A contract subscribed as both `last` and `all_last` reports each print twice. `all_last` is
the superset (it adds odd lots and off-exchange prints), so from a contract's first
`all_last` trade on its `last` trades are left out. The rule looks only backwards, so that
any split of the ticks into batches (carrying `seen`) leaves out the same rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ibstream.analytics.contract_rows import Contracts

SORT_HINT = 'sort them by receive time first, e.g. ticks.sort_index(kind="stable")'


class DoubleCountWarning(UserWarning):
    """Ticks held both `last` and `all_last` trades of one contract: one set was left out."""


def receive_times(index: pd.Index) -> np.ndarray | None:
    """The frame's receive times in ns (UTC), or None when its index holds no times."""
    if not isinstance(index, pd.DatetimeIndex):
        return None
    return index.asi8 if index.unit == "ns" else index.as_unit("ns").asi8  # as_unit copies


def check_order(time: np.ndarray, g: Contracts, since: np.ndarray) -> None:
    """Raise ValueError if a contract's receive times go back: within its rows (`g`) or
    before `since` (each contract's last time in earlier batches). Times in order across
    all rows (as the server stamps them) need no grouping: only each contract's first."""
    if g.size > 1 and not (time[1:] < time[:-1]).any():
        if not (time.take(g.firsts) < since).any():
            return
    order, ends, ids = g.order, g.ends, g.ids
    starts = np.concatenate([[0], ends[:-1]])
    timed = time if order is None else time.take(order)
    back = np.zeros(len(timed), dtype=bool)
    back[1:] = timed[1:] < timed[:-1]
    back[starts] = timed[starts] < since
    if not back.any():
        return
    where = np.flatnonzero(back)
    at = where[0]
    rows = at if order is None else order[at]
    bad = ids[np.searchsorted(ends, where, side="right")]
    before = since[np.searchsorted(ends, at, side="right")] if at in starts else timed[at - 1]
    raise went_back(np.unique(bad).tolist(), int(rows), int(timed[at]), int(before))


def went_back(contracts: list[int], row: int, time: int, before: int) -> ValueError:
    """The error for receive times that go back: where, and how to fix it."""
    return ValueError(
        f"receive times go back for contract(s) {', '.join(map(str, contracts))}: row {row} "
        f"at {pd.Timestamp(time, tz='UTC')} comes after {pd.Timestamp(before, tz='UTC')}; "
        f"classification needs ticks in arrival order: {SORT_HINT}"
    )


def one_trade_stream(
    is_trade: np.ndarray, is_all_last: np.ndarray, g: Contracts, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The trades to classify (a `last` trade of a contract whose `all_last` trades have
    begun, here or before: `seen`, is left out, with one warning) and per contract whether
    its `all_last` trades have begun after these rows (`g`: the contracts' rows)."""
    if not is_all_last.any() and not seen.any():
        return is_trade, seen
    order, ends, ids = g.order, g.ends, g.ids
    lengths = np.diff(np.concatenate([[0], ends]))
    mine = np.repeat(np.arange(len(ends)), lengths)  # contract number, in contract order
    kinds = is_all_last if order is None else is_all_last.take(order)
    counted = np.cumsum(kinds)
    before = np.concatenate([[0], counted[ends[:-1] - 1]]) if len(ends) else counted[:0]
    begun = (counted - before[mine] > 0) | seen[mine]
    last = is_trade & ~is_all_last
    doubled = (last if order is None else last.take(order)) & begun
    now_seen = seen | (counted[ends - 1] - before > 0)
    if not doubled.any():
        return is_trade, now_seen
    rows = np.flatnonzero(doubled)
    rows = rows if order is None else order.take(rows)
    warn_doubled(np.unique(ids[mine[np.flatnonzero(doubled)]]).tolist(), len(rows))
    kept = is_trade.copy()
    kept[rows] = False
    return kept, now_seen


def warn_doubled(contracts: list[int], count: int) -> None:
    """The one warning of a call that left out `count` doubled `last` trades."""
    warnings.warn(
        f"the ticks hold both last and all_last trades of contract(s) "
        f"{', '.join(map(str, contracts))}: each print would count twice; {count} last "
        "trade(s) from the first all_last trade on are left out (all_last is the superset). "
        "Subscribe to one of them per contract.",
        DoubleCountWarning,
        stacklevel=5,
    )
