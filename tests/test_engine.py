"""The incremental DeltaEngine equals the batch functions exactly, on any split of the ticks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.analytics import classify
from ibstream.analytics.bars import bars
from ibstream.analytics.delta import cumulative_delta, rolling, summary
from ibstream.analytics.engine import DeltaEngine
from ibstream.analytics.footprint import footprint
from ibstream.client.frames import ticks_to_frame
from tests.data import BINANCE, CME, recorded
from tests.test_delta import T0, trades_frame

T0_NS = T0.value
GAPS_NS = [0, 0, 1_000_000, 400_000_000, 7 * 10**9, 30 * 10**9, 31 * 10**9, 61 * 10**9]
SIZES = st.one_of(st.integers(1, 50).map(float), st.floats(0.001, 1000.0))


def or_nan(values: st.SearchStrategy) -> st.SearchStrategy:
    """A value or, now and then, NaN: a trade without a price or size (wire rows omit nulls)."""
    return st.one_of(values, values, values, st.just(np.nan))


def assert_engine_equals_batch(engine: DeltaEngine, trades: pd.DataFrame) -> None:
    """Every read of the engine against the batch function on all `trades`, bit for bit."""
    exact = {"check_exact": True}
    pd.testing.assert_frame_equal(engine.summary(), summary(trades), **exact)
    cum = cumulative_delta(trades).groupby(trades["contract_id"].to_numpy()).last()
    pd.testing.assert_series_equal(
        engine.cumulative_delta, cum.rename_axis("contract_id"), check_index_type=False, **exact
    )
    last = rolling(trades, engine.window).groupby("contract_id").tail(1)
    pd.testing.assert_frame_equal(
        engine.rolling(), last.sort_values("contract_id", kind="stable"), **exact
    )
    interval = engine.bar_interval
    pd.testing.assert_frame_equal(engine.bars(), bars(trades, interval), **exact)
    cells = footprint(trades, interval, engine.tick_size)
    pd.testing.assert_frame_equal(engine.footprint(), cells, **exact)


def split(frame: pd.DataFrame, cuts: list[int]) -> list[pd.DataFrame]:
    edges = [0, *sorted(cuts), len(frame)]
    return [frame.iloc[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@st.composite
def trades_and_cuts(draw: st.DrawFn) -> tuple[pd.DataFrame, list[int]]:
    n = draw(st.integers(0, 40))
    gaps = draw(st.lists(st.sampled_from(GAPS_NS), min_size=n, max_size=n))
    seconds = (np.cumsum(gaps) / 1e9).tolist()
    rows = [
        (
            s,
            draw(st.sampled_from([1, 2, 3])),
            draw(or_nan(st.integers(0, 16).map(lambda k: 100.0 + 0.25 * k))),
            draw(or_nan(SIZES)),
            draw(st.sampled_from(["buy", "sell", "neutral"])),
        )
        for s in seconds
    ]
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    return trades_frame(rows), cuts


@settings(max_examples=60, deadline=None)
@given(
    data=trades_and_cuts(),
    window=st.sampled_from(["1s", "30s", "60s"]),
    interval=st.sampled_from(["1s", "10s", "1min"]),
    tick_size=st.sampled_from([None, 0.5]),
)
def test_engine_equals_batch_on_trades_in_any_split(data, window, interval, tick_size):
    trades, cuts = data
    engine = DeltaEngine(window=window, bar_interval=interval, tick_size=tick_size)
    for part in split(trades, cuts):
        engine.feed_trades(part)
    assert_engine_equals_batch(engine, trades)


@st.composite
def wire_rows_and_cuts(draw: st.DrawFn) -> tuple[list[dict], list[int]]:
    n = draw(st.integers(0, 50))
    stamp, rows = T0_NS, []
    for _ in range(n):
        stamp += draw(st.sampled_from(GAPS_NS))
        row = {"contract_id": draw(st.sampled_from([11, 12])), "recv_ns": stamp}
        level = 100.0 + 0.25 * draw(st.integers(0, 12))
        if draw(st.booleans()):
            spread = 0.25 * draw(st.integers(0, 2))
            row |= {"tick_type": "bid_ask", "bid_price": level, "ask_price": level + spread}
            row |= {"bid_size": draw(SIZES), "ask_size": draw(SIZES)}
            if draw(st.integers(0, 5)) == 0:  # an empty side, as IB reports it
                row |= {draw(st.sampled_from(["bid", "ask"])) + s: 0.0 for s in ("_price", "_size")}
        else:
            row |= {"tick_type": draw(st.sampled_from(["last", "all_last", "AllLast"]))}
            row |= {"price": level, "size": draw(SIZES)}
            for key in ("price", "size"):
                if draw(st.integers(0, 7)) == 0:
                    del row[key]
        rows.append(row)
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    return rows, cuts


def ticks_and_cuts() -> st.SearchStrategy:
    return wire_rows_and_cuts().map(lambda drawn: (ticks_to_frame(drawn[0]), drawn[1]))


@pytest.mark.filterwarnings("ignore::ibstream.analytics.DoubleCountWarning")  # mixes both
@settings(max_examples=40, deadline=None)
@given(data=ticks_and_cuts(), method=st.sampled_from(["quote", "tick", "lee_ready"]))
def test_engine_fed_ticks_equals_classify_then_batch(data, method):
    ticks, cuts = data
    engine = DeltaEngine(method=method, window="30s", bar_interval="10s", tick_size=0.5)
    for part in split(ticks, cuts):
        engine.feed(part)
    trades = classify(ticks, method)
    pd.testing.assert_frame_equal(engine.trades, trades, check_exact=True)
    assert_engine_equals_batch(engine, trades)


@pytest.mark.filterwarnings("ignore::ibstream.analytics.DoubleCountWarning")  # mixes both
@settings(max_examples=60, deadline=None)
@given(
    data=wire_rows_and_cuts(),
    method=st.sampled_from(["quote", "tick", "lee_ready"]),
    as_rows=st.lists(st.booleans(), min_size=7, max_size=7),
    join_at=st.sampled_from([1, 3, 4096]),
)
def test_wire_rows_tick_by_tick_and_frames_in_any_mix_equal_the_batch(
    data, method, as_rows, join_at
):
    """The per-tick path (`feed_rows`, trades joined to the vectorised state now and then)
    and frames, mixed in any way, give the batch numbers; `now` the last rows of them."""
    rows, cuts = data
    engine = DeltaEngine(method=method, window="30s", bar_interval="10s", tick_size=0.5)
    engine.join_at = join_at
    edges = [0, *sorted(cuts), len(rows)]
    for (a, b), wire in zip(zip(edges, edges[1:], strict=False), as_rows, strict=False):
        if wire:
            for row in rows[a:b]:  # one tick a time, as a live feed
                engine.feed_rows(row)
        else:
            engine.feed(ticks_to_frame(rows[a:b]) if b > a else rows[a:b])
    trades = classify(ticks_to_frame(rows), method)
    for c, mine in trades.groupby("contract_id"):
        now = engine.now(c)
        window = rolling(mine, "30s").iloc[-1]
        assert now.time == mine.index[-1].value
        assert now.cumulative_delta == cumulative_delta(mine).iloc[-1]
        assert list(now.window) == window[
            ["buy_volume", "sell_volume", "neutral_volume"]
        ].tolist() + [window["trade_count"]]
    assert_engine_equals_batch(engine, trades)
    pd.testing.assert_frame_equal(
        engine.trades, trades, check_exact=True, check_index_type=len(trades) > 0
    )


@pytest.mark.parametrize(("name", "tick_size"), [(BINANCE, 1.0), (CME, 0.25)])
def test_engine_equals_batch_on_recorded_data_in_many_batches(name, tick_size):
    data = recorded(name)
    engine = DeltaEngine(bar_interval="1min", window="60s", tick_size=tick_size)
    rng = np.random.default_rng(5)
    cuts = rng.choice(len(data.ticks), size=300, replace=False).tolist()
    for part in split(data.ticks, cuts):
        engine.feed(part)
    trades = classify(data.ticks)
    assert len(trades) == len(data.truth) and engine.summary()["total_trades"].sum() == len(trades)
    assert_engine_equals_batch(engine, trades)


def _steady_trades(n: int, seconds: float, contracts: int = 2) -> pd.DataFrame:
    step = seconds / n
    sides = ["buy", "sell", "neutral"]
    return trades_frame(
        [
            (i * step, 1 + i % contracts, 100 + (i % 7) * 0.25, 1 + i % 5, sides[i % 3])
            for i in range(n)
        ]
    )


def test_memory_stays_bounded_and_bars_are_the_newest():
    trades = _steady_trades(3000, 2 * 3600)  # a trade every 2.4 s for two hours
    engine = DeltaEngine(window="60s", max_bars=5, max_trades=100)
    for part in np.array_split(np.arange(len(trades)), 300):
        engine.feed_trades(trades.iloc[part])
    held = engine.retained
    assert held["window_trades"] <= 2 * (60 / 2.4 / 2 + 1)
    assert held["bars"] <= 2 * 5 + 2 * 33 and held["trades"] <= 200
    newest = bars(trades).groupby("contract_id").tail(5)
    pd.testing.assert_frame_equal(engine.bars(), newest, check_exact=True)
    assert engine.retained["bars"] == 10  # reading compacts to exactly max_bars per contract
    cells = footprint(trades)
    kept = cells.index >= newest.index.min()
    pd.testing.assert_frame_equal(engine.footprint(), cells[kept], check_exact=True)
    pd.testing.assert_frame_equal(engine.trades, trades.iloc[-100:])
    pd.testing.assert_frame_equal(engine.summary(), summary(trades), check_exact=True)


def test_trades_going_back_in_time_are_refused_and_change_nothing():
    trades = _steady_trades(40, 120)
    engine = DeltaEngine()
    engine.feed_trades(trades.iloc[10:20])
    before = (engine.summary(), engine.bars(), engine.rolling())
    with pytest.raises(ValueError, match="go back within contract.*1, 2"):
        engine.feed_trades(trades.iloc[[20, 21, 5, 6]])
    with pytest.raises(ValueError, match="go back within contract.*1"):
        engine.feed_trades(trades.iloc[[30, 28]])
    for got, then in zip((engine.summary(), engine.bars(), engine.rolling()), before, strict=True):
        pd.testing.assert_frame_equal(got, then)
    engine.feed_trades(trades.iloc[20:])  # the same contracts in order: accepted
    assert_engine_equals_batch(engine, trades.iloc[10:])


def test_wire_rows_and_frames_feed_alike():
    rows = [
        {"contract_id": 5, "tick_type": "bid_ask", "recv_ns": T0_NS, "bid_price": 99.75}
        | {"ask_price": 100.0, "bid_size": 3.0, "ask_size": 4.0},
        {"contract_id": 5, "tick_type": "last", "recv_ns": T0_NS + 1, "price": 100.0, "size": 2.0},
        {"contract_id": 5, "tick_type": "last", "recv_ns": T0_NS + 2, "price": 99.75, "size": 5.0},
    ]
    by_rows, by_frame = DeltaEngine(method="quote"), DeltaEngine(method="quote")
    first = by_rows.feed(rows[:2])  # rows in, records out: no frame built per call
    assert [type(t).__name__ for t in first] == ["Trade"] and len(by_rows.feed(rows[2])) == 1
    by_frame.feed(ticks_to_frame(rows))
    pd.testing.assert_frame_equal(by_rows.summary(), by_frame.summary())
    assert by_rows.summary().loc[5, ["buy_volume", "sell_volume"]].tolist() == [2.0, 5.0]
    pd.testing.assert_frame_equal(by_rows.bars(), by_frame.bars())


def test_a_fresh_engine_reads_empty_frames_with_dtypes():
    engine = DeltaEngine()
    engine.feed(ticks_to_frame([]))
    empty = classify(ticks_to_frame([]))
    assert_engine_equals_batch(engine, empty)
    pd.testing.assert_frame_equal(engine.trades, empty)
    assert engine.retained == {"window_trades": 0, "bars": 0, "footprint_cells": 0, "trades": 0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": "later"}, "window"),
        ({"bar_interval": 0}, "interval"),
        ({"max_bars": 0}, "max_bars"),
        ({"max_trades": 2.5}, "max_trades"),
        ({"tick_size": -1}, "tick_size"),
        ({"method": "astrology"}, "method"),
    ],
)
def test_bad_engine_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeltaEngine(**kwargs)


def test_a_refused_batch_does_not_move_the_classifier_on():
    quote = {"contract_id": 1, "tick_type": "bid_ask", "bid_price": 99.0, "ask_price": 101.0}
    trade = {"contract_id": 1, "tick_type": "last", "price": 101.0, "size": 1.0}
    engine = DeltaEngine()
    engine.feed([{**quote, "recv_ns": T0_NS}, {**trade, "recv_ns": T0_NS + 1}])
    state = engine.classifier.state
    bad = [
        {**quote, "bid_price": 100.0, "recv_ns": T0_NS + 2},
        {**trade, "size": np.inf, "recv_ns": T0_NS + 3},
    ]
    with pytest.raises(ValueError, match="infinite sizes"):
        engine.feed(bad)
    pd.testing.assert_frame_equal(engine.classifier.state, state)
    assert engine.classifier.trades_seen == 1 and engine.summary()["total_trades"].tolist() == [1]


def test_the_live_window_leaves_out_a_trade_exactly_one_window_back():
    rows = [
        {"contract_id": 5, "tick_type": "last", "price": 10.0, "size": s, "recv_ns": T0_NS + t}
        for s, t in ((1.0, 0), (2.0, 30 * 10**9), (4.0, 30 * 10**9 + 1))
    ]
    engine = DeltaEngine(method="tick", window="30s")
    windows = rolling(classify(ticks_to_frame(rows), "tick"), "30s")
    columns = ["buy_volume", "sell_volume", "neutral_volume", "trade_count"]
    for row, (_, window) in zip(rows, windows.iterrows(), strict=True):
        engine.feed_rows(row)
        assert engine.now(5).window == tuple(window[columns])
    assert windows["trade_count"].tolist() == [1, 1, 2]
