"""Absorption runs and delta divergence: hand-built cases, refills from quotes, the live
twins against the batch on any split, the recorded data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.analytics import (
    ABSORPTION_COLUMNS,
    DIVERGENCE_COLUMNS,
    AbsorptionEngine,
    DivergenceEngine,
    absorption,
    bars,
    classify,
    delta_divergence,
)
from tests.data import CME, recorded, tick_frame
from tests.test_delta import T0, trades_frame
from tests.test_engine import split, trades_and_cuts


def _trades(rows: list[tuple], contract: int = 1) -> pd.DataFrame:
    """(seconds, price, size, side) -> trades of one contract."""
    return trades_frame([(s, contract, p, v, side) for s, p, v, side in rows])


# sellers hit 100.00 / 100.25 for 30 lots and the price held; then 101 breaks the band
HELD = _trades(
    [
        (0, 100.0, 10, "sell"),
        (1, 100.25, 10, "sell"),
        (2, 100.0, 10, "sell"),
        (2, 100.25, 2, "buy"),
        (3, 101.0, 1, "buy"),
    ]
)


def test_a_run_inside_the_band_with_enough_aggressive_volume_is_an_event():
    got = absorption(HELD, min_volume=25, ticks=1, tick_size=0.25)
    assert len(got) == 1
    row = got.iloc[0]
    assert (row["side"], row["volume"], row["opposite_volume"], row["trade_count"]) == (
        "sell",
        30,
        2,
        4,
    )
    assert (row["price_low"], row["price_high"]) == (100.0, 100.25)
    assert got.index[0] == T0 and row["end"] == T0 + pd.Timedelta(seconds=2)
    assert np.isnan(row["refills"])  # no quotes given
    assert absorption(HELD, min_volume=31, ticks=1, tick_size=0.25).empty
    # with no tick of room the run ends at 100.25: no event
    assert absorption(HELD, min_volume=25, ticks=0, tick_size=0.25).empty


def test_a_pause_longer_than_max_gap_ends_the_run():
    paused = _trades([(0, 100.0, 20, "buy"), (10, 100.0, 20, "buy")])
    assert absorption(paused, min_volume=30, tick_size=0.25).empty  # 10 s > the default 5 s
    assert absorption(paused, min_volume=30, tick_size=0.25, max_gap="9s").empty
    got = absorption(paused, min_volume=30, tick_size=0.25, max_gap="10s")
    assert got["volume"].tolist() == [40]


def test_long_runs_are_followed_past_the_vector_look_ahead():
    rows = [(i * 0.01, 100.0 + 0.25 * (i % 2), 1, "buy") for i in range(300)]
    rows.append((4.0, 102.0, 1, "sell"))
    got = absorption(_trades(rows), min_volume=300, tick_size=0.25)
    assert got["trade_count"].tolist() == [300] and got["volume"].tolist() == [300]


def _bids(rows: list[tuple]) -> pd.DataFrame:
    """(seconds, bid, bid_size) -> bid_ask quotes (ask 0.25 above, size 1)."""
    return tick_frame(
        {
            "tick_type": "bid_ask",
            "bid_price": b,
            "bid_size": s,
            "ask_price": b + 0.25,
            "ask_size": 1,
            "recv_ns": (T0 + pd.Timedelta(seconds=t)).value,
        }
        for t, b, s in rows
    )


def test_quotes_count_the_passive_side_refilling_within_the_run():
    book = _bids(
        [(0, 100.0, 5), (0.5, 100.0, 8), (1, 100.0, 6), (1.5, 100.0, 10), (2.5, 99.75, 20)]
    )
    got = absorption(HELD, book, min_volume=25, tick_size=0.25)
    assert got["refills"].tolist() == [2] and got["refill_volume"].tolist() == [7]
    assert absorption(HELD, book, min_volume=25, tick_size=0.25, min_refills=3).empty
    assert len(absorption(HELD, book, min_volume=25, tick_size=0.25, min_refills=0)) == 1


def test_the_tick_size_comes_from_the_contracts_or_must_be_given():
    with pytest.raises(ValueError, match="tick size for contract 1.*pass tick_size="):
        absorption(HELD, min_volume=25)
    held = HELD.copy()
    held.attrs["contracts"] = [{"contract_id": 1, "min_tick": 0.25}]
    pd.testing.assert_frame_equal(
        absorption(held, min_volume=25), absorption(HELD, min_volume=25, tick_size=0.25)
    )


def test_frames_of_the_wrong_kind_and_bad_arguments_are_refused():
    ticks = recorded(CME).ticks
    trades = classify(ticks)
    with pytest.raises(ValueError, match=r"absorption takes classified trades.*classify\(ticks\)"):
        absorption(ticks, min_volume=5, tick_size=0.25)
    with pytest.raises(ValueError, match="absorption takes quotes .* got trades"):
        absorption(trades, trades, min_volume=5, tick_size=0.25)
    with pytest.raises(ValueError, match="min_volume must be a positive volume"):
        absorption(trades, min_volume=0, tick_size=0.25)
    with pytest.raises(ValueError, match=r"delta_divergence takes bars, got trades.*bars\(trades"):
        delta_divergence(trades)
    with pytest.raises(ValueError, match="delta_divergence takes bars, got a tick frame"):
        delta_divergence(ticks)
    with pytest.raises(ValueError, match="lookback must be an int >= 1"):
        delta_divergence(bars(trades), lookback=0)


def test_empty_frames_give_empty_frames_with_the_columns():
    got = absorption(HELD.iloc[:0], min_volume=1, tick_size=0.25)
    assert got.empty and got.dtypes.to_dict() == {
        k: pd.api.types.pandas_dtype(v) for k, v in ABSORPTION_COLUMNS.items()
    }
    flags = delta_divergence(bars(HELD.iloc[:0]))
    assert flags.empty and flags.dtypes.to_dict() == {
        k: pd.api.types.pandas_dtype(v) for k, v in DIVERGENCE_COLUMNS.items()
    }


def _bars_of(highs, lows, deltas) -> pd.DataFrame:
    index = pd.date_range(T0, periods=len(highs), freq="1min", name="time")
    return pd.DataFrame(
        {
            "contract_id": 1,
            "open": highs,
            "high": highs,
            "low": lows,
            "close": lows,
            "cumulative_delta": deltas,
        },
        index=index,
    )


def test_a_new_high_without_a_new_delta_high_is_bearish_and_the_mirror_bullish():
    up = _bars_of([10, 11, 12, 13, 14], [9, 10, 11, 12, 13], [1, 2, 3, 2, 9])
    got = delta_divergence(up, lookback=2)
    # bar 3: high 13 above 11, 12 while delta 2 stays below 3; bar 4 takes delta along
    assert got["kind"].tolist() == ["bearish"] and got.index[0] == up.index[3]
    row = got.iloc[0]
    assert (row["prior_high"], row["delta"], row["prior_delta_high"]) == (12, 2, 3)
    down = _bars_of([10, 9, 8, 7], [9, 8, 7, 6], [-1, -2, -3, -2])
    assert delta_divergence(down, lookback=2)["kind"].tolist() == ["bullish"]
    assert delta_divergence(up, lookback=5).empty  # not enough earlier bars


def test_recorded_data_gives_events_and_flags():
    trades = classify(recorded(CME).ticks)
    quotes = recorded(CME).ticks
    events = absorption(trades, min_volume=10, ticks=1, min_refills=0, tick_size=0.25)
    assert len(events) > 0 and (events["price_high"] - events["price_low"] <= 0.25).all()
    assert (events["volume"] >= 10).all() and events.index.is_monotonic_increasing
    with_quotes = absorption(trades, quotes, min_volume=10, min_refills=0, tick_size=0.25)
    assert with_quotes["refills"].notna().all() and len(with_quotes) == len(events)
    assert len(delta_divergence(bars(trades, "10s"), lookback=5)) > 0


def _quotes_for(trades: pd.DataFrame, draw) -> pd.DataFrame:
    """Random bid_ask quotes at the trades' times and contracts."""
    if trades.empty:
        return _bids([]).iloc[:0]
    pick = draw(st.lists(st.integers(0, len(trades) - 1), max_size=25))
    rows = [
        {
            "tick_type": "bid_ask",
            "contract_id": int(trades["contract_id"].iloc[i]),
            "bid_price": 100.0 + 0.25 * draw(st.integers(0, 2)),
            "bid_size": draw(st.sampled_from([1.0, 2.0, 5.0, np.nan])),
            "ask_price": 101.0,
            "ask_size": draw(st.sampled_from([1.0, 3.0])),
            "recv_ns": int(trades.index.asi8[i]),
        }
        for i in sorted(pick)
    ]
    return tick_frame(rows) if rows else _bids([]).iloc[:0]


