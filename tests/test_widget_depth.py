"""The dashboard's profile and footprint panels: the window's volume per bar and price level
kept incrementally equals `ibstream.analytics.footprint` of the same bars for any split of
the ticks into steps; POC, value area and imbalances; the `panels` argument; and the panels
drawn live from a real server (simulator -> server -> Client -> dashboard)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibstream.analytics import classify, footprint
from ibstream.analytics.profile import value_area
from ibstream.client.frames import ticks_to_frame
from ibstream.widgets.depth import FOOTPRINT_BARS
from ibstream.widgets.figures import Figures
from ibstream.widgets.levels import SUMS, LevelBook, imbalance_marks
from ibstream.widgets.model import LiveModel
from ibstream.widgets.panels import DEFAULT_PANELS, PANELS, check_panels
from tests.client_fixtures import free_port
from tests.client_fixtures import threaded_server as run_threaded_server
from tests.conftest import Changes
from tests.test_delta import trades_frame
from tests.test_engine import GAPS_NS, SIZES, or_nan
from tests.test_widgets import WAIT, feed_in_batches, market_rows

TICK = 0.25  # ES


def window_footprint(model: LiveModel, rows: list[dict]) -> pd.DataFrame:
    """`analytics.footprint` of every trade, cut to the model's window of bars."""
    trades = classify(ticks_to_frame(rows))
    frame = footprint(trades, model.bar, tick_size=TICK)
    first = model.bars().index[0]
    frame = frame[frame.index >= first]
    return frame.assign(time=frame.index.as_unit("ns").asi8).reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_level_sums_equal_the_footprint_of_the_window_for_any_split(seed):
    rows = market_rows(40_000, seed=seed)  # 40 s through a 10 s window: bars leave it
    model = LiveModel("10s", "1s", levels=True, tick_size=TICK)
    feed_in_batches(model, rows, seed=seed)
    cells, expected = model.levels.frame(), window_footprint(model, rows)
    assert len(expected) > 20 and cells["time"].min() == expected["time"].min()
    assert np.array_equal(cells["time"], expected["time"])
    assert np.array_equal(cells["price"], expected["price"])
    for name in SUMS:
        np.testing.assert_allclose(cells[name], expected[name], rtol=1e-12, err_msg=name)
    profile = expected.groupby("price")[list(SUMS)].sum()
    prices, totals = model.levels.profile()
    traded = totals[:, 3] > 0
    assert np.array_equal(prices[traded], profile.index)
    np.testing.assert_allclose(totals[traded], profile.to_numpy(), rtol=1e-12)
    assert (totals[~traded] == 0).all()  # a level whose trades all left is exactly zero


@st.composite
def trades_cuts_and_start(draw: st.DrawFn) -> tuple[pd.DataFrame, list[int], int]:
    """One contract's trades (NaN prices and sizes, fractional sizes, equal stamps), where
    to cut them into steps, and which of their bars the window starts at."""
    n = draw(st.integers(1, 60))
    seconds = np.cumsum(draw(st.lists(st.sampled_from(GAPS_NS), min_size=n, max_size=n))) / 1e9
    rows = [
        (
            s,
            7,
            draw(or_nan(st.integers(0, 16).map(lambda k: 100.0 + 0.25 * k))),
            draw(or_nan(SIZES)),
            draw(st.sampled_from(["buy", "sell", "neutral"])),
        )
        for s in seconds.tolist()
    ]
    return (
        trades_frame(rows),
        draw(st.lists(st.integers(0, n), max_size=6)),
        draw(st.integers(0, 3)),
    )


