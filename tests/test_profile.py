"""Volume profile: POC, value area and naked POCs by hand, against the step-by-step loop
of the definition, on the recorded data, and its incremental twin on any split."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.orderflow_loops import profile_loop, rows_of, value_area_loop
from ibstream.analytics import (
    PROFILE_LEVEL_COLUMNS,
    PROFILE_PERIOD_COLUMNS,
    LiveProfile,
    bars,
    classify,
    value_area,
    volume_profile,
)
from tests.data import BINANCE, CME, recorded
from tests.test_delta import T0, trades_frame
from tests.test_engine import split, trades_and_cuts

NAN3 = (math.nan, math.nan, math.nan)


def same(got: tuple, want: tuple) -> bool:
    return all(
        (a == b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(got, want, strict=True)
    )


@pytest.mark.parametrize(
    ("volumes", "want"),
    [
        # total 20, target 14: POC 3 (10); above 3 + 1 = 4 < below 5 + 1 = 6: below first
        ([1, 5, 10, 3, 1], (3.0, 1.0, 3.0)),
        # a tie of the pairs (4 + 1 = 5 = 2 + 3): the pair above is taken
        ([3, 2, 10, 4, 1], (3.0, 3.0, 5.0)),
        # the side below runs out after one level (taken alone), the rest from above
        ([9, 20, 4, 4, 3, 3], (2.0, 1.0, 4.0)),
        # the POC alone holds 70 %
        ([1, 70, 29], (2.0, 2.0, 2.0)),
        # one level
        ([5], (1.0, 1.0, 1.0)),
        # POC tie: the level closest to the middle (3 of 1..5), not the first or last
        ([9, 1, 9, 1, 9], (3.0, 1.0, 5.0)),
        # POC tie at equal distance from the middle (2.5): the lower one; then 9 + 1 above
        ([1, 9, 9, 1], (2.0, 2.0, 4.0)),
        ([0, 0, 0], NAN3),  # no volume
    ],
)
def test_value_area_by_hand(volumes, want):
    prices = np.arange(1.0, len(volumes) + 1)
    assert same(value_area(prices, np.array(volumes, dtype=float)), want)
    assert same(value_area_loop(prices.tolist(), [float(v) for v in volumes], 0.70), want)


def test_value_area_edges_and_errors():
    assert same(value_area(np.array([]), np.array([])), NAN3)
    prices, volumes = np.array([1.0, 2.0, 3.0]), np.array([1.0, np.nan, 2.0])  # NaN: 0
    assert value_area(prices, volumes, fraction=1.0) == (3.0, 1.0, 3.0)
    for bad in (0, 1.5, -0.1, True, "0.7"):
        with pytest.raises(ValueError, match="fraction"):
            value_area(prices, volumes, bad)
    with pytest.raises(ValueError, match="ascending"):
        value_area(np.array([2.0, 1.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="differ in length"):
        value_area(np.array([1.0]), np.array([1.0, 2.0]))


@settings(max_examples=300, deadline=None)
@given(
    volumes=st.lists(st.integers(0, 6).map(float), min_size=1, max_size=30),
    fraction=st.sampled_from([0.1, 0.5, 0.7, 0.9, 1.0]),
)
def test_value_area_equals_the_step_by_step_expansion(volumes, fraction):
    """The one-sort form (see `auction`) takes the same pairs as the loop, ties included."""
    prices = np.arange(len(volumes)) * 0.25 + 100.0
    got = value_area(prices, np.array(volumes), fraction)
    assert same(got, value_area_loop(prices.tolist(), volumes, fraction))


def two_periods() -> pd.DataFrame:
    rows = [  # (seconds after T0, contract, price, size, side)
        (0, 1, 100.00, 5, "buy"),
        (1, 1, 100.25, 10, "sell"),
        (2, 1, 100.50, 2, "buy"),
        (3, 1, 100.25, 3, "neutral"),  # POC 100.25 (13): value area 100.25 .. 100.5 -> 100
        (4, 1, math.nan, 7, "buy"),  # no price: no level
        (5, 1, 100.75, math.nan, "buy"),  # no size: a level of volume 0
        (6, 2, 50.0, 1, "sell"),
        (60, 1, 101.00, 4, "buy"),  # the next minute: trades above 100.25
        (61, 1, 101.25, 1, "sell"),
        (62, 2, 50.0, 2, "buy"),  # contract 2 comes back to its POC
    ]
    return trades_frame(rows)


def test_profile_by_hand_with_naked_pocs():
    got = volume_profile(two_periods(), "1min", tick_size=0.25)
    levels, periods = got
    first = levels[(levels.index == T0) & (levels["contract_id"] == 1)]
    assert first["price"].tolist() == [100.0, 100.25, 100.5, 100.75]
    assert first["volume"].tolist() == [5.0, 13.0, 2.0, 0.0]
    assert first["delta"].tolist() == [5.0, -10.0, 2.0, 0.0]
    assert first["trade_count"].tolist() == [1, 2, 1, 1]
    # total 20, target 14: above 2 + 0 = 2 < below 5: 100 then 100.5 .. 100.75 (20 >= 14)
    assert first["in_value_area"].tolist() == [True, True, False, False]
    row = periods[(periods.index == T0) & (periods["contract_id"] == 1)].iloc[0]
    assert (row["poc"], row["value_area_low"], row["value_area_high"]) == (100.25, 100.0, 100.25)
    assert (row["volume"], row["value_area_volume"], row["poc_volume"]) == (20.0, 18.0, 13.0)
    assert (row["low"], row["high"], row["trade_count"]) == (100.0, 100.75, 5)
    minute = T0 + pd.Timedelta("1min")
    table = periods.reset_index()[["time", "contract_id", "poc", "poc_naked", "poc_revisited"]]
    assert [tuple(r) for r in table.itertuples(index=False)] == [
        (T0, 1, 100.25, True, pd.NaT),  # the next minute traded 101 .. 101.25 only
        (T0, 2, 50.0, False, minute),
        (minute, 1, 101.0, True, pd.NaT),
        (minute, 2, 50.0, True, pd.NaT),  # the newest period: nothing after it yet
    ]
    assert got.levels.dtypes.to_dict() == {k: np.dtype(v) for k, v in PROFILE_LEVEL_COLUMNS.items()}
    assert [str(t) for t in periods.dtypes] == list(PROFILE_PERIOD_COLUMNS.values())


def test_profile_periods_none_frame_and_per_contract():
    trades = two_periods()
    whole = volume_profile(trades, tick_size=0.25).periods
    assert whole.index.tolist() == [T0, T0 + pd.Timedelta(seconds=6)]  # first trade each
    assert whole["volume"].tolist() == [25.0, 3.0]
    starts = pd.DatetimeIndex([T0 + pd.Timedelta(seconds=2), T0 + pd.Timedelta(seconds=61)])
    by_frame = volume_profile(trades, pd.DataFrame(index=starts), tick_size=0.25).periods
    assert by_frame["trade_count"].tolist() == [4, 1, 1, 1]  # trades before 2 s left out
    assert by_frame.index.tolist() == [starts[0]] * 2 + [starts[1]] * 2
    pd.testing.assert_frame_equal(
        volume_profile(trades, bars(trades, "1min"), 0.25).periods,
        volume_profile(trades, "1min", 0.25).periods,
    )
    both = volume_profile(trades, "1min", 0.25)
    alone = volume_profile(trades[trades["contract_id"] == 2], "1min", 0.25)
    for a, b in zip(both, alone, strict=True):
        pd.testing.assert_frame_equal(a[a["contract_id"] == 2], b)


def test_empty_in_empty_out_and_errors_that_say_what_to_do():
    empty = volume_profile(two_periods().iloc[:0], "1min")
    assert len(empty.levels) == len(empty.periods) == 0
    assert list(empty.levels.columns) == list(PROFILE_LEVEL_COLUMNS)
    assert list(empty.periods.columns) == list(PROFILE_PERIOD_COLUMNS)
    assert [str(t) for t in empty.periods.dtypes] == list(PROFILE_PERIOD_COLUMNS.values())
    ticks = recorded(CME).ticks
    with pytest.raises(ValueError, match=r"tick frame: call ibstream\.analytics\.classify"):
        volume_profile(ticks)
    with pytest.raises(ValueError, match=r"tick frame: call ibstream\.analytics\.classify"):
        LiveProfile().update(ticks)
    trades = two_periods()
    for by in (5, "soon", pd.Series([1])):
        with pytest.raises(ValueError, match="by"):
            volume_profile(trades, by)
    for bad in (0, 1.2):
        with pytest.raises(ValueError, match="value_area"):
            volume_profile(trades, value_area=bad)
    with pytest.raises(ValueError, match="tick_size"):
        volume_profile(trades, tick_size=-1)


@pytest.mark.parametrize(("name", "tick"), [(CME, 0.25), (BINANCE, 10.0)])
def test_recorded_profile_holds_the_traded_volume_and_equals_the_loop(name, tick):
    trades = classify(recorded(name).ticks)
    periods = volume_profile(trades, "5min", tick_size=tick).periods
    traded = bars(trades, "5min")
    assert periods.index.equals(traded.index)
    np.testing.assert_allclose(periods["volume"], traded["volume"], rtol=1e-12)
    np.testing.assert_allclose(periods["delta"], traded["delta"], rtol=1e-12, atol=1e-9)
    assert (periods["trade_count"] == traded["trade_count"]).all()
    loop = profile_loop(rows_of(trades), 5 * 60 * 10**9, tick, 0.70)
    keys = zip(periods.index.asi8.tolist(), periods["contract_id"].tolist(), strict=True)
    columns = ["poc", "value_area_low", "value_area_high", "volume"]
    got = dict(zip(keys, periods[columns].itertuples(index=False, name=None), strict=True))
    assert got == loop
    assert (periods["value_area_volume"] >= 0.7 * periods["volume"]).all()


@settings(max_examples=60, deadline=None)
@given(
    data=trades_and_cuts(),
    by=st.sampled_from([None, "1s", "30s", "1min", "frame"]),
    tick_size=st.sampled_from([None, 0.5]),
    fraction=st.sampled_from([0.5, 0.7, 1.0]),
)
def test_live_profile_equals_batch_on_any_split(data, by, tick_size, fraction):
    trades, cuts = data
    if by == "frame":
        by = pd.DatetimeIndex([T0 + pd.Timedelta(seconds=s) for s in (0.5, 7, 40)])
    live = LiveProfile(by, tick_size, fraction)
    for part in split(trades, cuts):
        live.update(part)
    want = volume_profile(trades, by, tick_size, fraction)
    for got, expected in zip(live.result(), want, strict=True):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
    if by is None or isinstance(by, str):
        step = None if by is None else pd.Timedelta(by).value
        loop = profile_loop(rows_of(trades), step, tick_size, fraction)
        assert sorted(loop) == sorted(
            zip(
                (0 if by is None else t for t in want.periods.index.asi8.tolist()),
                want.periods["contract_id"].tolist(),
                strict=True,
            )
        )


def test_periods_from_an_empty_frame_hold_nothing():
    none = volume_profile(two_periods(), pd.DatetimeIndex([], tz="UTC"), 0.25)
    assert len(none.levels) == len(none.periods) == 0
