"""Time bars, bulk volume classification and footprints on hand-computed trades."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibstream.analytics.bars import BAR_COLUMNS, bars, bulk_volume, normal_cdf
from ibstream.analytics.footprint import FOOTPRINT_COLUMNS, footprint, price_levels
from tests.test_delta import T0, trades_frame

TRADES = trades_frame(
    [
        (0, 1, 100.0, 2, "buy"),
        (20, 1, 101.0, 5, "sell"),
        (30, 2, 10.0, 1, "buy"),
        (40, 1, 99.5, 1, "buy"),
        (59.999, 1, 100.5, 2, "neutral"),
        (60, 1, 100.25, 1, "sell"),  # opens the next bar: bars are left-closed
        (185, 1, 102.0, 3, "buy"),  # 13:32 has no trade: no bar
    ]
)
MINUTE = pd.Timedelta("1min")


def test_bars_by_hand():
    expected = pd.DataFrame(
        {
            "contract_id": [1, 2, 1, 1],
            "open": [100.0, 10.0, 100.25, 102.0],
            "high": [101.0, 10.0, 100.25, 102.0],
            "low": [99.5, 10.0, 100.25, 102.0],
            "close": [100.5, 10.0, 100.25, 102.0],
            "volume": [10.0, 1.0, 1.0, 3.0],
            "buy_volume": [3.0, 1.0, 0.0, 3.0],
            "sell_volume": [5.0, 0.0, 1.0, 0.0],
            "neutral_volume": [2.0, 0.0, 0.0, 0.0],
            "delta": [-2.0, 1.0, -1.0, 3.0],
            "delta_high": [2.0, 1.0, 0.0, 3.0],  # the delta path starts at 0 in each bar
            "delta_low": [-3.0, 0.0, -1.0, 0.0],  # +2, -3, -2, -2 in the first bar
            "delta_close": [-2.0, 1.0, -1.0, 3.0],
            "vwap": [1005.5 / 10, 10.0, 100.25, 102.0],
            "trade_count": [4, 1, 1, 1],
            "cumulative_delta": [-2.0, 1.0, -3.0, 0.0],
        },
        index=pd.DatetimeIndex([T0, T0, T0 + MINUTE, T0 + 3 * MINUTE], name="time"),
    ).astype(BAR_COLUMNS)
    got = bars(TRADES)
    pd.testing.assert_frame_equal(got, expected.set_axis(expected.index.as_unit("ns")))
    assert str(got.index.dtype) == "datetime64[ns, UTC]"


def test_bars_label_utc_starts_of_any_interval_and_read_naive_times_as_utc():
    five = bars(TRADES, interval="5min")
    assert five.index.tolist() == [T0, T0] and five["trade_count"].tolist() == [6, 1]
    naive = TRADES.set_axis(TRADES.index.tz_localize(None))
    pd.testing.assert_frame_equal(bars(naive), bars(TRADES))
    eastern = TRADES.set_axis(TRADES.index.tz_convert("America/New_York"))
    pd.testing.assert_frame_equal(bars(eastern), bars(TRADES))


def test_bars_of_interleaved_contracts_equal_each_alone():
    both = bars(TRADES, interval="20s")
    for cid in (1, 2):
        alone = bars(TRADES[TRADES["contract_id"] == cid], interval="20s")
        pd.testing.assert_frame_equal(both[both["contract_id"] == cid], alone, check_exact=True)


def test_bars_empty_and_bad_input():
    empty = bars(TRADES.iloc[:0])
    assert len(empty) == 0 and empty.dtypes.to_dict() == bars(TRADES).dtypes.to_dict()
    assert str(empty.index.dtype) == "datetime64[ns, UTC]"
    for interval in ("1 fortnight", "0s", 60, "1M"):
        with pytest.raises(ValueError, match="interval"):
            bars(TRADES, interval=interval)
    with pytest.raises(ValueError, match="lacks column.*contract_id"):
        bars(TRADES.drop(columns="contract_id"))


def _bars_of_closes(closes: list[float], contract: int = 1) -> pd.DataFrame:
    index = pd.DatetimeIndex([T0 + i * MINUTE for i in range(len(closes))], name="time")
    return pd.DataFrame({"contract_id": contract, "close": closes, "volume": 10.0}, index=index)


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_bulk_volume_splits_by_the_normal_cdf_of_standardised_price_change():
    got = bulk_volume(_bars_of_closes([100, 101, 100, 103]), window=3)
    # changes: -, +1, -1, +3; sigma over <= 3 changes: -, -, sd(1, -1), sd(1, -1, 3) = 2
    buy = got["bvc_buy_volume"].to_numpy()
    assert np.isnan(buy[:2]).all()
    assert buy[2] == pytest.approx(10 * _phi(-1 / math.sqrt(2)), rel=1e-6)
    assert buy[3] == pytest.approx(10 * _phi(1.5), rel=1e-6)
    assert np.allclose(got["bvc_sell_volume"].to_numpy()[2:], 10 - buy[2:])
    assert np.allclose(got["bvc_delta"].to_numpy()[2:], 2 * buy[2:] - 10)


def test_bulk_volume_zero_sigma_and_contracts_apart():
    flat = bulk_volume(_bars_of_closes([100, 100, 100]), window=2)
    assert flat["bvc_buy_volume"].iloc[2] == 5.0
    rising = bulk_volume(_bars_of_closes([100, 101, 102]), window=2)
    assert rising["bvc_buy_volume"].iloc[2] == 10.0
    one, two = _bars_of_closes([100, 101, 100, 103]), _bars_of_closes([5, 4, 6, 6], 2)
    both = bulk_volume(pd.concat([one, two]).sort_index(kind="stable"), window=3)
    pd.testing.assert_frame_equal(both[both["contract_id"] == 1], bulk_volume(one, window=3))
    pd.testing.assert_frame_equal(both[both["contract_id"] == 2], bulk_volume(two, window=3))
    assert len(bulk_volume(bars(TRADES.iloc[:0]))) == 0
    with pytest.raises(ValueError, match="window"):
        bulk_volume(one, window=1)
    with pytest.raises(ValueError, match="time order"):
        bulk_volume(one.iloc[::-1])


def test_normal_cdf_is_precise_in_the_body_and_the_tails():
    z = np.linspace(-30, 30, 6001)
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in z])
    got = normal_cdf(z)
    assert np.abs(got - exact).max() < 1e-15
    assert np.abs(got / exact - 1).max() < 1e-12  # the far tail too, not just near 0.5
    assert normal_cdf(np.array([-np.inf, np.inf])).tolist() == [0.0, 1.0]
    assert np.isnan(normal_cdf(np.array([np.nan]))).all()


def test_footprint_by_hand_with_tick_size():
    got = footprint(TRADES, tick_size=1.0)
    rows = [  # time, contract, level, buy, sell, neutral, count
        (T0, 1, 99.0, 1, 0, 0, 1),
        (T0, 1, 100.0, 2, 0, 2, 2),  # 100 and 100.5 share the level
        (T0, 1, 101.0, 0, 5, 0, 1),
        (T0, 2, 10.0, 1, 0, 0, 1),
        (T0 + MINUTE, 1, 100.0, 0, 1, 0, 1),
        (T0 + 3 * MINUTE, 1, 102.0, 3, 0, 0, 1),
    ]
    table = got.reset_index()[
        ["time", "contract_id", "price", "buy_volume", "sell_volume", "neutral_volume"]
    ]
    assert [tuple(r) for r in table.itertuples(index=False)] == [r[:6] for r in rows]
    assert got["trade_count"].tolist() == [r[6] for r in rows]
    assert got["delta"].tolist() == [1, 2, -5, 1, -1, 3]
    assert got.dtypes.to_dict() == {k: np.dtype(v) for k, v in FOOTPRINT_COLUMNS.items()}


def test_footprint_levels_without_tick_size_and_per_contract():
    got = footprint(TRADES)
    assert got[got.index == T0]["price"].tolist() == [99.5, 100.0, 100.5, 101.0, 10.0]
    alone = footprint(TRADES[TRADES["contract_id"] == 2], interval="30s")
    both = footprint(TRADES, interval="30s")
    pd.testing.assert_frame_equal(both[both["contract_id"] == 2], alone)
    assert len(footprint(TRADES.iloc[:0])) == 0


def test_price_levels_floor_to_the_grid_despite_float_noise():
    prices = np.array([100.07, 100.069999, 5528.75, 5528.5 + 0.24])
    assert price_levels(prices, 0.01).tolist() == [100.07, 100.06, 5528.75, 5528.74]
    assert price_levels(prices, 0.25).tolist() == [100.0, 100.0, 5528.75, 5528.5]
    for bad in (0, -0.25, "0.25x", True, math.nan):
        with pytest.raises(ValueError, match="tick_size"):
            footprint(TRADES, tick_size=bad)


def test_trades_without_price_have_volume_but_no_price_and_none_without_size():
    frame = trades_frame(
        [
            (0, 1, math.nan, 4, "neutral"),  # no price: volume and count, no OHLC or level
            (10, 1, 100.0, 2, "buy"),
            (20, 1, 101.0, math.nan, "buy"),  # no size: a price, no volume
            (30, 1, math.nan, 1, "sell"),
            (70, 1, math.nan, 3, "buy"),  # a bar of unpriced trades only
        ]
    )
    got = bars(frame)
    first, second = got.iloc[0], got.iloc[1]
    assert [first[k] for k in ("open", "high", "low", "close")] == [100.0, 101.0, 100.0, 101.0]
    assert [first[k] for k in ("volume", "buy_volume", "sell_volume", "trade_count")] == [
        7.0,
        2.0,
        1.0,
        4,
    ]
    assert first["vwap"] == 100.0 and first["neutral_volume"] == 4.0
    assert np.isnan(second[["open", "high", "low", "close", "vwap"]].to_numpy(float)).all()
    assert second["volume"] == 3.0 and second["trade_count"] == 1
    cells = footprint(frame)
    assert cells["price"].tolist() == [100.0, 101.0]
    assert cells["buy_volume"].tolist() == [2.0, 0.0] and cells["trade_count"].tolist() == [1, 1]
