"""Shared numpy kernels of the delta analytics: input checks, grouping, exact running sums.

`running_sums` is the core: a left-to-right float sum within each group, vectorised. Because
it is strictly sequential, a total carried over from an earlier batch (put in front of the
group as one more row) continues to the same bits as a single pass over all rows; that is
how the incremental engine equals the batch functions exactly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.analytics.classify import SIDES

TRADE_REQUIRED = ("contract_id", "price", "size", "side")


def to_nanos(value: object, name: str) -> int:
    """A positive duration ('60s', '1min', Timedelta, timedelta) in nanoseconds."""
    if not isinstance(value, str | pd.Timedelta | dt.timedelta | np.timedelta64):
        raise ValueError(f"{name} must be a duration such as '60s' or '1min', got {value!r}")
    try:
        nanos = pd.Timedelta(value).value
    except ValueError as exc:
        raise ValueError(
            f"{name} {value!r} is not a duration such as '60s' or '1min': {exc}"
        ) from None
    if nanos <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return int(nanos)


def require_columns(frame: object, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """`frame` as a DataFrame with a DatetimeIndex and the `required` columns, else ValueError."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"expected a {what} DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks column(s): {', '.join(missing)}")
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ValueError(f"{what} frame needs a DatetimeIndex of times, got {type(frame.index)}")
    return frame


def utc_nanos(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch (UTC; a naive index is read as UTC)."""
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return index.as_unit("ns").asi8


def to_time_index(nanos: np.ndarray) -> pd.DatetimeIndex:
    values = np.asarray(nanos, dtype=np.int64).view("datetime64[ns]")
    return pd.DatetimeIndex(values, name="time").tz_localize("UTC")


def typed_frame(columns: dict, dtypes: dict[str, str], index: pd.Index) -> pd.DataFrame:
    """A frame of the `dtypes` columns, in that order, taken from `columns` (numpy arrays)."""
    data = {k: np.asarray(columns[k], dtype=t) for k, t in dtypes.items()}
    return pd.DataFrame(data, index=index, copy=False)


@dataclass(frozen=True)
class TradeArrays:
    """The columns of a trades frame that delta needs, as numpy arrays."""

    time: np.ndarray  # int64 ns UTC
    contract: np.ndarray  # int64
    price: np.ndarray  # float64
    size: np.ndarray  # float64
    side: np.ndarray  # int8: 0 buy, 1 sell, 2 neutral

    def flows(self) -> np.ndarray:
        """(n, 4) per trade: buy size, sell size, neutral size, 1 (the trade count)."""
        out = np.zeros((len(self.size), 4))
        out[np.arange(len(self.size)), self.side] = self.size
        out[:, 3] = 1.0
        return out


def trade_arrays(trades: object) -> TradeArrays:
    """Check a trades frame (see SCHEMA: classify's output) and take its arrays."""
    trades = require_columns(trades, TRADE_REQUIRED, "trades")
    side = trades["side"]
    if isinstance(side.dtype, pd.CategoricalDtype) and tuple(side.cat.categories) == SIDES:
        codes = side.cat.codes.to_numpy()
    else:
        codes = pd.Index(SIDES).get_indexer(side.to_numpy(dtype=object))
    bad = codes < 0
    if bad.any():
        found = sorted({str(v) for v in trades["side"].to_numpy()[bad]})
        raise ValueError(f"side must be one of {', '.join(SIDES)}; found {', '.join(found)}")
    price = trades["price"].to_numpy(dtype=np.float64, na_value=np.nan)
    size = trades["size"].to_numpy(dtype=np.float64, na_value=np.nan)
    for name, values in (("price", price), ("size", size)):
        if not np.isfinite(values).all():
            raise ValueError(f"trades frame has {int((~np.isfinite(values)).sum())} bad {name}s")
    contract = trades["contract_id"].to_numpy(dtype=np.int64)
    return TradeArrays(utc_nanos(trades.index), contract, price, size, codes.astype(np.int8))


@dataclass(frozen=True)
class Groups:
    """Rows grouped by keys; groups numbered in ascending key order, rows kept in order."""

    keys: tuple[np.ndarray, ...]  # the key values of each group
    order: np.ndarray  # row numbers sorted by group, arrival order within a group
    starts: np.ndarray  # where each group begins in `order`

    @property
    def size(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(np.append(self.starts, len(self.order)))

    @property
    def first(self) -> np.ndarray:
        return self.order[self.starts]

    @property
    def last(self) -> np.ndarray:
        return self.order[np.append(self.starts, len(self.order))[1:] - 1]

    @property
    def codes(self) -> np.ndarray:
        out = np.empty(len(self.order), dtype=np.int64)
        out[self.order] = np.repeat(np.arange(self.size), self.lengths)
        return out

    def members(self) -> list[np.ndarray]:
        """The row numbers of each group (a Python loop over these is one per group)."""
        return np.split(self.order, self.starts[1:]) if self.size else []

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        if not self.size:
            return values[:0]
        return ufunc.reduceat(values[self.order], self.starts)


def group_rows(*keys: np.ndarray) -> Groups:
    """Group rows by the key arrays (first key sorts first)."""
    order = np.lexsort(keys[::-1]) if len(keys[0]) else np.zeros(0, dtype=np.int64)
    ordered = [k[order] for k in keys]
    change = np.zeros(len(order), dtype=bool)
    change[:1] = True
    for k in ordered:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    return Groups(tuple(k[starts] for k in ordered), order, starts)


def positions(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each query value in the sorted `keys`, -1 where absent."""
    pos = np.searchsorted(keys, query)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == query[found]
    return np.where(found, pos, -1)


def running_sums(values: np.ndarray, groups: Groups) -> np.ndarray:
    """Per row, the left-to-right sum of `values` (n, k) over the rows of its group up to it.

    Every sum is `np.cumsum`, which adds strictly in order. A long group is one slice of the
    group-sorted rows (one call per group, at least `_LONG` rows each); short groups are
    padded into blocks of equal power-of-two width (at most twice their rows) and summed
    along the block in one call per width, so no Python loop runs per row.
    """
    n, k = len(groups.order), values.shape[1]
    ordered = values[groups.order]
    out = np.empty_like(ordered)
    lengths = groups.lengths
    long = lengths >= _LONG
    for start, length in zip(groups.starts[long], lengths[long], strict=True):
        out[start : start + length] = np.cumsum(ordered[start : start + length], axis=0)
    if not long.all():
        group_of = np.repeat(np.arange(groups.size), lengths)
        pos = np.arange(n) - np.repeat(groups.starts, lengths)
        width = np.where(long, -1, np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64))
        for exp in np.unique(width[~long]):
            members = np.flatnonzero(width == exp)
            rows = np.flatnonzero(width[group_of] == exp)
            cell = (np.searchsorted(members, group_of[rows]) << exp) + pos[rows]
            block = np.zeros((len(members), 1 << int(exp), k))
            block.reshape(-1, k)[cell] = ordered[rows]
            out[rows] = np.cumsum(block, axis=1).reshape(-1, k)[cell]
    result = np.empty_like(out)
    result[groups.order] = out
    return result


_LONG = 64  # rows from which a group is summed on its own


def previous_in_group(running: np.ndarray, groups: Groups) -> np.ndarray:
    """Per row, the running value of the row before it in its group (0 for a group's first)."""
    ordered = running[groups.order]
    shifted = np.zeros_like(ordered)
    shifted[1:] = ordered[:-1]
    shifted[groups.starts] = 0.0
    out = np.empty_like(shifted)
    out[groups.order] = shifted
    return out
