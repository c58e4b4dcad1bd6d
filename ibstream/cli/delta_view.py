"""The delta study's state (`DeltaStudy`, over the incremental `DeltaEngine`) and how
`ibstream delta` renders it: trade table, rolling-summary line, JSON update, final summary.

No I/O here: the command (`ibstream.cli.delta`) writes what these return.
"""

from __future__ import annotations

import math

import orjson
import pandas as pd

from ibstream.analytics import DeltaEngine
from ibstream.analytics.delta import signed_volume
from ibstream.client.events import ClientState, ErrorEvent, Gap, Info, StateChange
from ibstream.model import iso_timestamp, price_decimals

_SIDE = {"buy": "BUY", "sell": "SELL", "neutral": "----"}
_HEADER = ("time", "price", "size", "bid", "ask", "side", "delta", "cumulative")


class DeltaStudy:
    """Classifies tick batches and keeps one contract's delta: cumulative since the start,
    rolling over `window_seconds` of trade time, and the last trade's signed size."""

    def __init__(self, method: str | None = None, window_seconds: float = 60.0):
        window = pd.Timedelta(seconds=window_seconds)
        self.engine = DeltaEngine(method, window=window, max_bars=1, max_trades=1)
        self.method = self.engine.classifier.method
        self.window_seconds = window_seconds
        self.contract: dict = {}
        self.trade_count = 0
        self.cumulative = 0.0
        self.current = 0.0
        self.last_time: pd.Timestamp | None = None

    @property
    def contract_id(self) -> int | None:
        return self.contract.get("contract_id")

    def describe(self, transport: str) -> str:
        name = self.contract.get("local_symbol") or self.contract.get("symbol") or "?"
        return (
            f"delta study of {name} ({self.contract_id}) over {transport}: "
            f"method {self.method}, window {self.window_seconds:g} s"
        )

    def feed(self, ticks: list[dict]) -> pd.DataFrame:
        """Classify a batch (tick `data` dicts as on the wire); its trades, with `delta`
        (signed size) and `cumulative` columns."""
        trades = self.engine.feed(ticks) if ticks else self.engine.trades.iloc[:0]
        signed = signed_volume(trades)
        trades = trades.assign(delta=signed, cumulative=self.cumulative + signed.cumsum())
        if len(trades):
            self.trade_count += len(trades)
            self.cumulative = float(self.engine.cumulative_delta.iloc[-1])
            self.current = float(signed.iloc[-1])
            self.last_time = trades.index[-1]
        return trades

    def period_stats(self) -> dict:
        """The rolling window at the last trade (zeros before the first trade)."""
        rolling = self.engine.rolling()
        if rolling.empty:
            return {"total_buy_volume": 0, "total_sell_volume": 0, "net_delta": 0,
                    "buy_sell_ratio": None, "buy_pct": None, "trade_count": 0}  # fmt: skip
        row = rolling.iloc[-1]
        return {
            "total_buy_volume": _num(row["buy_volume"]),
            "total_sell_volume": _num(row["sell_volume"]),
            "net_delta": _num(row["net_delta"]),
            "buy_sell_ratio": _finite(row["buy_sell_ratio"], 4),
            "buy_pct": _finite(row["buy_pct"], 2),
            "trade_count": int(row["trade_count"]),
        }

    def update(self) -> dict:
        """The JSON update object (see `ibstream.cli.delta`)."""
        stamp = None if self.last_time is None else iso_timestamp(self.last_time.value)
        return {
            "study": "delta",
            "contract_id": self.contract_id,
            "timestamp": stamp,
            "window_seconds": _num(self.window_seconds),
            "data": {
                "current_delta": _num(self.current),
                "cumulative_delta": _num(self.cumulative),
                "period_stats": self.period_stats(),
            },
        }

    def update_json(self) -> str:
        return orjson.dumps(self.update()).decode()


def trade_lines(trades: pd.DataFrame | None, study: DeltaStudy) -> str:
    """The table's rows for a batch of `DeltaStudy.feed` trades; its header when None."""
    places = price_decimals(study.contract.get("min_tick"))
    width = 10 + places
    if trades is None:
        t, p, s, b, a, side, d, c = _HEADER
        return f"{t:<12}  {p:>{width}} {s:>7} {b:>{width}} {a:>{width}}  {side:<4} {d:>8} {c:>10}"

    def px(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.{places}f}"

    rows = zip(
        trades.index.strftime("%H:%M:%S.%f").str[:12],
        trades["price"].tolist(),
        trades["size"].tolist(),
        trades["bid"].tolist(),
        trades["ask"].tolist(),
        trades["side"].astype(str).tolist(),
        trades["delta"].tolist(),
        trades["cumulative"].tolist(),
        strict=True,
    )
    return "\n".join(
        f"{t:<12}  {px(p):>{width}} {s:>7g} {px(b):>{width}} {px(a):>{width}}  "
        f"{_SIDE[side]:<4} {d:>+8g} {c:>+10g}"
        for t, p, s, b, a, side, d, c in rows
    )


def summary_line(study: DeltaStudy) -> str:
    """One terminal line: the rolling window's pressure and the cumulative delta."""
    s = study.period_stats()
    ratio = "-" if s["buy_sell_ratio"] is None else f"{s['buy_sell_ratio']:.2f}"
    pct = "-" if s["buy_pct"] is None else f"{s['buy_pct']:.1f}%"
    return (
        f"-- last {study.window_seconds:g}s: buys {s['total_buy_volume']:g}  "
        f"sells {s['total_sell_volume']:g}  net {s['net_delta']:+g}  buy/sell {ratio}  "
        f"buy {pct}  ({s['trade_count']} trades)  cumulative {study.cumulative:+g}"
    )


def final_summary(study: DeltaStudy) -> str:
    total = study.engine.summary().iloc[-1]
    ratio = _finite(total["buy_sell_ratio"], 4)
    pct = _finite(total["buy_pct"], 2)
    return (
        f"--- delta summary ({study.method}) ---\n"
        f"trades         : {study.trade_count}\n"
        f"buy volume     : {total['buy_volume']:g}\n"
        f"sell volume    : {total['sell_volume']:g}\n"
        f"neutral volume : {total['neutral_volume']:g}\n"
        f"net delta      : {total['net_delta']:+g}\n"
        f"buy/sell ratio : {'-' if ratio is None else ratio}\n"
        f"buy %          : {'-' if pct is None else f'{pct:.2f}'}"
    )


def event_line(event: object) -> str | None:
    """A client event worth a line (reconnects, gaps, server infos, errors), else None."""
    if isinstance(event, StateChange):
        if event.state == ClientState.RECONNECTING:
            return f"[reconnecting] {event.reason}"
        if event.state == ClientState.CONNECTED and event.previous == ClientState.RECONNECTING:
            return f"[reconnected] {event.reason}"
        return None
    if isinstance(event, Gap):
        return f"[gap] {event.tick_type or ''} {event.reason}: {event.message}"
    if isinstance(event, Info):
        return f"[{event.status}] {event.message}"
    if isinstance(event, ErrorEvent):
        return f"[error] {event.error.code}: {event.error.message}"
    return None


def _num(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 8)


def _finite(value: float, places: int) -> float | None:
    return round(float(value), places) if math.isfinite(value) else None
