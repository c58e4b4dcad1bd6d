"""VPIN: hand-built buckets with known answers, the live twin against the batch on any split,
the recorded data with the true aggressor."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.analytics import VPIN_COLUMNS, VpinEngine, bars, classify, vpin
from tests.data import BINANCE, recorded
from tests.test_delta import trades_frame
from tests.test_engine import split, trades_and_cuts


def _trades(sizes, sides, prices=None, contract=1) -> pd.DataFrame:
    prices = [100.0 + i for i in range(len(sizes))] if prices is None else prices
    rows = zip(range(len(sizes)), [contract] * len(sizes), prices, sizes, sides, strict=True)
    return trades_frame(list(rows))


FIVE = _trades([3, 4, 5, 2, 6], ["buy", "sell", "buy", "neutral", "sell"])


def test_trades_fill_equal_buckets_split_at_the_edges():
    got = vpin(FIVE, 5, window=2, method="trades")
    # volume 20 in buckets of 5: [3b 2s] [2s 3b] [2b 2n 1s] [5s]
    assert got["bucket"].tolist() == [0, 1, 2, 3]
    assert got["buy_volume"].tolist() == [3, 3, 2, 0]
    assert got["sell_volume"].tolist() == [2, 2, 1, 5]
    assert got["imbalance"].tolist() == pytest.approx([0.2, 0.2, 0.2, 1.0])
    assert got["vpin"].iloc[0] != got["vpin"].iloc[0]  # NaN: one bucket < window
    assert got["vpin"].iloc[1:].tolist() == pytest.approx([0.2, 0.2, 0.6])
    # index: the trade that completed the bucket; start: the one that opened it
    assert [t.second for t in got.index] == [1, 2, 4, 4]
    assert [t.second for t in got["start"]] == [0, 1, 2, 4]
    assert got["close"].tolist() == [101, 102, 104, 104]


def test_a_trade_larger_than_a_bucket_fills_several_and_the_open_bucket_waits():
    got = vpin(_trades([12, 1], ["sell", "buy"]), 5, window=1, method="trades")
    assert got["bucket"].tolist() == [0, 1]  # 13 = 5 + 5 + 3 open, not reported
    assert got["sell_volume"].tolist() == [5, 5]
    assert got["vpin"].tolist() == [1.0, 1.0]


def test_bvc_splits_each_bucket_by_the_normal_cdf_of_its_close_change():
    got = vpin(FIVE, 5, window=2, method="bvc", sigma_window=2)
    # closes 101 102 104 104: changes NaN 1 2 0; sigma over 2: NaN NaN 0.7071 1.4142
    assert np.isnan(got["imbalance"].iloc[:2]).all()
    phi = 0.5 * (1 + __import__("math").erf(2 / np.sqrt(0.5) / np.sqrt(2)))
    assert got["buy_volume"].iloc[2] == pytest.approx(5 * phi, rel=1e-12)
    assert got["imbalance"].iloc[2] == pytest.approx(2 * phi - 1, rel=1e-12)
    assert got["imbalance"].iloc[3] == 0.0  # no change: half and half
    assert got["vpin"].iloc[3] == pytest.approx((2 * phi - 1) / 2, rel=1e-12)


def test_fractional_volumes_complete_each_bucket_exactly_once():
    n = 1000
    trades = _trades([0.1] * n, ["buy", "sell"] * (n // 2))
    got = vpin(trades, 0.3, window=3, method="trades")
    total = np.cumsum(np.full(n, 0.1))[-1]
    assert len(got) == int(np.floor(total / 0.3 + 1e-9))  # 333 buckets of 0.3 in 100.0
    assert got["bucket"].tolist() == list(range(len(got)))
    np.testing.assert_allclose(got["buy_volume"] + got["sell_volume"], 0.3, rtol=1e-9)


def test_contracts_are_bucketed_apart_and_rows_come_in_completion_order():
    one = _trades([3, 4, 5, 2, 6], ["buy", "sell", "buy", "neutral", "sell"])
    two = _trades([7, 7, 7], ["sell", "buy", "buy"], contract=2)
    two.index = two.index + pd.Timedelta("500ms")
    both = pd.concat([one, two]).sort_index(kind="stable")
    got = vpin(both, {1: 5, 2: 7}, window=2, method="trades")
    assert got.index.is_monotonic_increasing
    for cid, alone in ((1, one), (2, two)):
        mine = got[got["contract_id"] == cid]
        pd.testing.assert_frame_equal(mine, vpin(alone, {1: 5, 2: 7}, 2, "trades"))


def test_no_size_adds_no_volume_and_no_price_keeps_the_last_close():
    trades = _trades([5, np.nan, 5], ["buy", "sell", "sell"], prices=[100.0, 101.0, np.nan])
    got = vpin(trades, 5, window=1, method="trades")
    assert got["sell_volume"].tolist() == [0, 5]
    assert got["close"].tolist() == [100.0, 101.0]


def test_empty_trades_give_an_empty_frame_with_the_columns():
    got = vpin(FIVE.iloc[:0], 5)
    assert got.empty and dict(got.dtypes.astype(str)) == VPIN_COLUMNS
    assert str(got.index.dtype) == "datetime64[ns, UTC]"
    assert VpinEngine(5).frame().dtypes.astype(str).to_dict() == VPIN_COLUMNS


def test_frames_of_the_wrong_kind_name_the_call_to_make():
    data = recorded(BINANCE)
    with pytest.raises(ValueError, match=r"vpin takes classified trades.*classify\(ticks\)"):
        vpin(data.ticks, 10.0)
    with pytest.raises(ValueError, match="got bars"):
        vpin(bars(classify(data.ticks)), 10.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket_volume": 0}, "bucket_volume must be a positive volume"),
        ({"bucket_volume": {1: -1}}, r"bucket_volume\[1\]"),
        ({"bucket_volume": 5, "window": 0}, "window must be an int >= 1"),
        ({"bucket_volume": 5, "method": "tick"}, "method must be one of bvc, trades"),
        ({"bucket_volume": 5, "sigma_window": 1}, "sigma_window must be an int >= 2"),
        ({"bucket_volume": {2: 5}}, "no volume for contract 1"),
        ({"bucket_volume": 1e-9}, "too small"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        vpin(FIVE, **kwargs)


@settings(max_examples=80, deadline=None)
@given(
    data=trades_and_cuts(),
    volume=st.sampled_from([0.7, 5.0, 10.0, 33.3]),
    window=st.integers(1, 4),
    method=st.sampled_from(["bvc", "trades"]),
)
def test_the_engine_equals_the_batch_on_any_split(data, volume, window, method):
    trades, cuts = data
    engine = VpinEngine(volume, window, method, sigma_window=3)
    parts = [engine.update(part) for part in split(trades, cuts)]
    batch = vpin(trades, volume, window, method, sigma_window=3)
    pd.testing.assert_frame_equal(engine.frame(), batch, check_exact=True)
    pd.testing.assert_frame_equal(pd.concat(parts), batch, check_exact=True)


def test_recorded_vpin_is_a_share_and_bvc_flow_leans_with_the_true_flow():
    data = recorded(BINANCE)
    trades = classify(data.ticks)
    truth = trades.assign(side=pd.Categorical(data.truth, categories=["buy", "sell", "neutral"]))
    volume = float(trades["size"].sum()) / 400
    true = vpin(truth, volume, window=20, method="trades")
    bvc = vpin(truth, volume, window=20, method="bvc")
    assert len(true) == len(bvc) == int(trades["size"].sum() // volume)
    assert true["vpin"].dropna().between(0, 1).all() and bvc["vpin"].dropna().between(0, 1).all()
    # the engine over 17 batches of the real trades equals one batch
    engine = VpinEngine(volume, 20, "bvc")
    for part in np.array_split(np.arange(len(truth)), 17):
        engine.update(truth.iloc[part])
    pd.testing.assert_frame_equal(engine.frame(), bvc, check_exact=True)
    # BVC's bucket flow leans with the true flow (0.62 measured); VPIN itself need not
    signed = [f["buy_volume"] - f["sell_volume"] for f in (true, bvc)]
    assert signed[0].corr(signed[1]) > 0.4


def test_a_refused_batch_leaves_the_engine_as_it_was():
    engine = VpinEngine({1: 5, 2: 7}, window=2, method="trades")
    engine.update(FIVE.iloc[:2])
    stranger = _trades([9, 9], ["buy", "sell"], contract=3)
    with pytest.raises(ValueError, match="no volume for contract 3"):
        engine.update(pd.concat([FIVE.iloc[2:], stranger]))
    engine.update(FIVE.iloc[2:])
    pd.testing.assert_frame_equal(engine.frame(), vpin(FIVE, 5, 2, "trades"))
