"""Inputs and outputs of the delta analytics: checked trade frames as numpy arrays,
durations, UTC nanosecond times and typed result frames (grouping and sums: `grouping`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ibstream.analytics.classify import SIDES
from ibstream.analytics.frame_kinds import kind_of
from ibstream.timeindex import utc_index, utc_nanos

TRADE_REQUIRED = ("contract_id", "price", "size", "side")


# a trades frame without rows: what a live form starts its state from
NO_TRADES = pd.DataFrame(
    {"contract_id": np.zeros(0, np.int64), "price": [], "size": [], "side": []},
    index=pd.DatetimeIndex([], tz="UTC", name="time"),
)


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


def to_time_index(nanos: np.ndarray) -> pd.DatetimeIndex:
    return utc_index(np.array(nanos, dtype=np.int64))  # a copy: callers' arrays stay theirs


def typed_frame(columns: dict, dtypes: dict[str, str], index: pd.Index) -> pd.DataFrame:
    """A frame of the `dtypes` columns, in that order, taken from `columns` (numpy arrays)."""
    data = {k: np.asarray(columns[k], dtype=t) for k, t in dtypes.items()}
    return pd.DataFrame(data, index=index, copy=False)


@dataclass(frozen=True)
class TradeArrays:
    """The columns of a trades frame that delta needs, as numpy arrays."""

    time: np.ndarray  # int64 ns UTC
    contract: np.ndarray  # int64
    price: np.ndarray  # float64, NaN: no price
    size: np.ndarray  # float64, 0 where the trade had no size
    side: np.ndarray  # int8: 0 buy, 1 sell, 2 neutral

    def flows(self) -> np.ndarray:
        """(n, 4) per trade: buy size, sell size, neutral size, 1 (the trade count)."""
        out = np.zeros((len(self.size), 4))
        out[np.arange(len(self.size)), self.side] = self.size
        out[:, 3] = 1.0
        return out

    def signed(self) -> np.ndarray:
        """Signed volume per trade: buy +size, sell -size, neutral 0."""
        sign = (self.side == 0).view(np.int8) - (self.side == 1).view(np.int8)
        return np.multiply(self.size, sign, dtype=np.float64)


def trade_arrays(trades: object) -> TradeArrays:
    """Check a trades frame (see SCHEMA: classify's output) and take its arrays. A trade
    without a size (NaN) has volume 0; one without a price keeps price NaN. A tick frame
    (tick_type, no side) is refused with the call that makes trades of it."""
    if kind_of(trades) == "ticks":
        raise ValueError(
            "expected classified trades (a frame with a side column), got a tick frame: "
            "call ibstream.analytics.classify(ticks) first"
        )
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
        if not np.isfinite(values).all() and np.isinf(values).any():  # one pass when all are
            raise ValueError(f"trades frame has {int(np.isinf(values).sum())} infinite {name}s")
    missing = np.isnan(size)
    if missing.any():  # no size: no volume (NaN price: no level)
        size = np.where(missing, 0.0, size)
    contract = trades["contract_id"].to_numpy(dtype=np.int64)
    return TradeArrays(utc_nanos(trades.index), contract, price, size, codes.astype(np.int8))
