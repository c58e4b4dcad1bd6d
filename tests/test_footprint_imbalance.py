"""Footprint imbalances by hand (diagonal, stacked, unfinished auctions, edges and holes of
the grid), against the per-cell loop of the definition, and `LiveFootprint` on any split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.orderflow_loops import as_cells, footprint_loop, rows_of
from ibstream.analytics import (
    FOOTPRINT_COLUMNS,
    IMBALANCE_COLUMNS,
    DeltaEngine,
    LiveFootprint,
    classify,
    footprint,
)
from ibstream.analytics.footprint import merge_levels, price_levels
from ibstream.analytics.grouping import group_rows
from ibstream.analytics.level_groups import dense_groups, hashed_groups, level_groups
from tests.data import BINANCE, CME, recorded
from tests.test_delta import trades_frame
from tests.test_engine import split, trades_and_cuts

FLAGS = list(IMBALANCE_COLUMNS)
BAR_ONE = [  # price: buy, sell (one minute, contract 1)
    (100.00, 2, 3),  # the low traded both sides: unfinished low
    (100.25, 9, 1),  # 9 >= 3 x 3 (sell at 100.00): a buy imbalance, exactly at the ratio
    (100.50, 4, 0),  # 4 >= 3 x 1
    (100.75, 6, 1),  # 6 against 0 at 100.50: stacked with the two below; sell 1 against 0
    (101.25, 1, 0),  # 101.00 did not trade (0 there): an imbalance, not in the stack
    (101.50, 0, 5),  # the high: no sell imbalance (nothing above), not unfinished (no buy)
]
BAR_TWO = [  # the next minute: a stack of sell imbalances, unfinished high
    (100.00, 0, 7),  # 7 >= 3 x 1 (buy at 100.25)
    (100.25, 1, 8),  # 8 >= 3 x 2
    (100.50, 2, 6),  # 6 >= 3 x 1
    (100.75, 1, 2),  # the high, both sides
]


def bars_of(*bars: list[tuple], contract: int = 1, other: bool = True) -> pd.DataFrame:
    rows, second = [], 0.0
    for minute, bar in enumerate(bars):
        for price, buy, sell in bar:
            for size, side in ((buy, "buy"), (sell, "sell")):
                if size:
                    rows.append((60 * minute + second, contract, price, size, side))
                    second += 0.1
                    if other:  # another contract in between, which must not matter
                        rows.append((60 * minute + second, 9, 5.0, 100, "buy"))
    return trades_frame(rows)


def flags(frame: pd.DataFrame, minute: int = 0, contract: int = 1) -> dict[str, list[bool]]:
    start = pd.Timestamp("2024-07-01 13:30", tz="UTC") + pd.Timedelta(minutes=minute)
    rows = frame[(frame.index == start) & (frame["contract_id"] == contract)]
    return {k: rows[k].tolist() for k in FLAGS}


def test_diagonal_and_stacked_imbalances_and_unfinished_auctions_by_hand():
    got = footprint(bars_of(BAR_ONE, BAR_TWO), tick_size=0.25)
    no, yes = False, True
    assert flags(got, 0) == {
        "buy_imbalance": [no, yes, yes, yes, yes, no],
        "sell_imbalance": [no, no, no, yes, no, no],
        "stacked_buy": [no, yes, yes, yes, no, no],
        "stacked_sell": [no] * 6,
        "unfinished_high": [no] * 6,
        "unfinished_low": [yes] * 6,
    }
    assert flags(got, 1) == {
        "buy_imbalance": [no] * 4,
        "sell_imbalance": [yes, yes, yes, no],
        "stacked_buy": [no] * 4,
        "stacked_sell": [yes, yes, yes, no],
        "unfinished_high": [yes] * 4,
        "unfinished_low": [no] * 4,
    }
    assert got.dtypes.to_dict() == {k: np.dtype(v) for k, v in FOOTPRINT_COLUMNS.items()}
    alone = footprint(bars_of(BAR_ONE, BAR_TWO, other=False), tick_size=0.25)
    pd.testing.assert_frame_equal(got[got["contract_id"] == 1], alone)


def test_thresholds_and_the_level_next_without_a_grid():
    trades = bars_of(BAR_ONE)
    strict = flags(footprint(trades, tick_size=0.25, min_volume=2))
    assert strict["buy_imbalance"] == [False, True, True, True, False, False]  # 101.25: 1 < 2
    assert strict["sell_imbalance"] == [False] * 6  # 100.75: 1 < 2
    wide = flags(footprint(trades, tick_size=0.25, ratio=4))
    assert wide["buy_imbalance"][1] is False  # 9 < 4 x 3
    assert wide["stacked_buy"] == [False] * 6  # two in a row left
    assert flags(footprint(trades, tick_size=0.25, stacked=4))["stacked_buy"] == [False] * 6
    # no tick size known: the diagonal level is the next one that traded (101.25 against 100.75)
    loose = flags(footprint(trades))
    assert loose["buy_imbalance"] == [False, True, True, True, False, False]
    assert loose["sell_imbalance"] == [False] * 6
    assert loose["stacked_buy"] == [False, True, True, True, False, False]


def test_one_level_bars_empty_frames_and_errors():
    one = footprint(trades_frame([(0, 1, 100.0, 3, "buy"), (1, 1, 100.0, 2, "sell")]), tick_size=1)
    assert one[FLAGS].iloc[0].tolist() == [False, False, False, False, True, True]
    empty = footprint(bars_of(BAR_ONE).iloc[:0])
    assert len(empty) == 0
    assert empty.dtypes.to_dict() == {k: np.dtype(v) for k, v in FOOTPRINT_COLUMNS.items()}
    trades = bars_of(BAR_ONE)
    for name, value in (("ratio", 0.5), ("ratio", True), ("min_volume", -1), ("stacked", 1)):
        with pytest.raises(ValueError, match=name):
            footprint(trades, **{name: value})
        with pytest.raises(ValueError, match=name):
            LiveFootprint(**{name: value})
    with pytest.raises(ValueError, match=r"tick frame: call ibstream\.analytics\.classify"):
        footprint(recorded(CME).ticks)


@pytest.mark.parametrize(("name", "tick"), [(CME, 0.25), (BINANCE, 1.0)])
def test_recorded_footprint_equals_the_loop(name, tick):
    trades = classify(recorded(name).ticks)
    got = footprint(trades, "1min", tick)
    columns = ["buy_volume", "sell_volume", *FLAGS]
    loop = footprint_loop(rows_of(trades), 60 * 10**9, tick, 3.0, 0.0, 3)
    assert as_cells(got, columns) == loop
    assert got[FLAGS].to_numpy().any()  # something to compare


@settings(max_examples=60, deadline=None)
@given(
    data=trades_and_cuts(),
    interval=st.sampled_from(["1s", "30s", "1min"]),
    tick_size=st.sampled_from([None, 0.25, 0.5]),
    ratio=st.sampled_from([1.0, 1.5, 3.0]),
    min_volume=st.sampled_from([0.0, 2.0]),
    stacked=st.sampled_from([2, 3]),
)
def test_live_footprint_equals_batch_and_loop_on_any_split(
    data, interval, tick_size, ratio, min_volume, stacked
):
    trades, cuts = data
    kwargs = {"ratio": ratio, "min_volume": min_volume, "stacked": stacked}
    live = LiveFootprint(interval, tick_size, **kwargs)
    for part in split(trades, cuts):
        live.update(part)
    want = footprint(trades, interval, tick_size, **kwargs)
    pd.testing.assert_frame_equal(live.frame(), want, check_exact=True)
    step = pd.Timedelta(interval).value
    loop = footprint_loop(rows_of(trades), step, tick_size, ratio, min_volume, stacked)
    assert as_cells(want, ["buy_volume", "sell_volume", *FLAGS]) == loop


def test_delta_engine_footprint_carries_the_imbalances():
    trades = bars_of(BAR_ONE, BAR_TWO)
    engine = DeltaEngine(tick_size=0.25, max_bars=1)
    engine.feed_trades(trades)
    newest = footprint(trades, tick_size=0.25)
    newest = newest[newest.index == newest.index.max()]
    pd.testing.assert_frame_equal(engine.footprint(), newest, check_exact=True)
    assert engine.footprint()["stacked_sell"].any()


def test_cells_off_the_grid_are_grouped_by_price_not_by_step():
    """Grouping by grid step is a shortcut: prices that share a step but differ (not on the
    grid) stay apart, as grouping by price keeps them."""
    cells = {
        "time": np.zeros(4, dtype=np.int64),
        "contract_id": np.ones(4, dtype=np.int64),
        "price": np.array([1.2, 1.0, 1.2, 3.0]),
        "buy_volume": np.array([1.0, 2.0, 3.0, 4.0]),
        "sell_volume": np.zeros(4),
        "neutral_volume": np.zeros(4),
        "trade_count": np.ones(4, dtype=np.int64),
    }
    on_grid = merge_levels(cells | {"tick": np.full(4, 1.0)})
    no_grid = merge_levels(cells | {"tick": np.full(4, np.nan)})
    assert on_grid["price"].tolist() == no_grid["price"].tolist() == [1.0, 1.2, 3.0]
    assert on_grid["buy_volume"].tolist() == no_grid["buy_volume"].tolist() == [2.0, 4.0, 4.0]
    assert on_grid["trade_count"].tolist() == [1, 2, 1]


@st.composite
def cell_keys(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(0, 700))
    bars = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    time = np.array(bars, dtype=np.int64) * 60 * 10**9
    if draw(st.booleans()):
        time = np.sort(time)  # in arrival order, as bars of one contract come
    contract = np.array(draw(st.lists(st.sampled_from([7, 3, 11]), min_size=n, max_size=n)))
    steps = draw(st.lists(st.integers(-40, 40), min_size=n, max_size=n))
    price = np.array(steps, dtype=np.float64) * 0.25
    if n and draw(st.booleans()):
        price[: n // 3] += 0.1  # off the grid
    tick = np.full(n, draw(st.sampled_from([0.25, 0.5, np.nan])))
    return time, contract.astype(np.int64), price, tick


@settings(max_examples=150, deadline=None)
@given(keys=cell_keys())
def test_every_way_of_grouping_cells_equals_sorting_them(keys):
    """The table and hashing shortcuts of `level_groups` number and key the groups exactly
    as sorting the rows does (the small inputs of the other tests are simply sorted)."""
    time, contract, price, tick = keys
    want = group_rows(time, contract, price)
    ways = [level_groups(*keys), hashed_groups(time, contract, price)]
    dense = dense_groups(*keys)
    ways += [dense] if dense is not None else []
    if len(price) >= 300 and (price == price_levels(price, 0.25)).all() and tick[0] == 0.25:
        assert dense is not None  # on the grid, within the table's bound: the table is used
    for codes, got, rows in ways:
        assert codes.tolist() == want.codes.tolist()
        for a, b in zip(got, want.keys, strict=True):
            assert a.tolist() == b.tolist()
        for a, b in zip((time, contract, price), want.keys, strict=True):
            assert a[rows].tolist() == b.tolist()
