"""Which frame a function was given: ticks, classified trades or bars, told apart by their
columns, so that a frame of the wrong kind is refused with the call that makes the right one.

A tick frame (`Client.collect`, `load_recorded(...).ticks`) has `tick_type` and quote
columns; `classify` turns it into trades (a `side` per trade); `bars(trades)` turns those
into bars (`open` ... `cumulative_delta`). The checks run before the column checks of
`kernels.require_columns`, whose message would only name a missing column.
"""

from __future__ import annotations

import pandas as pd

_CLASSIFY = "call ibstream.analytics.classify(ticks) first and pass its trades"
_TICKS = "pass the tick frame itself (Client.collect, load_recorded(...).ticks)"


def kind_of(frame: object) -> str | None:
    """'ticks', 'trades', 'bars' or None (not a DataFrame, or none of those)."""
    if not isinstance(frame, pd.DataFrame):
        return None
    columns = set(frame.columns)
    if "side" in columns:  # classified, whatever else it carries
        return "trades"
    if "tick_type" in columns:
        return "ticks"
    if {"open", "high", "low", "close"} <= columns:
        return "bars"
    return None


def expect_trades(frame: object, call: str) -> None:
    """Refuse ticks or bars where classified trades are expected."""
    kind = kind_of(frame)
    if kind == "ticks":
        raise ValueError(f"{call} takes classified trades, got a tick frame: {_CLASSIFY}")
    if kind == "bars":
        raise ValueError(f"{call} takes classified trades, got bars: pass the trades themselves")


def expect_quotes(frame: object, call: str) -> None:
    """Refuse trades or bars where a frame of `bid_ask` quotes is expected."""
    kind = kind_of(frame)
    if kind in ("trades", "bars"):
        raise ValueError(
            f"{call} takes quotes (the bid_ask rows of a tick frame), got {kind}: {_TICKS}"
        )


def expect_bars(frame: object, call: str) -> None:
    """Refuse ticks or trades where bars are expected."""
    kind = kind_of(frame)
    if kind == "ticks":
        raise ValueError(
            f"{call} takes bars, got a tick frame: call ibstream.analytics.bars("
            "classify(ticks), interval) first"
        )
    if kind == "trades":
        raise ValueError(
            f"{call} takes bars, got trades: call ibstream.analytics.bars(trades, interval) first"
        )