@settings(max_examples=60, deadline=None)
@given(data=trades_and_cuts(), draw=st.data(), quoted=st.booleans(), ticks=st.integers(0, 2))
def test_the_absorption_engine_equals_the_batch_on_any_split(data, draw, quoted, ticks):
    trades, cuts = data
    book = _quotes_for(trades, draw.draw) if quoted else None
    kwargs = {"min_volume": 3.0, "ticks": ticks, "tick_size": 0.25, "max_gap": "30s"}
    batch = absorption(trades, book, min_refills=0, **kwargs)
    engine = AbsorptionEngine(kwargs["min_volume"], ticks, 0.25, "30s", 0)
    fed, stamps = 0, None if book is None else book.index.asi8
    for part in split(trades, cuts):  # with each part, the quotes up to its last trade
        upto = (
            fed
            if book is None or part.empty
            else int(np.searchsorted(stamps, part.index.asi8[-1], "right"))
        )
        engine.update(part, None if book is None else book.iloc[fed:upto])
        fed = upto
    if book is not None:
        engine.update(trades.iloc[:0], book.iloc[fed:])
    pd.testing.assert_frame_equal(engine.frame(), batch, check_exact=True)


@settings(max_examples=60, deadline=None)
@given(data=trades_and_cuts(), lookback=st.integers(1, 4))
def test_the_divergence_engine_equals_the_batch_on_any_split(data, lookback):
    trades, cuts = data
    closed = bars(trades, "10s")
    engine = DivergenceEngine(lookback)
    parts = [engine.update(part) for part in split(closed, cuts)]
    batch = delta_divergence(closed, lookback)
    pd.testing.assert_frame_equal(pd.concat(parts), batch, check_exact=True)


