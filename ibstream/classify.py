"""Trade classification by the quote rule, tick by tick, and the running delta study.

Rule: a trade at or above the prevailing ask is buying pressure, at or below the bid is
selling pressure, in between is neutral. Net delta = buy volume - sell volume;
buy % = buy volume / (buy volume + sell volume).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"
    NEUTRAL = "neutral"


def classify_trade(price: float, bid: float | None, ask: float | None) -> Side:
    """Quote rule against the last quote seen before the trade; no quote yet is neutral."""
    if ask is not None and price >= ask:
        return Side.BUY
    if bid is not None and price <= bid:
        return Side.SELL
    return Side.NEUTRAL


@dataclass
class DeltaSummary:
    """Running totals of the delta study."""

    total_trades: int = 0
    buy_volume: float = 0.0
    sell_volume: float = 0.0
    neutral_volume: float = 0.0

    def add(self, side: Side, size: float) -> None:
        self.total_trades += 1
        if side is Side.BUY:
            self.buy_volume += size
        elif side is Side.SELL:
            self.sell_volume += size
        else:
            self.neutral_volume += size

    @property
    def net_delta(self) -> float:
        return self.buy_volume - self.sell_volume

    @property
    def buy_pct(self) -> float:
        both = self.buy_volume + self.sell_volume
        return round(100.0 * self.buy_volume / both, 2) if both else 0.0

    def to_dict(self) -> dict:
        return {
            "total_trades": self.total_trades,
            "buy_volume": _num(self.buy_volume),
            "sell_volume": _num(self.sell_volume),
            "net_delta": _num(self.net_delta),
            "buy_pct": self.buy_pct,
        }


class QuoteRuleClassifier:
    """Feed it tick messages' `data` in arrival order; it classifies each trade."""

    def __init__(self) -> None:
        self.bid: float | None = None
        self.ask: float | None = None
        self.summary = DeltaSummary()

    def on_quote(self, bid: float | None, ask: float | None) -> None:
        self.bid, self.ask = bid, ask

    def on_trade(self, price: float, size: float) -> Side:
        side = classify_trade(price, self.bid, self.ask)
        self.summary.add(side, size)
        return side


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 8)