@settings(max_examples=80, deadline=None)
@given(data=trades_cuts_and_start(), bar=st.sampled_from([10**9, 5 * 10**9, 60 * 10**9]))
def test_level_book_equals_the_footprint_for_any_split_and_window(data, bar):
    trades, cuts, skip = data
    book = LevelBook(bar, TICK)
    time = trades.index.as_unit("ns").asi8
    size = np.nan_to_num(trades["size"].to_numpy(), nan=0.0)  # as the model: no size, none
    edges = [0, *sorted(cuts), len(trades)]
    for a, b in zip(edges, edges[1:], strict=False):
        book.add(time[a:b], trades["price"].to_numpy()[a:b],
                 trades["side"].cat.codes.to_numpy()[a:b], size[a:b])  # fmt: skip
    starts = np.unique(time - time % bar)
    first = int(starts[min(skip, len(starts) - 1)])
    book.trim(first)
    expected = footprint(trades.assign(size=size), pd.Timedelta(bar), tick_size=TICK)
    expected = expected[expected.index.as_unit("ns").asi8 >= first]
    cells = book.frame()
    assert np.array_equal(cells["time"].to_numpy(np.int64), expected.index.as_unit("ns").asi8)
    assert np.array_equal(cells["price"], expected["price"])
    for name in SUMS:
        np.testing.assert_allclose(cells[name], expected[name], rtol=1e-9, atol=1e-9)
    prices, totals = book.profile()
    traded = totals[:, 3] > 0
    by_level = expected.groupby("price")[list(SUMS)].sum()
    assert np.array_equal(prices[traded], by_level.index)
    np.testing.assert_allclose(totals[traded], by_level.to_numpy(), rtol=1e-9, atol=1e-9)
    assert (totals[~traded] == 0).all()


def test_one_batch_and_tick_by_tick_give_the_same_levels():
    rows = market_rows(1_500, seed=9)
    whole, single = (LiveModel("1s", "100ms", levels=True, tick_size=TICK) for _ in range(2))
    whole.feed(rows)
    for row in rows:
        single.feed([row])
    pd.testing.assert_frame_equal(whole.levels.frame(), single.levels.frame())


def test_work_stays_bounded_by_the_window_after_a_long_session():
    rows = market_rows(120_000, step_ns=5_000_000)  # 10 minutes at 200 ticks/s
    model = LiveModel("10s", "1s", levels=True, tick_size=TICK)
    for at in range(0, len(rows), 2_000):
        model.feed(rows[at : at + 2_000])
    book, plot = model.levels, model.plot()
    assert len(book.bars) <= 11  # the window's bars, the open one included
    window = window_footprint(model, rows[-4_000:])
    span = round((window["price"].max() - window["price"].min()) / TICK) + 1
    assert len(book.totals) == span  # the window's levels, not the session's
    assert plot.footprint.buy.shape[1] == min(FOOTPRINT_BARS, len(book.bars)) == 11


def test_profile_marks_the_point_of_control_and_the_value_area():
    model = LiveModel("1min", "5s", levels=True, tick_size=TICK)
    model.feed(market_rows(20_000, seed=4))
    plot, (prices, totals) = model.plot().profile, model.levels.profile()
    volume = totals[:, :3].sum(axis=1)
    assert (plot.poc, plot.value_low, plot.value_high) == value_area(prices, volume, 0.70)
    assert volume[prices == plot.poc] == volume.max()
    inside = (prices >= plot.value_low) & (prices <= plot.value_high)
    assert volume[inside].sum() >= 0.70 * volume.sum()
    np.testing.assert_allclose(plot.buy.sum() + plot.sell.sum(), totals[:, :2].sum())


def test_value_area_holds_the_poc_and_the_fraction_asked_for():
    """What the panel relies on, whichever `value_area` is installed (its own rules and
    ties are the analytics' tests)."""
    prices = np.arange(100.0, 107.0)
    volume = np.array([1.0, 12, 12, 30, 20, 5, 20])
    poc, low, high = value_area(prices, volume, 0.70)
    assert poc == 103.0 and low <= poc <= high
    inside = (prices >= low) & (prices <= high)
    assert volume[inside].sum() >= 70 and inside.sum() < len(prices)
    assert np.isnan(value_area(prices, np.zeros(7))).all()
    assert np.isnan(value_area(prices[:0], volume[:0])).all()