def test_bars_going_back_in_time_are_refused_and_change_nothing():
    up = _bars_of([10, 11, 12, 13, 14], [9, 10, 11, 12, 13], [1, 2, 3, 2, 9])
    engine = DivergenceEngine(2)
    engine.update(up.iloc[:3])
    with pytest.raises(ValueError, match="bars in time order within a contract"):
        engine.update(up.iloc[:1])
    got = pd.concat([engine.update(up.iloc[3:])])
    pd.testing.assert_frame_equal(got, delta_divergence(up, 2))


def _runs_by_hand(time: list[int], price: list[float], band: float, gap: int) -> list[int]:
    """The run rule trade by trade: a new run where the price leaves the band of the run's
    first trade or after a pause."""
    starts: list[int] = []
    for i, p in enumerate(price):
        if not starts or abs(p - price[starts[-1]]) > band or time[i] - time[i - 1] > gap:
            starts.append(i)
    return starts


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.integers(-3, 3), min_size=1, max_size=300),
    pauses=st.lists(st.integers(0, 400), min_size=300, max_size=300),
    band=st.integers(0, 6),
)
def test_run_starts_follow_the_rule_trade_by_trade(steps, pauses, band):
    from ibstream.analytics.absorption import run_starts

    price = np.cumsum(np.array(steps, dtype=np.float64) * 0.25)
    time = np.cumsum(np.array(pauses[: len(price)], dtype=np.int64))
    got = run_starts(time, price, (band + 1e-6) * 0.25, 350)
    assert got.tolist() == _runs_by_hand(time.tolist(), price.tolist(), (band + 1e-6) * 0.25, 350)
