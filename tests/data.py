"""Recorded market data (shipped in `ibstream/datasets/recorded`, true aggressor per trade)
through the loader, and hand-built tick frames in the tick-frame schema."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ibstream.datasets import Recorded, load_recorded

CME = "cme-esu4-2024-07-01"
BINANCE = "binance-futures-btcusdt-2020-02-22"
DATASETS = (CME, BINANCE)
TICK_TYPES = ["last", "all_last", "bid_ask", "mid_point"]
_FLOATS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size", "mid_price")


@functools.cache
def recorded(name: str, clock: str = "receive") -> Recorded:
    """A recorded data set, loaded once per test process."""
    return load_recorded(name, clock)


def tick_frame(rows: Iterable[Mapping]) -> pd.DataFrame:
    """Tick `data` rows (wire fields, nulls omitted) -> a tick frame built by hand."""
    rows = list(rows)
    data: dict[str, object] = {
        "contract_id": np.array([r.get("contract_id", 1) for r in rows], dtype=np.int64),
        "tick_type": pd.Categorical([r["tick_type"] for r in rows], categories=TICK_TYPES),
        "sequence": np.array([r.get("sequence", i) for i, r in enumerate(rows)], dtype=np.int64),
    }
    for name in _FLOATS:
        data[name] = np.array([r.get(name, np.nan) for r in rows], dtype=np.float64)
    data["exchange"] = pd.array([r.get("exchange") for r in rows], dtype=pd.StringDtype())
    stamps = [r.get("recv_ns", 1_700_000_000_000_000_000 + i) for i, r in enumerate(rows)]
    index = pd.DatetimeIndex(
        pd.to_datetime(np.array(stamps, dtype=np.int64), utc=True), name="time"
    )
    return pd.DataFrame(data, index=index)
