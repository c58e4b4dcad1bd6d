"""Trade classification by the quote rule, tick by tick, and the running delta study.

Rule: a trade at or above the prevailing ask is buying pressure, at or below the bid is
selling pressure, in between is neutral. Net delta = buy volume - sell volume;
buy % = buy volume / (buy volume + sell volume).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd


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


def classify_frame(ticks: pd.DataFrame) -> pd.DataFrame:
    """Ticks in arrival order (`bid_ask` and `last` / `all_last` rows, as the server sends
    them) -> one row per trade with the prevailing `bid`, `ask` and its `side`.

    The vectorised twin of `QuoteRuleClassifier`: same rule, same answers.
    """
    if "tick_type" not in ticks.columns:
        raise ValueError("ticks frame has no 'tick_type' column; pass the `data` of tick messages")
    # a window with no trades (or no quotes) lacks their columns: treat them as empty
    ticks = ticks.reindex(
        columns=ticks.columns.union(["price", "size", "bid_price", "ask_price"], sort=False)
    )
    is_quote = ticks["tick_type"].eq("bid_ask")
    bid = ticks["bid_price"].where(is_quote).ffill()
    ask = ticks["ask_price"].where(is_quote).ffill()
    is_trade = ticks["tick_type"].isin(("last", "all_last"))
    trades = ticks.loc[is_trade].drop(
        columns=["bid_price", "ask_price", "bid_size", "ask_size"], errors="ignore"
    )
    trades = trades.assign(bid=bid[is_trade], ask=ask[is_trade])
    side = np.select(
        [trades["price"] >= trades["ask"], trades["price"] <= trades["bid"]],
        [Side.BUY.value, Side.SELL.value],
        Side.NEUTRAL.value,
    )
    return trades.assign(side=pd.Categorical(side, categories=[s.value for s in Side]))


def summarize(trades: pd.DataFrame) -> DeltaSummary:
    """The delta study of a classified trades frame (from `classify_frame`)."""
    volume = trades.groupby("side", observed=False)["size"].sum()
    return DeltaSummary(
        len(trades),
        float(volume.get("buy", 0.0)),
        float(volume.get("sell", 0.0)),
        float(volume.get("neutral", 0.0)),
    )


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
