"""Incremental trade classification: feed ticks as they arrive, get each trade classified once.

`TradeClassifier` runs the batch `classify` on every batch, starting from the per-contract
state the previous batches left (last quote, last trade price, last price-change direction),
so any split of a tick sequence into batches gives exactly the rows `classify` gives on the
whole sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from ibstream.analytics.classify import classify_with_state, resolve_method
from ibstream.analytics.prevailing import empty_state

_FLOAT_FIELDS = ("price", "size", "bid_price", "bid_size", "ask_price", "ask_size")


class TradeClassifier:
    """Classifies the trades of tick batches (frames or wire rows) in arrival order."""

    def __init__(self, method: str | None = None) -> None:
        self.method = resolve_method(method)
        self._state: pd.DataFrame | None = None
        self.trades_seen = 0

    def update(
        self,
        ticks: pd.DataFrame | Mapping | Iterable[Mapping],
        accept: Callable[[pd.DataFrame], None] | None = None,
    ) -> pd.DataFrame:
        """Classify the trades among `ticks` (a tick frame, one tick `data` dict as on the
        wire, or a list of them); returns just these trades as a trades frame. `accept` is
        called with them before the classifier moves on: if it raises, the batch is undone."""
        frame = ticks if isinstance(ticks, pd.DataFrame) else rows_frame(ticks)
        trades, state = classify_with_state(frame, self.method, self._state)
        if accept is not None:
            accept(trades)
        self._state = state
        self.trades_seen += len(trades)
        return trades

    @property
    def state(self) -> pd.DataFrame:
        """Per contract: last bid/ask, last trade price, last nonzero price change (+1/-1)."""
        return (empty_state() if self._state is None else self._state).copy()

    def reset(self) -> None:
        """Forget every contract's quote and price history."""
        self._state, self.trades_seen = None, 0


def rows_frame(rows: Mapping | Iterable[Mapping]) -> pd.DataFrame:
    """Tick `data` rows (as on the wire, nulls omitted) -> the columns classification reads."""
    rows = [rows] if isinstance(rows, Mapping) else list(rows)
    stamps = np.array([r.get("recv_ns", 0) for r in rows], dtype=np.int64)
    columns: dict[str, object] = {
        "contract_id": np.array([r.get("contract_id", 0) for r in rows], dtype=np.int64),
        "tick_type": [r.get("tick_type") for r in rows],  # parsed (or ignored) by classify
        "sequence": np.array([r.get("sequence", 0) for r in rows], dtype=np.int64),
    }
    for name in _FLOAT_FIELDS:
        columns[name] = np.array([r.get(name, np.nan) for r in rows], dtype=np.float64)
    columns["exchange"] = pd.array([r.get("exchange") for r in rows], dtype=pd.StringDtype())
    index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="ns", utc=True), name="time")
    return pd.DataFrame(columns, index=index)
