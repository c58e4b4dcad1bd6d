"""The quote rule, tick by tick, scored on real recorded trades with known aggressor side."""

import pandas as pd
import pytest

from ibstream.classify import (
    DeltaSummary,
    QuoteRuleClassifier,
    Side,
    classify_frame,
    classify_trade,
    summarize,
)
from tests.data import shared_csv


def test_rule_at_ask_buy_at_bid_sell_between_neutral():
    assert classify_trade(100.25, 100.0, 100.25) is Side.BUY
    assert classify_trade(100.5, 100.0, 100.25) is Side.BUY
    assert classify_trade(100.0, 100.0, 100.25) is Side.SELL
    assert classify_trade(99.75, 100.0, 100.25) is Side.SELL
    assert classify_trade(100.125, 100.0, 100.25) is Side.NEUTRAL
    assert classify_trade(100.0, None, None) is Side.NEUTRAL


def test_summary_delta_and_buy_pct():
    s = DeltaSummary()
    for side, size in [(Side.BUY, 3), (Side.SELL, 1), (Side.NEUTRAL, 5), (Side.BUY, 1)]:
        s.add(side, size)
    assert s.to_dict() == {
        "total_trades": 4,
        "buy_volume": 4,
        "sell_volume": 1,
        "net_delta": 3,
        "buy_pct": 80.0,
    }
    assert DeltaSummary().buy_pct == 0.0


def _replay(quotes: pd.DataFrame, trades: pd.DataFrame, time_col: str) -> pd.Series:
    """Stream quotes and trades in time order through the classifier.

    A trade is judged by the quotes strictly before it, so on equal times the trade goes first.
    """
    q = quotes.assign(kind=1)[[time_col, "kind", "bid_price", "ask_price"]]
    t = trades.assign(kind=0).reset_index()[[time_col, "kind", "index", "price", "size"]]
    events = pd.concat([q, t]).sort_values([time_col, "kind"], kind="stable")
    clf, sides = QuoteRuleClassifier(), {}
    for row in events.itertuples(index=False):
        if row.kind == 1:
            clf.on_quote(row.bid_price, row.ask_price)
        else:
            sides[int(row.index)] = clf.on_trade(row.price, row.size).value
    return pd.Series(sides).sort_index()


def test_quote_rule_on_cme_es_matches_true_aggressor():
    trades = shared_csv("cme-esu4-2024-07-01", "trades.csv")
    quotes = shared_csv("cme-esu4-2024-07-01", "quotes.csv")
    sides = _replay(quotes, trades, "ts_recv_ns")
    first_quote = quotes["ts_recv_ns"].min()
    scored = trades.index[trades["ts_recv_ns"] > first_quote]
    correct = (sides[scored] == trades.loc[scored, "side"]).mean()
    assert len(scored) == 119
    assert correct >= 0.99, f"quote rule agreed on {correct:.1%} of ES trades"


def test_quote_rule_on_binance_btc_matches_true_aggressor():
    trades = shared_csv("binance-futures-btcusdt-2020-02-22", "trades.csv")
    quotes = shared_csv("binance-futures-btcusdt-2020-02-22", "quotes.csv")
    trades = trades.rename(columns={"amount": "size"})
    trades = trades[trades["timestamp"] <= quotes["timestamp"].max()]
    sides = _replay(quotes, trades, "timestamp")
    correct = (sides == trades["side"]).mean()
    assert len(trades) == 502
    assert correct >= 0.995, f"quote rule agreed on {correct:.1%} of BTC trades"


@pytest.mark.parametrize("dataset", ["cme-esu4-2024-07-01"])
def test_delta_totals_match_true_volume_within_one_percent(dataset):
    trades = shared_csv(dataset, "trades.csv")
    quotes = shared_csv(dataset, "quotes.csv")
    sides = _replay(quotes, trades, "ts_recv_ns")
    true_delta = trades["size"].where(trades["side"] == "buy", -trades["size"]).sum()
    clf_delta = (
        trades["size"].where(sides == "buy", 0).sum()
        - trades["size"].where(sides == "sell", 0).sum()
    )
    assert abs(clf_delta - true_delta) <= 0.01 * trades["size"].sum() + 2


def _as_tick_frame(quotes: pd.DataFrame, trades: pd.DataFrame, time_col: str) -> pd.DataFrame:
    """Recorded data shaped like the server's tick `data` rows, in arrival order."""
    q = quotes.assign(tick_type="bid_ask", order=1)[
        [time_col, "order", "tick_type", "bid_price", "ask_price"]
    ]
    t = trades.assign(tick_type="last", order=0).reset_index(names="trade")
    t = t[[time_col, "order", "tick_type", "price", "size", "trade"]]
    return pd.concat([q, t]).sort_values([time_col, "order"], kind="stable").reset_index(drop=True)


def test_vectorised_classification_equals_streaming_on_real_data():
    trades = shared_csv("cme-esu4-2024-07-01", "trades.csv")
    quotes = shared_csv("cme-esu4-2024-07-01", "quotes.csv")
    frame = classify_frame(_as_tick_frame(quotes, trades, "ts_recv_ns"))
    streaming = _replay(quotes, trades, "ts_recv_ns")
    assert len(frame) == len(trades) == 120
    assert frame.set_index("trade")["side"].astype(str).sort_index().tolist() == streaming.tolist()
    clf = QuoteRuleClassifier()
    for row in _as_tick_frame(quotes, trades, "ts_recv_ns").itertuples():
        if row.tick_type == "bid_ask":
            clf.on_quote(row.bid_price, row.ask_price)
        else:
            clf.on_trade(row.price, row.size)
    assert summarize(frame).to_dict() == clf.summary.to_dict()


def test_classify_frame_quotes_only_or_trades_only_windows():
    quotes_only = pd.DataFrame({"tick_type": ["bid_ask"], "bid_price": [1.0], "ask_price": [1.1]})
    assert (
        classify_frame(quotes_only).empty
        and summarize(classify_frame(quotes_only)).total_trades == 0
    )
    trades_only = pd.DataFrame({"tick_type": ["last"], "price": [1.0], "size": [2.0]})
    assert classify_frame(trades_only)["side"].tolist() == ["neutral"]  # no quote seen yet
    with pytest.raises(ValueError, match="tick_type"):
        classify_frame(pd.DataFrame({"price": [1.0]}))
