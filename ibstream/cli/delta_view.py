"""The delta study's state (`DeltaStudy`, over the incremental `DeltaEngine`) and how
`ibstream delta` renders it: trade table, rolling-summary line, JSON update, final summary.

No I/O here: the command (`ibstream.cli.delta`) writes what these return.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import orjson
import pandas as pd

from ibstream.analytics import SIDES, DeltaEngine, DeltaSummary
from ibstream.analytics.live import Trade
from ibstream.analytics.running import Now
from ibstream.cli.lines import json_line, trade_fields
from ibstream.client.events import ClientState, ErrorEvent, Gap, Info, StateChange
from ibstream.model import iso_timestamp, price_decimals

_SIDE = {"buy": "BUY", "sell": "SELL", "neutral": "----"}
_HEADER = ("time", "price", "size", "bid", "ask", "side", "delta", "cumulative")
_SIGN = (1, -1, 0)  # per side code: buy, sell, neutral


class StudyTrade(NamedTuple):
    """A classified trade of the study, with its signed size and the cumulative delta."""

    trade: Trade
    delta: float
    cumulative: float

    @property
    def side(self) -> str:
        return SIDES[self.trade.side]


class DeltaStudy:
    """Classifies tick batches and keeps one contract's delta: cumulative since the start,
    rolling over `window_seconds` of trade time, and the last trade's signed size. Fed on
    the engine's per-tick path: a few microseconds a tick, whatever the batches."""

    def __init__(self, method: str | None = None, window_seconds: float = 60.0):
        window = pd.Timedelta(seconds=window_seconds)
        self.engine = DeltaEngine(method, window=window, max_bars=1, max_trades=1)
        self.method = self.engine.classifier.method
        self.window_seconds = window_seconds
        self.contract: dict = {}
        self.trade_count = 0
        self.cumulative = 0.0
        self.current = 0.0
        self.last: Now | None = None
        self.held = 0  # ticks that arrived after later ones, classified at the later time
        self._last_ns = 0

    @property
    def contract_id(self) -> int | None:
        return self.contract.get("contract_id")

    def describe(self, transport: str) -> str:
        name = self.contract.get("local_symbol") or self.contract.get("symbol") or "?"
        return (
            f"delta study of {name} ({self.contract_id}) over {transport}: "
            f"method {self.method}, window {self.window_seconds:g} s"
        )

    def feed(self, ticks: list[dict]) -> list[StudyTrade]:
        """Classify a batch (tick `data` dicts as on the wire); its trades, each with its
        signed size and the cumulative delta after it."""
        out = []
        for trade in self.engine.feed_rows(self._in_order(ticks)) if ticks else ():
            size = 0.0 if trade.size != trade.size else trade.size
            signed = size * _SIGN[trade.side]
            self.cumulative = signed if not self.trade_count else self.cumulative + signed
            self.trade_count += 1
            out.append(StudyTrade(trade, signed, self.cumulative))
        if out:
            self.current = out[-1].delta
            self.last = self.engine.now(out[-1].trade.contract_id)
        return out

    def _in_order(self, ticks: list[dict]) -> list[dict]:
        """The batch in the server's receive order. After a reconnect, a stream's missed
        ticks are replayed behind newer ticks of the contract's other stream; one that
        comes after ticks already fed is held at their time (as the dashboard does), since
        the engine takes receive times in order only."""
        ticks = sorted(ticks, key=_stamp)
        last = self._last_ns
        for i, tick in enumerate(ticks):
            stamp = _stamp(tick)
            if stamp < last:
                ticks[i] = {**tick, "recv_ns": last}
                self.held += 1
            else:
                last = stamp
        self._last_ns = last
        return ticks

    def period_stats(self) -> dict:
        """The rolling window at the last trade (zeros before the first trade)."""
        if self.last is None:
            return {"total_buy_volume": 0, "total_sell_volume": 0, "net_delta": 0,
                    "buy_sell_ratio": None, "buy_pct": None, "trade_count": 0}  # fmt: skip
        buy, sell, _, count = self.last.window
        return {
            "total_buy_volume": _num(buy),
            "total_sell_volume": _num(sell),
            "net_delta": _num(buy - sell),
            "buy_sell_ratio": _finite(buy / sell if sell else math.inf, 4),
            "buy_pct": _finite(100.0 * buy / (buy + sell) if buy + sell else math.nan, 2),
            "trade_count": int(count),
        }

    def update(self) -> dict:
        """The JSON update object (see `ibstream.cli.delta`)."""
        stamp = None if self.last is None else iso_timestamp(self.last.time)
        return {
            "type": "update",
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

    def trade_json(self, trades: list[StudyTrade]) -> list[str]:
        """The `trade` lines of a batch, as `ibstream demo --json` writes them."""
        return [
            json_line(
                "trade",
                **trade_fields(
                    t.trade.time,
                    t.side,
                    t.trade.size,
                    t.trade.price,
                    t.trade.bid,
                    t.trade.ask,
                    t.cumulative,
                ),
            )  # fmt: skip
            for t in trades
        ]

    def summary(self) -> DeltaSummary:
        """The totals of every trade fed."""
        return DeltaSummary.from_summary(self.engine.summary(), self.contract_id)

    def summary_json(self) -> str:
        """The last JSON line: the `summary` object `ibstream demo --json` ends with."""
        return json_line("summary", **self.summary().to_dict())


def trade_lines(trades: list[StudyTrade] | None, study: DeltaStudy) -> str:
    """The table's rows for a batch of `DeltaStudy.feed` trades; its header when None."""
    places = price_decimals(study.contract.get("min_tick"))
    width = 10 + places
    if trades is None:
        t, p, s, b, a, side, d, c = _HEADER
        return f"{t:<12}  {p:>{width}} {s:>7} {b:>{width}} {a:>{width}}  {side:<4} {d:>8} {c:>10}"

    def px(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.{places}f}"

    return "\n".join(
        f"{iso_timestamp(t.trade.time)[11:23]:<12}  {px(t.trade.price):>{width}} "
        f"{t.trade.size:>7g} {px(t.trade.bid):>{width}} {px(t.trade.ask):>{width}}  "
        f"{_SIDE[t.side]:<4} {t.delta:>+8g} {t.cumulative:>+10g}"
        for t in trades
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


def _stamp(tick: dict) -> int:
    return tick.get("recv_ns") or 0


def _num(value: float) -> float | int:
    value = float(value)
    return int(value) if value.is_integer() else round(value, 8)


def _finite(value: float, places: int) -> float | None:
    return round(float(value), places) if math.isfinite(value) else None
