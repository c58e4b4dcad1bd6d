"""Footprint cells grouped by (time, contract, price level) without sorting the rows.

Cells on one tick grid map to a position in a table of (bar, contract, step) (no hashing,
no sort); others are numbered by hashing (`pd.factorize`) and only the groups are sorted.
Either way the groups come numbered in key order, so `merge_levels` sums each group with
`np.bincount` in row order and sorts nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ibstream.analytics.grouping import group_rows


def level_groups(
    time: np.ndarray, contract: np.ndarray, price: np.ndarray, tick: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """Per row its group number, groups numbered in key order; each group's keys and a row
    of it (the first, or any where all rows share a grid).

    On one tick grid with few enough (bar, contract, step) combinations the key is a
    position in a table of them (no hashing, no sort); else hashing (`pd.factorize`)
    numbers the groups and only the groups are sorted. A few rows are simply sorted."""
    if len(price) < _FEW:
        g = group_rows(time, contract, price)
        return g.codes, g.keys, g.first
    dense = dense_groups(time, contract, price, tick)
    if dense is not None:
        return dense
    return hashed_groups(time, contract, price)


def hashed_groups(
    time: np.ndarray, contract: np.ndarray, price: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """`level_groups` by hashing each key and their combination."""
    parts = [pd.factorize(k) for k in (time, contract, price)]
    sizes = [max(len(u), 1) for _, u in parts]
    if float(np.prod(sizes, dtype=np.float64)) >= 2**62:  # the combined key would overflow
        g = group_rows(time, contract, price)
        return g.codes, g.keys, g.first
    key = parts[0][0].astype(np.int64)
    for (codes, _), size in zip(parts[1:], sizes[1:], strict=True):
        key = key * size + codes
    codes, unique = pd.factorize(key)
    rest = unique
    values = []
    for (_, uniques), size in zip(parts[::-1], sizes[::-1], strict=True):
        values.append(np.asarray(uniques)[rest % size])
        rest = rest // size
    values = values[::-1]
    order = np.lexsort(values[::-1])
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    seen = np.maximum.accumulate(codes) if len(codes) else codes
    first = np.flatnonzero(np.diff(seen, prepend=-1) > 0)  # first rows, in code order
    return rank[codes], tuple(v[order] for v in values), first[order]


def dense_groups(
    time: np.ndarray, contract: np.ndarray, price: np.ndarray, tick: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray] | None:
    n = len(price)
    if not n or not np.isfinite(tick[0]) or not (tick == tick[0]).all():
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        steps = np.round(price / tick[0])
    low, high = steps.min(), steps.max()
    if not np.isfinite(high - low) or high - low > 2 * n:
        return None
    (t_codes, t_size), (c_codes, c_size) = _ordered_codes(time), _ordered_codes(contract)
    p_size = int(high - low) + 1
    if t_size * c_size * p_size > 4 * n + 4096:  # a table no larger than the rows
        return None
    key = (t_codes * c_size + c_codes) * p_size + (steps - low).astype(np.int64)
    present = np.zeros(t_size * c_size * p_size, dtype=bool)
    present[key] = True
    codes = (np.cumsum(present) - 1)[key]
    some = np.empty(int(codes.max()) + 1, dtype=np.int64)
    some[codes] = np.arange(n)
    if not (price[some][codes] == price).all():  # prices off the grid: two share a step
        return None
    return codes, (time[some], contract[some], price[some]), some


def _ordered_codes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes that keep the values' order, and how many there are; rows already in order
    (time bars in arrival order) need no hashing, one value (one contract) nothing."""
    if values.min() == values.max():
        return np.zeros(len(values), dtype=np.int64), 1
    if (values[1:] >= values[:-1]).all():
        change = values[1:] != values[:-1]
        codes = np.zeros(len(values), dtype=np.int64)
        np.cumsum(change, out=codes[1:])
        return codes, int(codes[-1]) + 1
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), len(uniques)


_FEW = 256  # rows below which sorting them costs less than hashing