def test_diagonal_and_stacked_imbalances_of_a_grid():
    # one bar, levels ascending: buy at p against sell a tick below, and the reverse
    buy = np.array([[1.0], [9], [12], [30], [2], [0]])
    sell = np.array([[3.0], [10], [2], [4], [9], [1]])
    buys, sells, buy_stacks, sell_stacks = imbalance_marks(buy, sell)
    # buy 9 vs sell 3 below (3x), 12 vs 10 (no), 30 vs 2 (15x), 2 vs 4 (no); the bar's
    # lowest level has nothing below to compare with (analytics.footprint's rule)
    assert buys[:, 0].tolist() == [False, True, False, True, False, False]
    # sell 9 vs buy 0 above (an untraded side counts as none); the highest level: none above
    assert sells[:, 0].tolist() == [False, False, False, False, True, False]
    assert not buy_stacks.any() and not sell_stacks.any()  # runs of 2 at most
    stacked = imbalance_marks(np.array([[0.0], [6], [7], [8], [0]]), np.ones((5, 1)))[2]
    assert stacked[:, 0].tolist() == [False, True, True, True, False]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_grids_imbalances_are_the_footprints_own(seed):
    """The panel's marks, from the level book's grid, equal the imbalance columns of
    `analytics.footprint` of the same bars, cell for cell."""
    rows = market_rows(20_000, seed=seed)
    model = LiveModel("10s", "1s", levels=True, tick_size=TICK)
    feed_in_batches(model, rows, seed=seed)
    starts, prices, sums = model.levels.grid(FOOTPRINT_BARS)
    marks = imbalance_marks(sums[..., 0], sums[..., 1], sums[..., 3] > 0)
    expected = window_footprint(model, rows)
    expected = expected[expected["time"].isin(starts)]
    bar = np.searchsorted(starts, expected["time"].to_numpy())
    level = np.searchsorted(prices, expected["price"].to_numpy())
    assert np.array_equal(prices[level], expected["price"].to_numpy())
    names = ("buy_imbalance", "sell_imbalance", "stacked_buy", "stacked_sell")
    flagged = 0
    for grid, name in zip(marks, names, strict=True):
        assert np.array_equal(grid[level, bar], expected[name].to_numpy()), name
        assert grid.sum() == expected[name].sum(), name  # nothing flagged off the cells
        flagged += int(grid.sum())
    assert flagged > 0


def test_panels_argument_is_checked_with_the_valid_names():
    assert check_panels(PANELS[::-1]) == PANELS  # shown in the dashboard's order
    assert check_panels("footprint") == ("footprint",)
    with pytest.raises(ValueError, match="'prices'.*price, volume, delta, buy_pct, profile"):
        check_panels(("prices",))
    with pytest.raises(ValueError, match="at least one"):
        check_panels(())
    with pytest.raises(TypeError, match="panels must be a tuple"):
        check_panels(3)
    from ibstream.widgets import dashboard

    with pytest.raises(ValueError, match="unknown panel 'heatmap'"):  # before connecting
        dashboard("ES", f"http://127.0.0.1:{free_port()}", panels=("price", "heatmap"))


def test_default_panels_are_the_four_figures_and_keep_no_levels():
    figures = Figures("USD", min_tick=TICK)
    assert figures.panels == DEFAULT_PANELS
    assert figures.figures == [figures.price, figures.volume, figures.delta, figures.buy_pct]
    assert len(figures.widgets) == 8 and figures.profile is figures.footprint is None
    model = LiveModel("1min", "1s")
    model.feed(market_rows(2_000))
    assert model.levels is None and model.plot().profile is None


def test_only_the_panels_asked_for_are_shown():
    figures = Figures("USD", min_tick=TICK, panels=("footprint", "delta"))
    assert figures.figures == [figures.delta, figures.footprint.figure]
    assert figures.widgets[1::2] == figures.figures
    both = Figures("USD", min_tick=TICK, panels=PANELS)
    row = both.widgets[1]  # the profile stands beside the price chart, under one header
    assert row.children == (both.price, both.profile.figure)
    assert both.widgets == both.widgets and len(both.widgets) == 10
    assert both.profile.bars.scales["x"] is both.price_scale  # one price scale
    marks = both.marks()  # every data mark by name, each with its `y`, for tests to read
    assert {"profile", "footprint"} <= set(marks) and all(hasattr(m, "y") for m in marks.values())


