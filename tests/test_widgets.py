"""The live dashboard: its data side on synthetic ticks, and the whole widget against a real
server (simulator -> server -> sync Client -> dashboard), without a browser."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from ibstream.analytics import bars, classify
from ibstream.client.frames import TICK_COLUMNS, conform_ticks, ticks_to_frame
from ibstream.errors import ContractNotFound, ErrorCode, StreamConnectionError
from ibstream.gateway.contracts import BUILTIN_BY_CON_ID, SimContract
from ibstream.gateway.market import Market, Quote
from ibstream.server.run import ServerHandle
from ibstream.widgets.model import LiveModel
from ibstream.widgets.schedule import Inbox, Ticker
from ibstream.widgets.series import Buckets
from ibstream.widgets.status import Status, problem
from tests.client_fixtures import free_port
from tests.client_fixtures import threaded_server as run_threaded_server
from tests.conftest import Changes, get_json

ES = 637533641
START = 1_800_000_000_000_000_000
WAIT = 20.0


def market_rows(
    n: int, *, seed: int = 5, step_ns: int = 1_000_000, contract: SimContract | None = None
) -> list[dict]:
    """`n` simulated quotes and trades of `contract` (ES) as wire tick rows, `step_ns` apart."""
    contract = contract or BUILTIN_BY_CON_ID[ES]
    events = Market(contract, seed=seed, bursts=False).step(n, START / 1e9)
    rows = []
    for i, e in enumerate(events):
        row = {"contract_id": contract.con_id, "sequence": i + 1, "recv_ns": START + i * step_ns}
        if isinstance(e, Quote):
            row |= {"tick_type": "bid_ask", "bid_price": e.bid, "ask_price": e.ask}
            row |= {"bid_size": e.bid_size, "ask_size": e.ask_size}
        else:
            row |= {"tick_type": "last", "price": e.price, "size": e.size}
            row["exchange"] = contract.exchange
        rows.append(row)
    return rows


def feed_in_batches(model: LiveModel, rows: list[dict], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    at = 0
    while at < len(rows):
        size = int(rng.integers(1, 400))
        batch = rows[at : at + size]  # wire rows (the dashboard's way) or a frame
        model.feed(batch if rng.integers(2) else ticks_to_frame(batch))
        at += size


# -- the data side ---------------------------------------------------------------------


def test_buckets_equal_a_groupby_of_all_rows_whatever_the_batches():
    rng = np.random.default_rng(3)
    time = START + np.cumsum(rng.integers(0, 40_000_000, 3_000))
    volume, price = rng.integers(1, 9, 3_000).astype(float), rng.normal(100, 1, 3_000)
    b = Buckets(100_000_000, 10**12, sums=("volume",), lasts=("price",))
    cuts = np.sort(rng.choice(np.arange(1, 3_000), 40, replace=False))
    for part in np.split(np.arange(3_000), cuts):
        b.add(time[part], volume=volume[part], price=price[part])
    key = time // 100_000_000
    expected = pd.DataFrame({"k": key, "v": volume, "p": price, "t": time}).groupby("k")
    assert (b.key == expected.size().index).all()
    assert np.array_equal(b["volume"], expected["v"].sum())
    assert np.array_equal(b["price"], expected["p"].last())
    assert np.array_equal(b.time, expected["t"].last())


def test_model_trades_and_bars_equal_the_batch_analytics():
    rows = market_rows(20_000)  # 20 s of ticks, all inside the 1 min window
    model = LiveModel("1min", "1s")
    feed_in_batches(model, rows)
    ticks = ticks_to_frame(rows)
    pd.testing.assert_frame_equal(model.ticks(), ticks)
    trades = classify(ticks)
    pd.testing.assert_frame_equal(model.trades(), trades)
    pd.testing.assert_frame_equal(model.bars(), bars(trades, "1s"))
    plot = model.plot()
    assert (plot.buy >= 0).all() and (plot.sell <= 0).all() and (plot.sell < 0).any()
    assert np.array_equal(plot.buy, model.bars()["buy_volume"])
    assert np.array_equal(plot.sell, -model.bars()["sell_volume"])
    signed = np.where(trades["side"] == "buy", trades["size"], 0.0)
    signed -= np.where(trades["side"] == "sell", trades["size"], 0.0)
    assert plot.delta[-1] == model.cumulative_delta == signed.sum()


def test_plot_size_is_bounded_by_the_window_not_by_the_ticks():
    model = LiveModel("10s", "1s", points=100)
    feed_in_batches(model, market_rows(60_000))  # 60 s at 1,000 ticks/s
    plot = model.plot()
    lines = [plot.quote_time, plot.delta_time, *(t for t, _, _ in plot.trades.values())]
    assert all(0 < len(x) <= 101 for x in lines[:3])
    assert all(len(x) <= 101 for x in lines)
    assert len(plot.bar_time) <= 11
    assert plot.end - plot.start == np.timedelta64(10, "s")
    assert (plot.quote_time >= plot.start).all() and (plot.delta_time >= plot.start).all()
    assert 9_000 <= len(model.ticks()) <= 10_000  # the window's ticks only
    assert model.engine.retained["bars"] <= 11


def test_configure_reclassifies_the_window_with_the_new_method():
    rows = market_rows(6_000)
    model = LiveModel("1min", "5s")
    feed_in_batches(model, rows)
    model.configure(method="tick", bar="1s")
    expected = classify(ticks_to_frame(rows), "tick")
    pd.testing.assert_frame_equal(model.trades(), expected)
    pd.testing.assert_frame_equal(model.bars(), bars(expected, "1s"))
    assert model.method == "tick" and model.ticks_fed == len(rows)
    with pytest.raises(ValueError, match="unknown classification method"):
        model.configure(method="coin flip")
    with pytest.raises(ValueError, match="duration"):
        model.configure(window="soon")


def test_a_batch_the_engine_rejects_leaves_the_model_as_without_it():
    rows = market_rows(3_000)
    bad = [dict(r) for r in rows[1_000:1_100]]
    next(r for r in bad if r["tick_type"] == "last")["size"] = math.inf
    model, clean = LiveModel("1min", "1s"), LiveModel("1min", "1s")
    model.feed(rows[:1_000])
    with pytest.raises(ValueError, match="infinite"):
        model.feed(bad)
    model.feed(rows[1_100:])
    clean.feed(rows[:1_000] + rows[1_100:])
    assert model.rejected == 100 and "100 ticks rejected" in model.problem
    assert "infinite" in model.problem and clean.problem == ""
    pd.testing.assert_frame_equal(model.ticks(), clean.ticks())
    pd.testing.assert_frame_equal(model.trades(), clean.trades())
    pd.testing.assert_frame_equal(model.bars(), clean.bars())
    assert model.ticks_fed == clean.ticks_fed == 2_900
    model.configure(method="tick")  # rebuilds from the window: the bad batch is not in it
    assert model.ticks_fed == 2_900 and model.method == "tick"


def test_stamps_that_go_back_are_held_at_the_last_one():
    rows = market_rows(200)
    rows[150]["recv_ns"] = START  # a clock step back
    model = LiveModel("1min", "1s")
    model.feed(rows[:100])
    model.feed(rows[100:])
    stamps = model.ticks().index.asi8
    assert (np.diff(stamps) >= 0).all() and stamps[150] == rows[149]["recv_ns"]


def test_inbox_bounds_the_pending_ticks_and_counts_the_rest():
    inbox = Inbox(limit=3)
    for i in range(5):
        inbox.put({"i": i})
    assert inbox.received == 5 and inbox.dropped == 2
    assert [t["i"] for t in inbox.take()] == [0, 1, 2] and inbox.take() == []


def test_status_text_names_what_a_person_needs():
    status = Status("ESZ6", "reconnecting", "sse", 1234, 56, 2.5, 1, 2, paused=True)
    text = status.text()
    for part in ("ESZ6", "reconnecting (sse)", "ticks 1234", "last tick 2.5 s ago",
                 "reconnects 1", "gaps 2", "PAUSED"):  # fmt: skip
        assert part in text
    error = ContractNotFound(ErrorCode.CONTRACT_NOT_FOUND, "no contract for 'NOSUCH'")
    assert problem(error, False, 0) == f"stream error {error.code}: no contract for 'NOSUCH'"
    assert problem(None, False, 0) == "the server ended the stream"
    assert problem(None, True, 2) == "redraw failed 2 time(s); see the log"
    assert problem(None, True, 0) == ""


def test_a_ticker_without_a_running_loop_steps_on_a_thread_until_stopped():
    stepped = threading.Event()
    ticker = Ticker(stepped.set, interval=0.01)
    ticker.start()
    assert stepped.wait(WAIT) and ticker.mode == "thread" and ticker.running
    ticker.stop()
    assert not ticker.running
    assert "ibstream-dashboard" not in [t.name for t in threading.enumerate()]


# -- the dashboard against a real server -------------------------------------------------


@pytest.fixture
def live_server() -> Iterator[ServerHandle]:
    """A server on its own thread: `dashboard()` blocks the calling loop while it subscribes."""
    with run_threaded_server() as server:
        yield server


def arrays(dash) -> dict[str, np.ndarray]:
    return {name: np.array(mark.y, copy=True) for name, mark in dash.figures.marks().items()}


async def test_dashboard_draws_live_data_and_its_controls_work(live_server, tmp_path):
    from ibstream.widgets import dashboard

    dash = dashboard("ES", live_server.url, window="1min", bar="1s")
    changes, drawn = Changes(), []

    def after_step() -> None:  # on the kernel's loop, right after the step: a consistent look
        if not drawn or drawn[-1][0] != dash.redraws:
            marks = dash.figures.marks()
            drawn.append((dash.redraws, arrays(dash), marks["buy_volume"].x, dash.model.bars()))
        changes.notify()

    dash.on_refresh(after_step)
    try:
        assert dash.ticker.mode == "asyncio"
        await changes.until(lambda: len(drawn) >= 2 and len(drawn[-1][3]) >= 2, WAIT)
        (_, first, _, _), (_, second, bar_x, shown_bars) = drawn[0], drawn[-1]
        assert all(len(second[k]) for k in ("band", "delta", "buy_volume", "sell_volume"))
        assert any(not np.array_equal(first[k], second[k]) for k in first)
        assert np.array_equal(second["buy_volume"], shown_bars["buy_volume"])
        assert np.array_equal(second["sell_volume"], -shown_bars["sell_volume"])
        assert (second["buy_volume"] >= 0).all() and (second["sell_volume"] <= 0).all()
        assert len(bar_x) == len(shown_bars)
        ticks_shown = int(dash.status.text.split("ticks ")[1].split(" ")[0])
        assert 0 < ticks_shown <= dash.inbox.received

        dash.controls.frames.click()  # "to DataFrame"
        ticks, trades, frame_bars = dash.to_frames()
        assert list(ticks.columns) == list(TICK_COLUMNS) and len(ticks) > 0
        assert dict(ticks.dtypes) == TICK_COLUMNS
        pd.testing.assert_frame_equal(trades, classify(ticks))
        pd.testing.assert_frame_equal(frame_bars, bars(trades, "1s"))
        assert "dashboard.ticks" in dash.controls.message.value

        dash.controls.path.value = str(tmp_path / "es")  # "save Parquet"
        dash.controls.save.click()
        assert str(tmp_path / "es.parquet") in dash.controls.message.value
        saved = pd.read_parquet(tmp_path / "es.parquet")
        assert f"saved {len(saved)} ticks" in dash.controls.message.value
        now = dash.ticks  # the window so far began before the save and goes on after it
        pd.testing.assert_frame_equal(saved, now.iloc[: len(saved)])
        assert len(now) >= len(saved) >= len(ticks)
        saved_bars = pd.read_parquet(tmp_path / "es.bars.parquet")
        assert list(saved_bars.columns) == list(dash.bars.columns) and len(saved_bars)

        dash.controls.method.value = "tick"  # re-classifies the window
        assert dash.model.method == "tick" and "re-classified" in dash.controls.message.value
        ticks, trades, _ = dash.to_frames()
        pd.testing.assert_frame_equal(trades, classify(ticks, "tick"))
    finally:
        dash.close()
    await dash.ticker.wait_stopped()
    assert not dash.ticker.running
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "ibstream-dashboard"]
    assert not dash.stream.active and dash.client.state == "closed"
    assert "closed" in dash.status.text
    assert dash.comm is None and dash.figures.price.comm is None  # gone from the page


async def test_ticks_trades_and_bars_are_current_without_pressing_a_button(live_server):
    from ibstream.widgets import dashboard

    dash = dashboard("ES", live_server.url, window="1min", bar="1s")
    changes = Changes()
    dash.on_refresh(changes.notify)
    try:
        await changes.until(lambda: dash.model.trades_fed >= 5, WAIT)
        ticks, trades, shown = dash.ticks, dash.trades, dash.bars  # no button pressed
        assert dict(ticks.dtypes) == TICK_COLUMNS and len(ticks) >= 10
        assert len(trades) >= 5 and shown["trade_count"].sum() >= 5
        received = dash.inbox.received
        await changes.until(lambda: dash.inbox.received >= received + 20, WAIT)
        later = dash.ticks  # read again: it has what arrived since, taken in on reading
        assert len(later) >= len(ticks) + 20
        both, classified, _ = dash.to_frames()
        pd.testing.assert_frame_equal(classified, classify(both))
    finally:
        dash.close()
    await dash.ticker.wait_stopped()


async def test_pause_keeps_receiving_and_stops_redraws(live_server):
    from ibstream.widgets import dashboard

    dash = dashboard("ES", live_server.url, window="1min", bar="1s")
    changes = Changes()
    dash.on_refresh(changes.notify)
    try:
        await changes.until(lambda: dash.redraws >= 1, WAIT)
        dash.controls.pause.value = True  # the Pause button
        assert dash.paused and dash.controls.pause.description == "Resume"
        redraws, before = dash.redraws, arrays(dash)
        fed, received = dash.model.ticks_fed, dash.inbox.received
        await changes.until(lambda: dash.model.ticks_fed >= fed + 50, WAIT)
        assert dash.redraws == redraws and dash.inbox.received >= received + 50
        after = arrays(dash)
        assert all(np.array_equal(before[k], after[k]) for k in before)
        assert "PAUSED" in dash.status.text
        dash.resume()
        await changes.until(lambda: dash.redraws > redraws, WAIT)
        assert len(dash.figures.delta_line.y) > 0
        assert len(dash.to_frames()[0]) >= fed + 50  # nothing was lost while paused
    finally:
        dash.close()
    await dash.ticker.wait_stopped()


async def test_errors_surface_in_the_cell(live_server):
    from ibstream.widgets import dashboard

    with pytest.raises(ContractNotFound):
        dashboard("NOSUCH", live_server.url)
    with pytest.raises(StreamConnectionError, match="ensure_server"):
        dashboard("ES", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ValueError, match="duration"):
        dashboard("ES", live_server.url, window="a while")
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "ibstream-dashboard"]


def test_dashboard_in_a_plain_script_steps_on_a_thread(live_server):
    from ibstream.widgets import dashboard

    dash = dashboard("ES", live_server.url, window="1min", bar="1s")
    drawn = threading.Event()
    dash.on_refresh(lambda: dash.redraws >= 2 and drawn.set())
    try:
        assert dash.ticker.mode == "thread"
        assert drawn.wait(WAIT)
        dash.refresh()  # by hand, alongside the thread
        assert len(dash.figures.band.x) > 0
    finally:
        dash.close()
    assert not dash.ticker.running
    assert "ibstream-dashboard" not in [t.name for t in threading.enumerate()]


def test_a_rejected_batch_is_reported_and_the_dashboard_keeps_going(live_server):
    from ibstream.widgets import dashboard

    dash = dashboard("ES", live_server.url, window="1min", bar="1s")
    stepped = threading.Event()
    dash.on_refresh(stepped.set)
    try:
        assert stepped.wait(WAIT)
        bad = {"contract_id": ES, "sequence": 0, "recv_ns": time.time_ns(), "tick_type": "last"}
        dash.inbox.put(bad | {"price": 5000.0, "size": math.inf, "exchange": "CME"})
        dash.refresh()  # whichever step took it, the model says why from now on
        assert dash.model.rejected >= 1 and "infinite" in dash.model.problem
        assert "ticks rejected by the analytics" in dash.status.text
        assert "infinite" in dash.controls.message.value
        fed, redraws = dash.model.ticks_fed, dash.redraws
        done = threading.Event()
        dash.on_refresh(
            lambda: dash.redraws > redraws and dash.model.ticks_fed > fed and done.set()
        )
        assert done.wait(WAIT) and not dash.ticker.failures
    finally:
        dash.close()


async def connections_become(server: ServerHandle, count: int) -> None:
    """Ask /ws/stats until the server counts `count` connections (each ask is awaited)."""
    async with asyncio.timeout(WAIT):
        while (await get_json(server, "/ws/stats"))[1]["connections"] != count:
            pass


async def test_running_the_cell_again_replaces_the_live_dashboard(live_server):
    from ibstream.widgets import close_all, dashboard

    base = (await get_json(live_server, "/ws/stats"))[1]["connections"]
    first = dashboard("ES", live_server.url, window="1min", bar="1s")
    await connections_become(live_server, base + 1)
    other = dashboard("AAPL", live_server.url)  # another contract: stays live
    second = dashboard("ES", live_server.url, window="1min", bar="1s")  # the cell again
    try:
        assert first.closed and first.client.state == "closed" and not first.stream.active
        await first.ticker.wait_stopped()
        assert not first.ticker.running and not other.closed and not second.closed
        tasks = [t for t in asyncio.all_tasks() if t.get_name() == "ibstream-dashboard"]
        assert len(tasks) == 2
        await connections_become(live_server, base + 2)
        assert close_all() == 2
    finally:
        second.close()
        other.close()
    assert other.closed and second.closed and close_all() == 0
    await second.ticker.wait_stopped()
    await other.ticker.wait_stopped()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "ibstream-dashboard"]
    await connections_become(live_server, base)


def test_a_ticker_holds_its_owner_weakly_and_stops_when_it_is_gone():
    class Owner:
        def __init__(self) -> None:
            self.steps = threading.Event()

        def step(self) -> None:
            self.steps.set()

    owner = Owner()
    ticker, steps = Ticker(owner.step, interval=0.01), owner.steps
    ticker.start()
    assert steps.wait(WAIT)
    del owner  # the only strong reference
    ticker._thread.join(WAIT)
    assert not ticker.running and not ticker.failures


def test_saved_ticks_read_back_as_the_tick_schema(tmp_path):
    ticks = ticks_to_frame(market_rows(500))
    ticks.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(conform_ticks(pd.read_parquet(tmp_path / "t.parquet")), ticks)
