"""Delta analytics on small hand-computed trades frames, and order-flow imbalance on quotes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibstream.analytics.delta import (
    DeltaSummary,
    cumulative_delta,
    rolling,
    signed_volume,
    summary,
)
from ibstream.analytics.grouping import group_rows, previous_in_group, running_sums
from ibstream.analytics.ofi import order_flow_imbalance

T0 = pd.Timestamp("2024-07-01 13:30", tz="UTC")


def trades_frame(rows: list[tuple]) -> pd.DataFrame:
    """(seconds after T0, contract_id, price, size, side) -> the columns delta reads."""
    secs, cid, price, size, side = zip(*rows, strict=True) if rows else ([],) * 5
    stamps = [(T0 + pd.Timedelta(seconds=s)).value for s in secs]
    index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="ns", utc=True), name="time")
    return pd.DataFrame(
        {
            "contract_id": np.array(cid, dtype=np.int64),
            "price": np.array(price, dtype=np.float64),
            "size": np.array(size, dtype=np.float64),
            "side": pd.Categorical(side, categories=["buy", "sell", "neutral"]),
        },
        index=index.as_unit("ns"),
    )


# contract 1 and 2 interleaved; contract 3 trades only neutral
MIXED = trades_frame(
    [
        (0, 1, 100.0, 2, "buy"),
        (5, 2, 50.0, 1, "buy"),
        (10, 1, 100.25, 3, "sell"),
        (60, 1, 100.0, 4, "neutral"),
        (60, 1, 100.5, 1, "buy"),
        (70, 2, 50.5, 2, "buy"),
        (71, 3, 7.0, 5, "neutral"),
        (75, 1, 100.0, 1, "sell"),
    ]
)


def test_running_sums_add_left_to_right_within_each_group():
    rng = np.random.default_rng(3)
    n = 3000
    codes = rng.integers(0, 50, n)
    codes[:700] = 9  # one long group next to many short ones
    values = rng.random((n, 2)) * rng.choice([1e-9, 1.0, 1e9], (n, 2))
    groups = group_rows(codes)
    got = running_sums(values, groups)
    before = previous_in_group(got, groups)
    for code in np.unique(codes):
        total = np.zeros(2)
        for row in np.flatnonzero(codes == code):
            assert np.array_equal(before[row], total)
            total = total + values[row]  # one addition at a time, in row order
            assert np.array_equal(got[row], total)


def test_signed_volume_and_cumulative_delta_per_contract():
    assert signed_volume(MIXED).tolist() == [2, 1, -3, 0, 1, 2, 0, -1]
    cum = cumulative_delta(MIXED)
    assert cum.index.equals(MIXED.index) and cum.name == "cumulative_delta"
    assert cum.tolist() == [2, 1, -1, -1, 0, 3, 0, -1]


def test_rolling_window_is_time_based_per_contract_and_right_closed():
    got = rolling(MIXED, window="60s")
    assert got.index.equals(MIXED.index)
    assert list(got.columns) == [
        "contract_id",
        "buy_volume",
        "sell_volume",
        "neutral_volume",
        "net_delta",
        "buy_sell_ratio",
        "buy_pct",
        "trade_count",
    ]
    expected = [  # contract, buy, sell, neutral, count; windows (t - 60 s, t]
        (1, 2, 0, 0, 1),
        (2, 1, 0, 0, 1),
        (1, 2, 3, 0, 2),
        (1, 0, 3, 4, 2),  # the trade at 0 s has left; not yet the later one at 60 s
        (1, 1, 3, 4, 3),
        (2, 2, 0, 0, 1),  # 70 - 60 = 10 > 5: the buy at 5 s has left
        (3, 0, 0, 5, 1),
        (1, 1, 1, 4, 3),
    ]
    table = got[["contract_id", "buy_volume", "sell_volume", "neutral_volume", "trade_count"]]
    assert [tuple(r) for r in table.itertuples(index=False)] == expected
    assert got["net_delta"].tolist() == [2, 1, -1, -3, -2, 2, 0, 0]
    ratio, pct = got["buy_sell_ratio"].to_numpy(), got["buy_pct"].to_numpy()
    assert ratio[0] == math.inf and ratio[2] == pytest.approx(2 / 3) and ratio[3] == 0
    assert math.isnan(ratio[6]) and math.isnan(pct[6])  # neither buys nor sells
    assert pct[:5].tolist() == [100, 100, 40, 0, 25]


def test_rolling_of_interleaved_contracts_equals_each_alone():
    both = rolling(MIXED, window="30s")
    for cid in (1, 2, 3):
        alone = rolling(MIXED[MIXED["contract_id"] == cid], window="30s")
        pd.testing.assert_frame_equal(both[both["contract_id"] == cid], alone, check_exact=True)


def test_rolling_needs_time_order_within_a_contract_only():
    swapped = MIXED.iloc[[1, 0, 2]]  # contracts out of order with each other: fine
    assert rolling(swapped)["trade_count"].tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match="contract 1 goes back in time"):
        rolling(MIXED.iloc[[2, 0]])


def test_summary_per_contract_and_the_demo_dict():
    got = summary(MIXED)
    assert got.index.tolist() == [1, 2, 3] and got.index.name == "contract_id"
    one = got.loc[1]
    assert (one["total_trades"], one["buy_volume"], one["sell_volume"]) == (5, 3, 4)
    assert (one["neutral_volume"], one["net_delta"], one["buy_pct"]) == (4, -1, 42.86)
    assert one["buy_sell_ratio"] == 0.75
    assert got.loc[2, "buy_sell_ratio"] == math.inf and math.isnan(got.loc[3, "buy_pct"])
    assert got["total_trades"].dtype == np.int64
    demo = DeltaSummary.from_summary(got, 1)
    assert demo.to_dict() == {
        "total_trades": 5,
        "buy_volume": 3,
        "sell_volume": 4,
        "net_delta": -1,
        "buy_pct": 42.86,
    }
    assert demo.to_dict(full=True)["buy_sell_ratio"] == 0.75
    assert DeltaSummary.from_summary(got, 2).to_dict(full=True)["buy_sell_ratio"] is None
    assert DeltaSummary.from_summary(got, 99) == DeltaSummary()
    assert DeltaSummary().to_dict()["buy_pct"] == 0.0  # as the demo always printed it
    with pytest.raises(ValueError, match="pass contract_id"):
        DeltaSummary.from_summary(got)


def test_interleaved_contracts_sum_as_each_alone():
    for cid in (1, 2, 3):
        alone = MIXED[MIXED["contract_id"] == cid]
        pd.testing.assert_frame_equal(summary(MIXED).loc[[cid]], summary(alone))
        mine = MIXED["contract_id"].to_numpy() == cid
        pd.testing.assert_series_equal(cumulative_delta(MIXED)[mine], cumulative_delta(alone))


def test_empty_trades_give_empty_frames_with_dtypes():
    empty = MIXED.iloc[:0]
    assert signed_volume(empty).dtype == np.float64 and len(cumulative_delta(empty)) == 0
    roll, summ = rolling(empty), summary(empty)
    assert len(roll) == 0 and roll.dtypes.to_dict() == rolling(MIXED).dtypes.to_dict()
    assert len(summ) == 0 and summ.dtypes.to_dict() == summary(MIXED).dtypes.to_dict()
    assert DeltaSummary.from_summary(summ) == DeltaSummary()


def test_side_as_plain_strings_is_accepted():
    plain = MIXED.assign(side=MIXED["side"].astype(str))
    pd.testing.assert_frame_equal(summary(plain), summary(MIXED))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (MIXED.drop(columns=["side", "size"]), "lacks column.*size, side"),
        (MIXED.reset_index(drop=True), "DatetimeIndex"),
        (MIXED.assign(side=["buy", "up"] * 4), "side must be one of.*found up"),
        (MIXED.assign(size=np.inf), "8 infinite sizes"),
        (MIXED.assign(price=-np.inf), "8 infinite prices"),
        ([{"price": 1.0}], "expected a trades DataFrame"),
    ],
)
def test_bad_trades_frames_say_what_is_wrong(frame, message):
    for function in (signed_volume, cumulative_delta, rolling, summary):
        with pytest.raises(ValueError, match=message):
            function(frame)


@pytest.mark.parametrize("window", ["soon", "-5s", "0s", 60, None])
def test_bad_window(window):
    with pytest.raises(ValueError, match="window"):
        rolling(MIXED, window=window)


def quotes_frame(rows: list[tuple]) -> pd.DataFrame:
    """(seconds after T0, contract_id, bid, bid size, ask, ask size) -> bid_ask ticks, with a
    trade tick first that OFI must skip."""
    secs, cid, bp, bs, ap, asz = zip(*rows, strict=True) if rows else ([],) * 6
    n = len(secs)
    index = pd.DatetimeIndex([T0 + pd.Timedelta(seconds=s) for s in (0, *secs)], name="time")
    nan = [math.nan]
    return pd.DataFrame(
        {
            "contract_id": np.array((1, *cid), dtype=np.int64),
            "tick_type": pd.Categorical(["last"] + ["bid_ask"] * n),
            "price": [100.0] + nan * n,
            "size": [1.0] + nan * n,
            "bid_price": nan + list(bp),
            "bid_size": nan + list(bs),
            "ask_price": nan + list(ap),
            "ask_size": nan + list(asz),
        },
        index=index,
    )


QUOTES = quotes_frame(
    [
        (1, 1, 100.0, 10, 100.25, 5),
        (2, 2, 50.0, 1, 50.5, 1),
        (3, 1, 100.0, 12, 100.25, 5),  # bid size up 2: +2
        (4, 1, 100.25, 3, 100.5, 7),  # bid up: +3; ask up: +5 (old ask size)
        (61, 1, 100.0, 8, 100.25, 4),  # bid down: -3; ask down: -4
        (62, 2, 50.0, 1, 50.5, 3),  # ask size up 2: -2
    ]
)


def test_order_flow_imbalance_per_quote_and_per_bar():
    got = order_flow_imbalance(QUOTES)
    assert got.index.equals(QUOTES.index[1:]) and list(got.columns) == ["contract_id", "ofi"]
    values = got["ofi"].to_numpy()
    assert np.isnan(values[[0, 1]]).all()  # first quote of each contract
    assert values[2:].tolist() == [2, 8, -7, -2]
    bars = order_flow_imbalance(QUOTES, interval="1min")
    assert bars.index.tolist() == [T0, T0, T0 + pd.Timedelta("1min"), T0 + pd.Timedelta("1min")]
    assert bars["contract_id"].tolist() == [1, 2, 1, 2]
    assert bars["ofi"].tolist() == [10, 0, -7, -2]
    assert bars["quote_count"].tolist() == [3, 1, 1, 1]
    one = order_flow_imbalance(QUOTES[QUOTES["contract_id"] == 1], interval="1min")
    pd.testing.assert_frame_equal(bars[bars["contract_id"] == 1], one)


def test_order_flow_imbalance_empty_and_bad_input():
    assert order_flow_imbalance(QUOTES.iloc[:1]).dtypes.to_dict() == {
        "contract_id": np.dtype("int64"),
        "ofi": np.dtype("float64"),
    }
    assert len(order_flow_imbalance(QUOTES.iloc[:1], interval="1s")) == 0
    with pytest.raises(ValueError, match="lacks column.*ask_size"):
        order_flow_imbalance(QUOTES.drop(columns="ask_size"))
    with pytest.raises(ValueError, match="interval"):
        order_flow_imbalance(QUOTES, interval="often")


def test_order_flow_imbalance_reads_any_tick_type_spelling():
    spelled = QUOTES.assign(
        tick_type=QUOTES["tick_type"].astype(str).replace({"bid_ask": "BidAsk", "last": "Last"})
    )
    pd.testing.assert_frame_equal(order_flow_imbalance(spelled), order_flow_imbalance(QUOTES))
    assert len(order_flow_imbalance(spelled)) == len(QUOTES) - 1


def test_trades_without_size_count_no_volume_and_infinite_ones_are_refused():
    rows = [
        (0, 1, 100.0, 2.0, "buy"),
        (1, 1, 100.0, math.nan, "sell"),
        (2, 1, math.nan, 1.0, "sell"),
    ]
    frame = trades_frame(rows)
    assert signed_volume(frame).tolist() == [2.0, 0.0, -1.0]
    assert cumulative_delta(frame).tolist() == [2.0, 2.0, 1.0]
    assert summary(frame)["total_trades"].tolist() == [3]
    with pytest.raises(ValueError, match="1 infinite sizes"):
        summary(trades_frame([*rows, (3, 1, 100.0, math.inf, "buy")]))
