"""Point of control and value area of many periods at once, vectorised.

The value area is the standard (CBOT Market Profile) expansion: start at the point of
control; look at the two levels above it and the two below it; add the pair with the larger
volume (a tie adds the pair above); repeat until the volume taken reaches `fraction` of the
period's volume. When one side has only one level left, that level is its pair; when a side
has none, the other side goes on alone.

Run step by step that is a loop per period. Here it is one sort: a greedy merge of two
sequences that always takes the larger head takes every element in the order of its
prefix minimum (it cannot go before the smaller ones ahead of it), so sorting all pairs by
(period, prefix minimum descending, above before below, distance from the POC) gives the
order of the loop, and a running sum in that order where it stops.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ibstream.analytics.grouping import Groups, previous_in_group, running_sums


class Auction(NamedTuple):
    """Per period: point of control and value area; per level: inside the value area."""

    poc: np.ndarray  # price of the point of control (NaN: no volume)
    poc_volume: np.ndarray
    low: np.ndarray  # value area low and high (NaN: no volume)
    high: np.ndarray
    volume: np.ndarray  # volume inside the value area (0 when the period has none)
    total: np.ndarray  # the period's volume, summed level by level upwards
    inside: np.ndarray  # per level


def auction(starts: np.ndarray, price: np.ndarray, volume: np.ndarray, fraction: float) -> Auction:
    """Levels sorted by period, then price ascending; `starts`: where each period begins.

    The point of control is the level of most volume; among equal ones, the level closest
    to the middle of the period's range (lowest to highest level), then the lower one. A
    period without volume has NaN point of control and value area.
    """
    n, size = len(price), len(starts)
    if not size:
        empty = np.zeros(0)
        return Auction(empty, empty, empty, empty, empty, empty, np.zeros(n, dtype=bool))
    lengths = np.diff(np.append(starts, n))
    period = np.repeat(np.arange(size), lengths)
    groups = Groups((np.arange(size),), np.arange(n), starts)
    total = running_sums(volume[:, None], groups)[starts + lengths - 1, 0]
    poc = _points_of_control(starts, lengths, period, price, volume)
    offset = np.arange(n) - poc[period]  # levels from the POC: + above, - below
    pair_first = np.where(offset > 0, (offset - 1) % 2 == 0, (-offset - 1) % 2 == 0)
    pair_first &= offset != 0
    first = np.flatnonzero(pair_first)
    up = offset[first] > 0
    second = first + np.where(up, 1, -1)
    has_second = (second >= starts[period[first]]) & (second < (starts + lengths)[period[first]])
    second = np.where(has_second, second, first)
    pair_volume = volume[first] + np.where(has_second, volume[second], 0.0)
    pair_period, side = period[first], np.where(up, 0, 1)
    distance = np.abs(offset[first])
    # each side's pairs outwards from the POC, then the prefix minimum of their volumes
    out = np.lexsort((distance, side, pair_period))
    rank = np.unique(pair_volume, return_inverse=True)[1].astype(np.int64)
    segment = (pair_period * 2 + side)[out]
    shift = segment * (int(rank.max(initial=0)) + 1)
    key = np.empty(len(first), dtype=np.int64)
    key[out] = np.minimum.accumulate(rank[out] - shift) + shift
    order = np.lexsort((distance, side, -key, pair_period))
    # the volume taken: the POC's, then the pairs in the loop's order
    seq_period = np.concatenate([np.arange(size), pair_period[order]])
    seq_volume = np.concatenate([volume[poc], pair_volume[order]])
    seq = _sorted_groups(seq_period, size)
    taken = running_sums(seq_volume[:, None], seq)[:, 0]
    before = previous_in_group(taken, seq, -np.inf)
    target = fraction * total
    took = before < target[seq_period]
    took_pair = np.zeros(len(first), dtype=bool)
    took_pair[order] = took[size:]
    inside = np.zeros(n, dtype=bool)
    inside[poc] = True
    inside[first[took_pair]] = True
    inside[second[took_pair]] = True
    has_volume = total > 0
    inside &= has_volume[period]
    va_volume = np.maximum.reduceat(np.where(took, taken, -np.inf)[seq.order], seq.starts)
    high = np.maximum.reduceat(np.where(inside, price, -np.inf), starts)
    low = np.minimum.reduceat(np.where(inside, price, np.inf), starts)
    nan = np.where(has_volume, 1.0, np.nan)
    return Auction(
        price[poc] * nan,
        np.where(has_volume, volume[poc], np.nan),
        low * nan,
        high * nan,
        np.where(has_volume, va_volume, 0.0),
        total,
        inside,
    )


def _points_of_control(
    starts: np.ndarray,
    lengths: np.ndarray,
    period: np.ndarray,
    price: np.ndarray,
    volume: np.ndarray,
) -> np.ndarray:
    most = np.maximum.reduceat(volume, starts)
    middle = (price[starts] + price[starts + lengths - 1]) / 2
    distance = np.abs(price - middle[period])
    order = np.lexsort((price, distance, volume != most[period], period))
    return order[starts]


def _sorted_groups(key: np.ndarray, size: int) -> Groups:
    """Rows grouped by the period number `key` (0..size-1), earlier rows first."""
    order = np.argsort(key, kind="stable")
    counts = np.bincount(key, minlength=size)
    return Groups((np.arange(size),), order, np.cumsum(counts) - counts)