def changed(looks: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Both panels hold volume, and both changed since the first look."""
    if len(looks) < 2 or not looks[-1][0].sum() > 0:
        return False
    (bars0, cells0), (bars1, cells1) = looks[0], looks[-1]
    same_cells = cells0.shape == cells1.shape and np.array_equal(cells0, cells1, equal_nan=True)
    return not same_cells and not (bars0.shape == bars1.shape and (bars0 == bars1).all())


@pytest.fixture
def live_server():
    with run_threaded_server() as server:
        yield server


async def test_live_profile_and_footprint_marks_change_as_ticks_arrive(live_server):
    from ibstream.widgets import dashboard

    dash = dashboard("ES", live_server.url, window="1min", bar="1s", panels=PANELS)
    changes, looks = Changes(), []

    def after_step() -> None:
        profile, cells = dash.figures.profile, dash.figures.footprint
        looks.append((np.array(profile.bars.y, copy=True), np.array(cells.cells.color, copy=True)))
        changes.notify()

    dash.on_refresh(after_step)
    try:
        await changes.until(lambda: changed(looks), WAIT)
        profile, footprint_ = dash.figures.profile, dash.figures.footprint
        prices, totals = dash.model.levels.profile()
        assert np.isfinite(profile.poc.y).all() and len(profile.poc.y) == 2
        assert prices[0] <= profile.poc.y[0] <= prices[-1]
        assert len(footprint_.text.text) > 0 and " × " in footprint_.text.text[0]
        assert np.nansum(np.abs(footprint_.cells.color)) > 0
        assert dash.model.levels.tick == dash.figures.min_tick == TICK
    finally:
        dash.close()
    await dash.ticker.wait_stopped()


def test_quotes_alone_move_the_window_past_old_levels():
    rows = market_rows(3_000)  # 3 s of ticks
    model = LiveModel("10s", "1s", levels=True, tick_size=TICK)
    model.feed(rows)
    assert len(model.levels.bars) > 0
    quote = next(r for r in rows if r["tick_type"] == "bid_ask")
    model.feed([dict(quote, sequence=10**6, recv_ns=rows[-1]["recv_ns"] + 20 * 10**9)])
    assert not model.levels.bars and not len(model.levels.totals)
    assert model.plot().profile.price.size == 0
    figures = Figures("USD", min_tick=TICK, panels=PANELS)
    figures.draw(model.plot())  # an empty window draws (nothing) without an error
    assert len(figures.profile.bars.x) == 0 and len(figures.profile.poc.y) == 0


def test_footprint_figure_marks_a_stacked_run_with_one_segment_per_bar():
    from ibstream.widgets.depth import footprint_plot
    from ibstream.widgets.levels import LevelBook

    book, start = LevelBook(5 * 10**9, TICK), 1_800_000_000_000_000_000
    for bar in range(2):
        for level in range(6):  # buys of 12 over sells of 1 on levels 2-4: a stack of 3
            buys = 6 if level in (2, 3, 4) else 1
            at = start + bar * 5 * 10**9 + 10**9
            book.add(np.full(buys, at), np.full(buys, 100 + level * TICK), np.zeros(buys, int),
                     np.full(buys, 2.0))  # fmt: skip
            book.add(np.array([at]), np.array([100 + level * TICK]), np.ones(1, int), np.ones(1))
    plot = footprint_plot(book)
    assert plot.buy_stacked[:, 0].tolist() == [False, False, True, True, True, False]
    figures = Figures("USD", min_tick=TICK, panels=("footprint",))
    figures.footprint.draw(plot)
    line = figures.footprint.stacks["buy"]
    assert len(line.y) == 5 and np.isnan(line.y[2])  # two segments, a gap between
    assert (line.y[:2] == [100.5 - TICK / 2, 101.25 - TICK / 2]).all()
    assert len(figures.footprint.text.text) == 12 and "1 × 12" in figures.footprint.text.text
